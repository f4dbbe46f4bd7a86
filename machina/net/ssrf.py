"""URL checking for AID.NET.HTTP_GET.v1: what may be fetched, and the one address to connect to.

``check_url`` parses the URL itself (no second parser decides anything later: the fetch connects to
``Target.pinned_ip`` and sends ``Target.host`` as Host and TLS server name), applies the host allowlist,
resolves the name **once** and refuses the URL when **any** resolved address is private or reserved
(``machina.net.addresses`` has the table).  Every doubt is a refusal: a name that does not resolve, an
answer that is not an address, a host that does not parse.

Rules, in order:

1. Only ``http`` and ``https``.  No control characters, spaces or backslashes anywhere in the URL (they are
   where URL parsers disagree).  No ``user:password@`` part at all, so ``http://public.example@127.0.0.1/``
   cannot be misread.
2. The host is lower-cased, IDNA-encoded when it is not ASCII, and loses one trailing dot.  Anything
   ``socket.inet_aton`` (libc) accepts is an IPv4 literal, normalised to a dotted quad: ``2130706433``,
   ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all become ``127.0.0.1``.  IPv6 literals must be bracketed;
   zone identifiers (``[fe80::1%25eth0]``) are refused.
3. The allowlist (``MACHINA_HTTP_ALLOWED_HOSTS``, passed in as ``allowed_hosts``) is checked before any DNS
   query, so a refused name is never looked up.  Entries are case-insensitive and lose a trailing dot;
   ``example.com`` matches exactly that name (or, for an address, that address in any literal form);
   ``*.example.com`` matches every name *below* example.com at any depth, **not example.com itself** (list
   both to allow both) and never an IP literal; a lone ``*`` matches every host.  An empty allowlist allows
   every host unless ``default_deny`` (``MACHINA_HTTP_DEFAULT_DENY=1``), which then refuses everything.
   The allowlist never overrides the address check: an allowed name that resolves to 10.0.0.1 is refused.
4. Every resolved address must pass ``refusal_reason``; the first one is pinned (an IPv4-mapped address
   is pinned as its IPv4 address).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from machina.exitcodes import ExitCode, MachinaError
from machina.net.addresses import IPAddress, connect_address, refusal_reason

#: ``resolver(host, port)`` returns every address the name stands for, as strings; it raises ``OSError``
#: (``socket.gaierror``) when the name cannot be resolved.
Resolver = Callable[[str, int], Iterable[str]]

SCHEMES: dict[str, int] = {"http": 80, "https": 443}
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*")
_PORT = re.compile(r"[0-9]{1,5}")


class SsrfRefused(MachinaError):
    """The URL must not be fetched; the message says why in one line."""

    exit_code = ExitCode.NOPERM


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``pinned_ip``) and what to call the host there (``host``)."""

    scheme: str
    #: Normalised host: a lower-case ASCII name, a dotted-quad IPv4 or a compressed IPv6 address (no brackets).
    host: str
    port: int
    #: Path and query as given (``/`` when empty); the fragment is dropped.
    path_query: str
    #: Every address the host resolved to, in the resolver's order (the literal itself for an IP host).
    addresses: tuple[str, ...]
    #: The one address the fetch connects to.
    pinned_ip: str

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: bracketed for IPv6, with the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path_query}"


