"""The operator's approvals: per server, the digest of the tool definitions it was pinned with.

Stored as ``<root>/state/mcp/pins.json`` (0600, written atomically by the toolhost only; sandboxed tools
and MCP servers see no part of the root's state).  A server is served only while its live definitions hash
to its pin: a server never pinned, or one whose definitions changed, has every tool disabled until
``machina mcp pin SERVER``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass

from machina.audit.canonical import loads_strict
from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    digest: str
    pinned_at: float
    tools: tuple[str, ...]


class PinStore:
    def __init__(self, path: str, *, fsync: bool, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.fsync = fsync
        self.clock = clock
        self._lock = threading.Lock()
        self._pins: dict[str, Pin] = {}

    def load(self) -> None:
        """Read the file; an unreadable or damaged one counts as no pins (everything needs re-approval)."""
        try:
            with open(self.path, "rb") as handle:
                doc = loads_strict(handle.read())
            pins = {
                name: Pin(str(entry["digest"]), float(entry["pinned_at"]), tuple(str(t) for t in entry["tools"]))
                for name, entry in doc["servers"].items()
            }
        except FileNotFoundError:
            pins = {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("MCP pins %s unreadable (%s): every server needs `machina mcp pin` again", self.path, exc)
            pins = {}
        with self._lock:
            self._pins = pins

    def get(self, server: str) -> Pin | None:
        with self._lock:
            return self._pins.get(server)

    def pin(self, server: str, digest: str, tools: tuple[str, ...]) -> Pin:
        pin = Pin(digest, self.clock.time(), tools)
        with self._lock:
            self._pins[server] = pin
            doc = {
                "servers": {
                    name: {"digest": p.digest, "pinned_at": p.pinned_at, "tools": list(p.tools)}
                    for name, p in sorted(self._pins.items())
                }
            }
            ensure_dir(os.path.dirname(self.path))
            write_atomic(self.path, json.dumps(doc, indent=1).encode() + b"\n", fsync=self.fsync)
        return pin
