"""Figures shared between processes: workers count, the enqueue daemon exports (/metrics, /stats)."""
