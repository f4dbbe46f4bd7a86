"""Properties of the address classifier and of IPv4 literal parsing (hypothesis)."""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

import machina.net.addresses as addresses_module
from machina.net.addresses import IPV4_REFUSED, IPV6_RULES, JUDGE_EMBEDDED, refusal_reason
from machina.net.ssrf import SsrfRefused, check_url

# The ranges the issue names, written out here independently of the module's table.
PRIVATE_IPV4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
PRIVATE_IPV6 = [
    "::/128",
    "::1/128",
    "::/96",  # IPv4-compatible
    "64:ff9b:1::/48",  # local NAT64
    "2001::/32",  # Teredo
    "2001:db8::/32",
    "2002::/16",  # 6to4
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
]


def addresses_in(network: str) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    net = ipaddress.ip_network(network)
    first, last = int(net.network_address), int(net.broadcast_address)
    return st.integers(first, last).map(type(net.network_address))  # ip_address(1) would be IPv4


any_ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
private_ipv4 = st.sampled_from(PRIVATE_IPV4).flatmap(addresses_in)
private_ipv6 = st.sampled_from(PRIVATE_IPV6).flatmap(addresses_in)


@given(private_ipv4)
def test_every_address_in_a_private_ipv4_network_is_refused(address: IPv4Address) -> None:
    assert refusal_reason(address) is not None


@given(private_ipv6)
def test_every_address_in_a_private_ipv6_network_is_refused(address: IPv6Address) -> None:
    assert refusal_reason(address) is not None


@given(private_ipv4)
def test_every_ipv4_mapped_form_of_a_private_ipv4_is_refused(address: IPv4Address) -> None:
    assert refusal_reason(IPv6Address(f"::ffff:{address}")) is not None


@given(any_ipv4)
def test_mapped_and_nat64_forms_are_judged_exactly_like_the_ipv4_address(address: IPv4Address) -> None:
    refused = refusal_reason(address) is not None
    assert (refusal_reason(IPv6Address(f"::ffff:{address}")) is not None) is refused
    assert (refusal_reason(IPv6Address(f"64:ff9b::{address}")) is not None) is refused


@given(any_ipv4, st.integers(0, 2**80 - 1))
def test_compatible_6to4_and_teredo_forms_are_refused_whatever_they_embed(address: IPv4Address, low: int) -> None:
    v4 = int(address)
    assert refusal_reason(IPv6Address(v4)) is not None  # ::a.b.c.d
    assert refusal_reason(IPv6Address((0x2002 << 112) | (v4 << 80) | low)) is not None  # 2002:aabb:ccdd::/48
    assert refusal_reason(IPv6Address((0x20010000 << 96) | (v4 << 64) | (low & (2**64 - 1)))) is not None  # Teredo


@given(any_ipv4)
def test_an_allowed_ipv4_is_global_unicast_by_ipaddress_too(address: IPv4Address) -> None:
    if refusal_reason(address) is None:
        assert address.is_global
        assert not (address.is_multicast or address.is_private or address.is_reserved)
        assert not any(address in IPv4Network(net) for net in PRIVATE_IPV4)


@given(st.integers(0, 2**128 - 1).map(IPv6Address))
def test_an_allowed_ipv6_outside_the_judged_embeddings_is_global_unicast(address: IPv6Address) -> None:
    judged = any(address in net for net, verdict, _ in IPV6_RULES if verdict == JUDGE_EMBEDDED)
    if refusal_reason(address) is None and not judged:
        assert address in IPv6Network("2000::/3")
        assert address.is_global
        assert not any(address in IPv6Network(net) for net in PRIVATE_IPV6)


@given(st.sampled_from([net for net, _ in IPV4_REFUSED]).flatmap(lambda net: addresses_in(str(net))))
def test_every_row_of_the_ipv4_table_refuses_its_whole_range(address: IPv4Address) -> None:
    assert refusal_reason(address) is not None


def test_the_docstring_table_lists_every_range() -> None:
    doc = addresses_module.__doc__ or ""
    for net, *_ in (*IPV4_REFUSED, *IPV6_RULES):
        assert str(net) in doc, f"{net} is in the table but not in the docstring"


def test_a_scoped_link_local_address_is_refused() -> None:
    assert refusal_reason(IPv6Address("fe80::1%eth0")) is not None


# --- IPv4 literals in every form libc accepts -----------------------------------------------------------


def literal_forms(address: IPv4Address) -> st.SearchStrategy[str]:
    """Decimal, hex and octal integers; the a.b, a.b.c short forms; each part in a random base."""
    value = int(address)
    a, b, c, d = address.packed

    def part(number: int) -> st.SearchStrategy[str]:
        return st.sampled_from([str(number), hex(number), f"0x{number:X}", "0" + oct(number)[2:]])

    return st.one_of(
        part(value),
        st.tuples(part(a), part(value & 0xFFFFFF)).map(".".join),
        st.tuples(part(a), part(b), part(value & 0xFFFF)).map(".".join),
        st.tuples(part(a), part(b), part(c), part(d)).map(".".join),
    )


@given(any_ipv4.flatmap(lambda address: st.tuples(st.just(address), literal_forms(address))))
def test_every_literal_form_is_normalised_like_libc_and_then_checked(case: tuple[IPv4Address, str]) -> None:
    address, form = case
    assert socket.inet_aton(form) == address.packed  # the form really is one libc accepts
    try:
        target = check_url(f"http://{form}/", allowed_hosts=(), default_deny=False, resolver=_no_dns)
    except SsrfRefused:
        assert refusal_reason(address) is not None
    else:
        assert refusal_reason(address) is None
        assert target.host == target.pinned_ip == str(address)


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
    st.sampled_from(PRIVATE_IPV4 + PRIVATE_IPV6).flatmap(addresses_in),
)
def test_any_name_that_resolves_to_a_private_address_is_refused(name: str, address: IPv4Address | IPv6Address) -> None:
    with pytest.raises(SsrfRefused):
        check_url(
            f"https://{name}/",
            allowed_hosts=(),
            default_deny=False,
            resolver=lambda host, port: ["93.184.216.34", str(address)],
        )


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"a literal was sent to the resolver: {host}")
