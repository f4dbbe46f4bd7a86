"""Helpers for testing Machina components against real processes (importable by every part's tests)."""
