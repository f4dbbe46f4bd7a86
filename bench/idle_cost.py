"""What an idle gap costs the next round trip: each hop of a job measured back to back and after a pause.

    python bench/idle_cost.py [--calls 200] [--gap-ms 20] [--spin]

Four round trips, each timed ``--calls`` times back to back ("hot") and again with ``--gap-ms`` of idling
before each call ("after a gap", the spacing ``latency_breakdown.py`` and ``bench_worker``'s latency rows
use between jobs); medians are printed:

1. a forked process echoing 200 bytes over a socketpair (``recv``/``sendall``, nothing else);
2. the same echo served by a Python thread reading lines (``makefile().readline()``), as the toolhost's
   connection threads do;
3. ``AID.NOOP.v1`` through the real machina-toolhost (inline: no executor);
4. a whole no-op ``Engine.run`` in this process against that toolhost.

With ``--spin`` the gap is spent spinning instead of sleeping, so this process's CPU never idles: if the
"after a gap" figures stay, the cost is the code and data of every side leaving the caches during the
gap, not a halted CPU waking up.  Runs on a tmpfs root (``$TMPDIR``); prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_worker as b

from machina import config
from machina.engine import Engine
from machina.engine.toolhost_link import connect_toolhost
from machina.root import Root

MESSAGE = b'{"op":"echo","pad":"' + b"x" * 178 + b'"}\n'  # 200 bytes, one line


def echo_server(threaded: bool) -> tuple[socket.socket, int]:
    """A forked echo peer: our end of the socketpair, and its pid."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the peer: echo until the pair closes, then leave without running our cleanup
        ours.close()
        if threaded:
            reader = theirs.makefile("rb")

            def serve() -> None:
                while line := reader.readline():
                    theirs.sendall(line)
                os._exit(0)

            threading.Thread(target=serve, daemon=True).start()
            threading.Event().wait()
        while data := theirs.recv(65536):
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    return ours, pid


def median_us(call: Callable[[], object], calls: int, gap_s: float, spin: bool) -> float:
    times = []
    for _ in range(calls):
        if gap_s:
            if spin:
                until = time.perf_counter() + gap_s
                while time.perf_counter() < until:
                    pass
            else:
                time.sleep(gap_s)
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def echo_rows(calls: int, gap_s: float, spin: bool) -> list[tuple[str, float, float]]:
    rows = []
    for label, threaded in (("socketpair echo, forked peer", False), ("the same, a Python thread's readline()", True)):
        sock, pid = echo_server(threaded)
        reader = sock.makefile("rb")

        def call(sock: socket.socket = sock, reader: object = reader) -> None:
            sock.sendall(MESSAGE)
            reader.readline()  # type: ignore[attr-defined]

        for _ in range(50):
            call()
        rows.append((label, median_us(call, calls, 0.0, spin), median_us(call, calls, gap_s, spin)))
        sock.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return rows


def toolhost_rows(calls: int, gap_s: float, spin: bool) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory(prefix="idle-cost-") as tmp:
        root = b.new_root(Path(tmp), "idle")
        env = b.env_for(root, True)
        cfg = config.load(environ=env)
        with b.toolhost(root, env):
            tools = connect_toolhost(cfg, Root(str(root)))
            engine = Engine.from_config(cfg, Root(str(root)), connect_toolhost(cfg, Root(str(root))))
            rows = []
            for label, call in (
                ("AID.NOOP.v1 through machina-toolhost", lambda: tools.call("AID.NOOP.v1", {}, run_id="idle")),
                ("a no-op Engine.run against the toolhost", lambda: engine.run(dict(b.NOOP))),
            ):
                for _ in range(50):
                    call()
                rows.append((label, median_us(call, calls, 0.0, spin), median_us(call, calls, gap_s, spin)))
            engine.close()
            return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per figure (default 200)")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="idle time before each call (default 20)")
    parser.add_argument("--spin", action="store_true", help="spend the gap spinning, not sleeping")
    args = parser.parse_args()
    gap_s = args.gap_ms / 1000
    how = "spinning" if args.spin else "sleeping"
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.calls} calls per figure, medians")
    print(f"{'round trip':44} {'hot':>10} {f'after {args.gap_ms:g} ms {how}':>26} {'ratio':>6}")
    for label, hot, cold in echo_rows(args.calls, gap_s, args.spin) + toolhost_rows(args.calls, gap_s, args.spin):
        print(f"{label:44} {hot:8.0f}us {cold:24.0f}us {cold / hot:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
