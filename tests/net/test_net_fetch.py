"""The pinned fetch against real servers on loopback.

Loopback is exactly what ``check_url`` refuses, so these tests hand ``fetch_pinned`` a ``Target`` built here
(``http_get`` = ``check_url`` + ``fetch_pinned``; the tests at the end prove that ``http_get`` refuses the
same servers).  There is no switch in the production code that turns the check off.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from netservers import RawServers, RunningServer, Tls, silent, trickling

from machina.exitcodes import ExitCode
from machina.net.fetch import FetchError, fetch_pinned, http_get
from machina.net.ssrf import SsrfRefused, Target

# Timeout tests: the fetch must give up near its deadline.  The bound is 10x the deadline so a loaded
# machine cannot fail it, yet a fetch that ignored the deadline would run into the servers' 20 s limit.
DEADLINE_MS = 500
GENEROUS_S = 5.0


def target_for(
    server: RunningServer | int, path: str = "/hello", host: str = "public.test", scheme: str = "http"
) -> Target:
    port = server if isinstance(server, int) else server.port
    return Target(scheme=scheme, host=host, port=port, path_query=path, addresses=("127.0.0.1",), pinned_ip="127.0.0.1")


def fetch(target: Target, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("timeout_ms", 5000)
    kwargs.setdefault("max_bytes", 1 << 20)
    return fetch_pinned(target, **kwargs)


# --- the response --------------------------------------------------------------------------------------


def test_fetch_returns_status_headers_body_url_and_ip(http_server: Callable[..., RunningServer]) -> None:
    server = http_server("plain")
    result = fetch(target_for(server))
    assert result["status"] == 200
    assert result["body"] == "hello from plain"
    assert result["truncated"] is False
    assert result["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert result["url"] == f"http://public.test:{server.port}/hello"
    assert result["ip"] == "127.0.0.1"


def test_host_header_carries_the_original_name_and_port(http_server: Callable[..., RunningServer]) -> None:
    server = http_server("plain")
    result = fetch(target_for(server, "/echo-host?x=1"))
    assert result["body"] == f"public.test:{server.port}"
    assert server.recorded.requests[0]["path"] == "/echo-host?x=1"
    assert server.recorded.requests[0]["headers"]["Accept-Encoding"] == "identity"


def test_an_ipv6_pinned_address_and_an_ipv6_host_header(http_server: Callable[..., RunningServer]) -> None:
    try:
        server = http_server("six", host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    target = Target(
        scheme="http",
        host="2606:4700::1111",
        port=server.port,
        path_query="/echo-host",
        addresses=("::1",),
        pinned_ip="::1",
    )
    result = fetch(target)
    assert result["body"] == f"[2606:4700::1111]:{server.port}"
    assert result["url"] == f"http://[2606:4700::1111]:{server.port}/echo-host"
    assert result["ip"] == "::1"


def test_a_non_2xx_status_is_a_result_not_an_error(http_server: Callable[..., RunningServer]) -> None:
    result = fetch(target_for(http_server("plain"), "/nowhere"))
    assert (result["status"], result["body"]) == (404, "no such route")


# --- pinning -------------------------------------------------------------------------------------------


def test_the_connection_goes_to_the_pinned_address_and_never_looks_the_name_up(
    server_pair: tuple[RunningServer, RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebinding resolver: any name lookup now answers the evil server's address.  The fetch must not
    ask it, and must reach the pinned (good) server."""
    good, evil = server_pair
    real_getaddrinfo = socket.getaddrinfo
    names_looked_up: list[str] = []

    def rebinding_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except OSError:
            names_looked_up.append(str(host))
            host = "127.0.0.2"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    result = fetch(target_for(good, host="rebind.test"))
    assert result["body"] == "hello from good"
    assert names_looked_up == []
    assert len(good.recorded.requests) == 1
    assert evil.recorded.requests == []


def test_http_get_resolves_exactly_once(http_server: Callable[..., RunningServer]) -> None:
    """The check and the fetch share one resolution: a resolver that would answer differently the second
    time is asked once, and a loopback first answer is refused before any connection."""
    server = http_server("plain")
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["93.184.216.34"]

    with pytest.raises(SsrfRefused):
        http_get(
            f"http://rebind.test:{server.port}/hello",
            timeout_ms=2000,
            max_bytes=100,
            allowed_hosts=(),
            default_deny=False,
            resolver=resolver,
        )
    assert calls == ["rebind.test"]
    assert server.recorded.requests == []


# --- redirects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_a_private_address_is_returned_not_followed(
    server_pair: tuple[RunningServer, RunningServer], code: int
) -> None:
    good, evil = server_pair
    to = f"http://127.0.0.2:{evil.port}/hello"
    result = fetch(target_for(good, f"/redirect?code={code}&to={to}"))
    assert result["status"] == code
    assert result["headers"]["Location"] == to
    assert evil.recorded.requests == []


# --- size limits and decoding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_bytes", "expected_len", "truncated"),
    [(10_000, 100, 100, True), (10_000, 10_000, 10_000, False), (10_000, 9_999, 9_999, True), (5, 0, 0, True)],
)
def test_body_is_cut_at_max_bytes(
    http_server: Callable[..., RunningServer], size: int, max_bytes: int, expected_len: int, truncated: bool
) -> None:
    result = fetch(target_for(http_server("big"), f"/big?n={size}"), max_bytes=max_bytes)
    assert len(result["body"]) == expected_len
    assert result["truncated"] is truncated


