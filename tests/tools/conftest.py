"""Fixtures for the tool tests: a real machina-toolhost (the toolhost tests' fixture) on a fresh root."""

from __future__ import annotations

from ..toolhost.conftest import needs_bwrap, tcp_server, toolhost

__all__ = ["needs_bwrap", "tcp_server", "toolhost"]
