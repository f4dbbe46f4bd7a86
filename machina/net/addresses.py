"""Which IP addresses AID.NET.HTTP_GET.v1 may connect to.

``refusal_reason(address)`` answers ``None`` for a public unicast address and a one-line reason for anything
else.  The first matching row of the tables below decides; the standard ``ipaddress`` flags are a last net
for whatever they know that the tables do not (they change between Python releases, so they are never the
only word, and they miss ranges such as IPv4 multicast, which ``is_global`` calls global).

IPv4 (refused)::

    0.0.0.0/8           "this network" (0.0.0.0 reaches the local host)     RFC 1122
    10.0.0.0/8          private                                             RFC 1918
    100.64.0.0/10       shared address space (carrier-grade NAT)            RFC 6598
    127.0.0.0/8         loopback                                            RFC 1122
    169.254.0.0/16      link-local (cloud metadata 169.254.169.254 lives here)  RFC 3927
    172.16.0.0/12       private                                             RFC 1918
    192.0.0.0/24        IETF protocol assignments (Oracle metadata 192.0.0.192)  RFC 6890
    192.0.2.0/24        documentation TEST-NET-1                            RFC 5737
    192.88.99.0/24      6to4 relay anycast (deprecated)                     RFC 7526
    192.168.0.0/16      private                                             RFC 1918
    198.18.0.0/15       benchmarking                                        RFC 2544
    198.51.100.0/24     documentation TEST-NET-2                            RFC 5737
    203.0.113.0/24      documentation TEST-NET-3                            RFC 5737
    224.0.0.0/4         multicast                                           RFC 5771
    240.0.0.0/4         reserved, and 255.255.255.255 limited broadcast     RFC 1112, RFC 919

IPv6 (refused unless it says "judged")::

    ::/128              unspecified
    ::1/128             loopback
    ::ffff:0:0/96       IPv4-mapped: judged by the embedded IPv4 address (it *is* that address on a
                        dual-stack socket; the pinned address is the IPv4 one)
    ::/96               IPv4-compatible (deprecated, RFC 4291): refused outright
    ::ffff:0:0:0/96     IPv4-translated (SIIT, RFC 2765): refused outright
    64:ff9b::/96        NAT64 well-known prefix (RFC 6052): judged by the embedded IPv4 address, so that
                        DNS64 networks keep working while 64:ff9b::127.0.0.1 stays refused
    64:ff9b:1::/48      local-use NAT64 (RFC 8215): refused outright (the embedding is site-defined)
    100::/64            discard-only (RFC 6666)
    2001::/32           Teredo: refused outright (it tunnels to an IPv4 server and client)
    2001::/23           IETF protocol assignments (benchmarking, ORCHID ...)
    2001:db8::/32       documentation (RFC 3849)
    2002::/16           6to4: refused outright (it embeds an IPv4 address and routes through relays)
    3fff::/20           documentation (RFC 9637)
    fc00::/7            unique local (fd00:ec2::254 is the AWS metadata service)
    fe80::/10           link-local
    fec0::/10           site-local (deprecated)
    ff00::/8            multicast
    anything outside 2000::/3, the only global unicast space, is refused as well.

Known cloud metadata addresses get their own reason (they are inside the ranges above anyway):
169.254.169.254, 169.254.170.2, 100.100.100.200, 192.0.0.192, fd00:ec2::254.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

METADATA_ADDRESSES: dict[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata service (AWS, GCP, Azure, OpenStack)",
    ipaddress.ip_address("169.254.170.2"): "cloud metadata service (AWS ECS task credentials)",
    ipaddress.ip_address("100.100.100.200"): "cloud metadata service (Alibaba Cloud)",
    ipaddress.ip_address("192.0.0.192"): "cloud metadata service (Oracle Cloud)",
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata service (AWS IPv6)",
}

IPV4_REFUSED: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", '"this network" (RFC 1122)'),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
        ("192.0.2.0/24", "documentation (RFC 5737)"),
        ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("198.51.100.0/24", "documentation (RFC 5737)"),
        ("203.0.113.0/24", "documentation (RFC 5737)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved or broadcast"),
    )
)

# How an IPv6 row is treated: refused, or judged by the IPv4 address it embeds.
REFUSE = "refuse"
JUDGE_EMBEDDED = "judge embedded IPv4"

IPV6_RULES: tuple[tuple[IPv6Network, str, str], ...] = tuple(
    (IPv6Network(net), verdict, why)
    for net, verdict, why in (
        ("::/128", REFUSE, "unspecified"),
        ("::1/128", REFUSE, "loopback"),
        ("::ffff:0:0/96", JUDGE_EMBEDDED, "IPv4-mapped"),
        ("::/96", REFUSE, "IPv4-compatible (deprecated embedding of IPv4)"),
        ("::ffff:0:0:0/96", REFUSE, "IPv4-translated (SIIT embedding of IPv4)"),
        ("64:ff9b::/96", JUDGE_EMBEDDED, "NAT64"),
        ("64:ff9b:1::/48", REFUSE, "local-use NAT64 (RFC 8215)"),
        ("100::/64", REFUSE, "discard-only (RFC 6666)"),
        ("2001::/32", REFUSE, "Teredo (tunnels to an embedded IPv4 address)"),
        ("2001::/23", REFUSE, "IETF protocol assignments"),
        ("2001:db8::/32", REFUSE, "documentation (RFC 3849)"),
        ("2002::/16", REFUSE, "6to4 (embeds an IPv4 address)"),
        ("3fff::/20", REFUSE, "documentation (RFC 9637)"),
        ("fc00::/7", REFUSE, "unique local (ULA)"),
        ("fe80::/10", REFUSE, "link-local"),
        ("fec0::/10", REFUSE, "site-local (deprecated)"),
        ("ff00::/8", REFUSE, "multicast"),
    )
)

IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")


def refusal_reason(address: IPAddress) -> str | None:
    """``None`` when ``address`` is a public unicast address, else why it must not be reached."""
    if address in METADATA_ADDRESSES:
        return f"{address} is a {METADATA_ADDRESSES[address]}"
    if isinstance(address, IPv4Address):
        return _ipv4_reason(address)
    return _ipv6_reason(address)


def connect_address(address: IPAddress) -> IPAddress:
    """The address to dial: an IPv4-mapped address is dialled as the IPv4 address it stands for."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IPv6Address) -> IPv4Address:
    """The IPv4 address in the low 32 bits (IPv4-mapped and NAT64 /96 forms)."""
    return IPv4Address(int(address) & 0xFFFFFFFF)


def _ipv4_reason(address: IPv4Address) -> str | None:
    for network, why in IPV4_REFUSED:
        if address in network:
            return f"{address} is in {network}: {why}"
    if not address.is_global or address.is_multicast or address.is_reserved:
        return f"{address} is not a globally routable address"
    return None


def _ipv6_reason(address: IPv6Address) -> str | None:
    plain = address if address.scope_id is None else IPv6Address(address.compressed.split("%", 1)[0])
    for network, verdict, why in IPV6_RULES:
        if plain not in network:
            continue
        if verdict == JUDGE_EMBEDDED:
            inner = embedded_ipv4(plain)
            inner_reason = refusal_reason(inner)
            return None if inner_reason is None else f"{address} is {why} {inner}, and {inner_reason}"
        return f"{address} is in {network}: {why}"
    if plain not in IPV6_GLOBAL_UNICAST:
        return f"{address} is outside the global unicast space {IPV6_GLOBAL_UNICAST}"
    if not plain.is_global or plain.is_multicast or plain.is_reserved:
        return f"{address} is not a globally routable address"
    return None