def test_an_endless_body_is_cut_without_reading_it_all(http_server: Callable[..., RunningServer]) -> None:
    result = fetch(target_for(http_server("stream"), "/stream"), max_bytes=10_000, timeout_ms=10_000)
    assert result["body"] == "z" * 10_000
    assert result["truncated"] is True


def test_a_compressed_body_is_cut_after_decompression(http_server: Callable[..., RunningServer]) -> None:
    result = fetch(target_for(http_server("gzip"), "/gzip?n=20000000"), max_bytes=1000)
    assert result["body"] == "0" * 1000
    assert result["truncated"] is True


@pytest.mark.parametrize(
    ("path", "body"),
    [("/latin1", "café"), ("/bad-utf8", "ok\ufffd\ufffd!"), ("/odd-charset", "naïve")],
)
def test_body_is_decoded_with_the_declared_charset_or_utf8_with_replacements(
    http_server: Callable[..., RunningServer], path: str, body: str
) -> None:
    assert fetch(target_for(http_server("text"), path))["body"] == body


# --- the whole-request timeout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "behaviour", "scheme"),
    [
        ("no answer", silent, "http"),
        ("headers one byte at a time", trickling(b"HTTP/1.1 200 OK\r\nX-Slow: "), "http"),
        ("body one byte at a time", trickling(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"), "http"),
        ("no TLS handshake", silent, "https"),
    ],
)
def test_the_timeout_bounds_the_whole_request(raw_servers: RawServers, what: str, behaviour: Any, scheme: str) -> None:
    port = raw_servers.start(behaviour)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch(target_for(port, "/", scheme=scheme), timeout_ms=DEADLINE_MS)
    elapsed = time.monotonic() - started
    assert caught.value.timed_out, what
    assert caught.value.exit_code == ExitCode.TEMPFAIL
    assert "timed out after 500 ms" in str(caught.value)
    assert elapsed < GENEROUS_S, f"{what}: gave up after {elapsed:.1f} s"


def test_slow_name_resolution_counts_against_the_timeout() -> None:
    def slow_resolver(host: str, port: int) -> list[str]:
        time.sleep(2)
        return ["93.184.216.34"]

    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        http_get(
            "http://slow.test/",
            timeout_ms=200,
            max_bytes=10,
            allowed_hosts=(),
            default_deny=False,
            resolver=slow_resolver,
        )
    assert caught.value.timed_out
    assert "resolving" in str(caught.value)
    assert time.monotonic() - started < 1.9  # it did not wait for the resolver


def test_a_refused_connection_is_a_fetch_error_not_a_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = int(probe.getsockname()[1])
    with pytest.raises(FetchError) as caught:
        fetch(target_for(port))
    assert not caught.value.timed_out
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert "refused" in str(caught.value).lower()


# --- TLS: SNI and certificate checks use the original name ----------------------------------------------


def test_tls_sends_the_host_name_as_sni_and_verifies_the_certificate_against_it(
    http_server: Callable[..., RunningServer], tls: Tls
) -> None:
    server = http_server("tls", tls=tls.server_context("public.test"))
    result = fetch(target_for(server, "/echo-host", scheme="https"), ca_bundle=tls.ca_bundle)
    assert result["status"] == 200
    assert result["body"] == f"public.test:{server.port}"
    assert server.recorded.server_names == ["public.test"]
    assert result["url"] == f"https://public.test:{server.port}/echo-host"


@pytest.mark.parametrize(
    "names_on_certificate", [("other.test",), ("127.0.0.1",)], ids=["another-name", "only-the-pinned-address"]
)
def test_tls_refuses_a_certificate_that_does_not_name_the_host(
    http_server: Callable[..., RunningServer], tls: Tls, names_on_certificate: tuple[str, ...]
) -> None:
    server = http_server("tls", tls=tls.server_context(*names_on_certificate))
    with pytest.raises(FetchError) as caught:
        fetch(target_for(server, scheme="https"), ca_bundle=tls.ca_bundle)
    assert "certificate" in str(caught.value).lower() or "hostname" in str(caught.value).lower()
    assert server.recorded.requests == []


def test_tls_verifies_against_the_system_cas_by_default(http_server: Callable[..., RunningServer], tls: Tls) -> None:
    server = http_server("tls", tls=tls.server_context("public.test"))
    with pytest.raises(FetchError, match=r"(?i)certificate"):
        fetch(target_for(server, scheme="https"))
    assert server.recorded.requests == []


# --- http_get keeps the check on the path ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "0x7f.1", "localhost", "[::ffff:127.0.0.1]"])
def test_http_get_refuses_a_real_loopback_server_before_connecting(
    http_server: Callable[..., RunningServer], host: str
) -> None:
    server = http_server("target")
    with pytest.raises(SsrfRefused) as caught:
        http_get(
            f"http://{host}:{server.port}/hello", timeout_ms=2000, max_bytes=100, allowed_hosts=(), default_deny=False
        )
    assert caught.value.exit_code == ExitCode.NOPERM
    assert server.recorded.requests == []


def test_http_get_refuses_an_allowlisted_name_that_resolves_to_loopback(
    http_server: Callable[..., RunningServer],
) -> None:
    server = http_server("target")
    with pytest.raises(SsrfRefused, match="loopback"):
        http_get(
            f"http://api.example.com:{server.port}/hello",
            timeout_ms=2000,
            max_bytes=100,
            allowed_hosts=("*.example.com",),
            default_deny=True,
            resolver=lambda host, port: ["127.0.0.1"],
        )
    assert server.recorded.requests == []
