"""Stopping under load: SIGTERM finishes what is in flight and exits 0; neither SIGTERM nor kill -9 loses a
job that was answered "queued"."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import pytest
import requests
from enqueued_kit import TOKEN, bearer, inbox

CLIENTS = 6


def load(
    daemon: Any, acked: list[str], bodies: dict[str, dict[str, Any]], torn: list[str], stop: threading.Event, n: int
) -> None:
    session = requests.Session()
    i = 0
    while not stop.is_set():
        job = {"goal_id": "goal.LOAD.v1", "inputs": {"client": n, "i": i}}
        i += 1
        try:
            answer = session.post(daemon.url("/enqueue"), json=job, headers=bearer(), timeout=30)
        except requests.ConnectionError:
            time.sleep(0.01)
            continue  # refused or reset before an answer: not acknowledged, so nothing is promised
        except requests.RequestException as exc:
            torn.append(repr(exc))  # an answer cut in the middle (the process died while writing it)
            continue
        if answer.status_code == 200:
            name = answer.json()["queued"]
            acked.append(name)
            bodies[name] = job


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_acknowledged_job_is_lost_when_stopped_under_load(start_daemon: Any, sig: int) -> None:
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, MACHINA_WAL_FSYNC="1")
    acked: list[str] = []
    bodies: dict[str, dict[str, Any]] = {}
    torn: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(daemon, acked, bodies, torn, stop, n)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 50, daemon.log()
        rc = daemon.stop(sig)
        time.sleep(0.3)  # clients see refused connections now
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL), daemon.log()
    queued = set(inbox(daemon.root))
    missing = [name for name in acked if name not in queued]
    assert missing == []
    for name in acked:
        stored = json.loads((daemon.root / "queue" / "inbox" / name).read_bytes())
        assert stored == bodies[name]
    if sig == signal.SIGTERM:
        assert torn == []  # a graceful stop never cuts an answer short
        assert os.listdir(daemon.root / "queue" / "tmp") == []
        log = daemon.log()
        assert "stopping: no new connections; finishing requests in flight" in log
        assert "machina-enqueued stopping" in log
        assert (daemon.root / "state" / "enqueued-nonces.json").exists()


def test_sigterm_lets_a_slow_upload_in_flight_finish(start_daemon: Any) -> None:
    """A request whose body is still arriving when SIGTERM comes is read, queued and answered."""
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN)
    body = json.dumps({"goal_id": "goal.SLOW.v1", "pad": "x" * 1000}).encode()
    with daemon.connect() as sock:
        head = (
            b"POST /enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(head + body[:500])
        time.sleep(0.3)
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[500:])
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"connection: close" in answer.lower()
    name = json.loads(answer.split(b"\r\n\r\n", 1)[1])["queued"]
    assert daemon.proc.wait(timeout=20) == 0
    assert inbox(daemon.root) == [name]
