"""A real machina-enqueued on loopback, started from bin/ as an operator would, and clients for it."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from machina.enqueued.auth import sign
from tests.conftest import BIN, CHECKOUT, bin_env

TOKEN = "test-token-" + "a1b2c3d4e5f6a7b8"
SECRET = "test-hmac-secret-" + "0f1e2d3c4b5a6978"
READY_RE = re.compile(r"machina-enqueued ready: (\S+)")


class PortTaken(Exception):
    pass


def free_port() -> int:
    """A port nothing listens on right now (the daemon's bind may still lose a race: Daemon.start retries)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Daemon:
    """One machina-enqueued process; ``start`` returns once it logged READY (it is accepting then)."""

    def __init__(self, root: Path, logs: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.logs = logs
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.log_path = logs / "none.log"
        self.starts = 0

    def start(self, timeout: float = 30, wrapper: tuple[str, ...] = (), **popen: Any) -> Daemon:
        """Start and wait for READY on a free port; ``wrapper`` runs first, ``popen`` goes to Popen."""
        for _ in range(5):
            try:
                return self._start(timeout, wrapper, popen)
            except PortTaken:
                continue  # someone took the free port between our probe and the daemon's bind: pick another
        raise AssertionError("no free port found in 5 tries")

    def _start(self, timeout: float, wrapper: tuple[str, ...], popen: dict[str, Any]) -> Daemon:
        self.starts += 1
        self.log_path = self.logs / f"enqueued-{self.starts}-{secrets.token_hex(2)}.log"
        env = bin_env(MACHINA_ROOT=str(self.root), **self.env)
        pinned = any(a in ("--socket", "--port") for a in self.args)
        args = self.args if pinned else ("--port", str(free_port()), *self.args)
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*wrapper, str(BIN / "machina-enqueued"), *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                cwd=CHECKOUT,
                **popen,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY_RE.search(self.log())
            if match:
                self.address = match.group(1)
                return self
            if self.proc.poll() is not None:
                if self.proc.returncode == 69 and "Address already in use" in self.log() and not pinned:
                    raise PortTaken
                raise AssertionError(f"machina-enqueued exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"machina-enqueued not ready in {timeout}s:\n{self.log()}")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        return self.address + path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(
    method: str,
    target: str,
    body: bytes = b"",
    *,
    secret: str = SECRET,
    ts: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The HMAC headers of DESIGN.md section 4 for one request."""
    ts_text = str(int(time.time()) if ts is None else ts)
    nonce = nonce or secrets.token_hex(12)
    return {
        "X-Machina-Ts": ts_text,
        "X-Machina-Nonce": nonce,
        "X-Machina-Signature": sign(secret, ts_text, nonce, method, target, body),
    }


def inbox(root: Path) -> list[str]:
    return sorted(os.listdir(root / "queue" / "inbox"))


def http_exchange(sock: socket.socket, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, then read until the server closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    if data:
        sock.sendall(data)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    assert match, raw[:200]
    return int(match.group(1))
