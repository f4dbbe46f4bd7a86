"""Machina: a hardened, systemd-managed agent and job runtime for Linux."""

__version__ = "0.1.0"