def system_resolver(host: str, port: int) -> list[str]:
    """The libc resolver (``getaddrinfo``): every TCP address of ``host``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def check_url(
    url: str,
    *,
    allowed_hosts: tuple[str, ...],
    default_deny: bool,
    resolver: Resolver = system_resolver,
) -> Target:
    """Check ``url`` against the policy and the address table; raise ``SsrfRefused`` or return the target."""
    scheme, host, literal, port, path_query = _parse(url)
    _check_allowlist(host, literal, allowed_hosts, default_deny)
    addresses = [literal] if literal is not None else _resolve(host, port, resolver)
    for address in addresses:
        reason = refusal_reason(address)
        if reason is not None:
            raise SsrfRefused(f"refusing {host}: {reason}")
    return Target(
        scheme=scheme,
        host=host,
        port=port,
        path_query=path_query,
        addresses=tuple(str(a) for a in addresses),
        pinned_ip=str(connect_address(addresses[0])),
    )


def configured_target(url: str, resolver: Resolver = system_resolver) -> Target:
    """A URL built from operator configuration (MACHINA_SEARCH_URL): parsed and pinned like ``check_url``,
    without the allowlist and the address table, since the operator may name a service on loopback.

    Only for URLs whose host comes from configuration: a caller or a model chooses at most the query.
    """
    scheme, host, literal, port, path_query = _parse(url)
    addresses = [literal] if literal is not None else _resolve(host, port, resolver)
    return Target(
        scheme=scheme,
        host=host,
        port=port,
        path_query=path_query,
        addresses=tuple(str(a) for a in addresses),
        pinned_ip=str(connect_address(addresses[0])),
    )


def validate_allowed_hosts(allowed_hosts: Iterable[str]) -> tuple[str, ...]:
    """The normalised allowlist; ``MachinaError`` (exit 78) naming the first entry that is not valid."""
    return tuple(_normalise_pattern(entry) for entry in allowed_hosts)


def _host_allowed(host: str, literal: IPAddress | None, allowed_hosts: Iterable[str]) -> bool:
    """Does the normalised ``host`` match an allowlist entry (see the module docstring)?"""
    for pattern in validate_allowed_hosts(allowed_hosts):
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and literal is None and host.endswith(pattern[1:]):
            return True
    return False


# --- parsing ---------------------------------------------------------------------------------------------


def _parse(url: str) -> tuple[str, str, IPAddress | None, int, str]:
    if _UNSAFE_CHARS.search(url):
        raise SsrfRefused("refusing URL with a control character, space or backslash (percent-encode it)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced or invalid brackets
        raise SsrfRefused(f"refusing malformed URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        shown = parts.scheme or "none"
        raise SsrfRefused(f"refusing URL scheme {shown!r}: only http and https are allowed")
    if not parts.netloc:
        raise SsrfRefused("refusing URL without a host")
    if "@" in parts.netloc:
        raise SsrfRefused("refusing URL with credentials (user@host): they can disguise the real host")
    host, literal, port_text = _split_netloc(parts.netloc)
    port = _parse_port(port_text, SCHEMES[parts.scheme])
    path_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, literal, port, path_query


def _split_netloc(netloc: str) -> tuple[str, IPAddress | None, str]:
    """(normalised host, the address when the host is a literal, port text or '')."""
    if netloc.startswith("["):
        inside, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise SsrfRefused(f"refusing malformed bracketed host in {netloc!r}")
        if "%" in inside:
            raise SsrfRefused("refusing IPv6 zone identifier: only global addresses may be fetched")
        try:
            address = ipaddress.IPv6Address(inside)
        except ValueError:
            raise SsrfRefused(f"refusing bracketed host {inside!r}: not an IPv6 address") from None
        return address.compressed, address, rest[1:]
    host_text, colon, port_text = netloc.rpartition(":")
    if not colon:
        host_text, port_text = netloc, ""
    if ":" in host_text:
        raise SsrfRefused("refusing IPv6 address without brackets")
    host, literal = _normalise_host(host_text)
    return host, literal, port_text


def _parse_port(text: str, default: int) -> int:
    if not text:
        return default
    port = int(text) if _PORT.fullmatch(text) else 0
    if not 1 <= port <= 65535:
        raise SsrfRefused(f"refusing port {text!r}: expected 1-65535")
    return port


def _normalise_host(text: str) -> tuple[str, IPAddress | None]:
    """Lower-case, IDNA, one trailing dot dropped; IPv4 literals in any libc form become a dotted quad."""
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise SsrfRefused(f"refusing host {text!r}: not a valid internationalised name") from None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if not _HOST_NAME.fullmatch(text):
        raise SsrfRefused(f"refusing host {text!r}: not a valid host name")
    try:
        address = ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return text, None
    return str(address), address


def _normalise_pattern(entry: str) -> str:
    text = entry.strip()
    if text == "*":
        return text
    wildcard = text.startswith("*.")
    body = text[2:] if wildcard else text
    try:
        if "*" in body or (wildcard and ":" in body):
            raise ValueError(entry)
        if ":" in body:
            return ipaddress.IPv6Address(body.strip("[]")).compressed
        host, literal = _normalise_host(body)
        if wildcard and literal is not None:
            raise ValueError(entry)
    except (SsrfRefused, ValueError):
        raise MachinaError(
            f"MACHINA_HTTP_ALLOWED_HOSTS: {entry!r} is not valid; expected a host name, an address, "
            "'*.example.com' or '*'",
            ExitCode.CONFIG,
        ) from None
    return f"*.{host}" if wildcard else host


# --- policy and resolution -------------------------------------------------------------------------------


def _check_allowlist(host: str, literal: IPAddress | None, allowed_hosts: tuple[str, ...], default_deny: bool) -> None:
    if allowed_hosts:
        if not _host_allowed(host, literal, allowed_hosts):
            raise SsrfRefused(f"refusing {host}: not in MACHINA_HTTP_ALLOWED_HOSTS")
    elif default_deny:
        raise SsrfRefused(f"refusing {host}: MACHINA_HTTP_DEFAULT_DENY=1 and MACHINA_HTTP_ALLOWED_HOSTS is empty")


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """Resolve once; a failure or an empty or malformed answer is a refusal, never "unchecked"."""
    try:
        answers = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise SsrfRefused(f"refusing {host}: cannot resolve it ({exc})") from None
    if not answers:
        raise SsrfRefused(f"refusing {host}: it resolves to no address")
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            raise SsrfRefused(f"refusing {host}: the resolver answered {answer!r}, not an address") from None
        if address not in addresses:
            addresses.append(address)
    return addresses
