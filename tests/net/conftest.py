"""Fixtures for the machina.net tests: real servers on loopback (see netservers.py), a throwaway CA."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from netservers import RawServers, RunningServer, Server, Tls


@pytest.fixture
def http_server() -> Iterator[Callable[..., RunningServer]]:
    """``start(name, host="127.0.0.1", port=0, tls=None)`` starts a real HTTP(S) server thread."""
    started: list[Server] = []

    def start(name: str, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> RunningServer:
        server = Server((host, port), name, tls)
        if tls is not None:
            tls.sni_callback = lambda _sock, server_name, _ctx: server.recorded.server_names.append(server_name)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return RunningServer(server, host)

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server_pair(http_server: Callable[..., RunningServer]) -> tuple[RunningServer, RunningServer]:
    """A "good" server on 127.0.0.1 and an "evil" one on 127.0.0.2 at the same port, so that any connection
    made by name (DNS) instead of by the pinned address would land on the evil one."""
    for _ in range(20):
        good = http_server("good")
        try:
            evil = http_server("evil", host="127.0.0.2", port=good.port)
        except OSError:
            continue
        return good, evil
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
def raw_servers() -> Iterator[RawServers]:
    servers = RawServers()
    yield servers
    servers.close()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))

    def server_context(*names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        return context

    return Tls(ca_bundle=str(bundle), server_context=server_context)
