"""A stand-in daemon for testing the ``machina up`` supervisor itself (never the suite's behaviour).

It behaves like a Type=notify Machina service through the real ``machina.notify.Notifier``: READY=1 once
serving, WATCHDOG=1 while healthy, STOPPING=1 and exit 0 on SIGTERM.  Options make it misbehave on purpose.
"""

from __future__ import annotations

import argparse
import http.server
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from machina.notify import Notifier


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"ok": True}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--exit-after", type=float, help="exit 1 after this many seconds")
    p.add_argument("--exit-code", type=int, default=1)
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (needs SIGKILL)")
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--grandchild", help="start a grandchild in its own session; write its pid to this file")
    p.add_argument("--socket", help="listen on this Unix socket")
    p.add_argument("--http", help="serve GET /health on host:port")
    p.add_argument("--import", dest="imports", default="", help="comma-separated modules to import first")
    a = p.parse_args()
    for module in filter(None, a.imports.split(",")):
        importlib.import_module(module)  # e.g. C extensions under a unit's MemoryDenyWriteExecute=

    stop = threading.Event()
    signal.signal(signal.SIGTERM, signal.SIG_IGN if a.ignore_term else (lambda *_: stop.set()))
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if a.grandchild:
        # setsid: escapes our process group, as bubblewrap --new-session does with a tool
        child = subprocess.Popen(["sleep", "600"], start_new_session=True)
        with open(a.grandchild, "w") as f:
            f.write(str(child.pid))
    if a.socket:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(a.socket):
            os.unlink(a.socket)
        server.bind(a.socket)
        server.listen(16)
    if a.http:
        host, port = a.http.rsplit(":", 1)
        httpd = http.server.HTTPServer((host, int(port)), Health)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    notifier = Notifier()
    if not a.never_ready:
        notifier.ready(f"{a.name} serving")
    notifier.start_watchdog(lambda: True)
    print(f"standin {a.name} pid {os.getpid()} up", file=sys.stderr, flush=True)
    deadline = time.monotonic() + a.exit_after if a.exit_after else None
    while not stop.wait(0.05):
        if deadline is not None and time.monotonic() >= deadline:
            return a.exit_code
    notifier.stopping()
    return 0


if __name__ == "__main__":
    sys.exit(main())
