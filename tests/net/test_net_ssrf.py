"""check_url: the SSRF corpus (every URL refused), the addresses just outside each range (allowed), URL
normalisation, and how resolution is done (once, every address checked, failure = refusal)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

import pytest

from machina.exitcodes import ExitCode
from machina.net.ssrf import SsrfRefused, Target, check_url

# Names for the injected resolver.  "public.example" resolves to a public address; the others are what an
# attacker's DNS would answer.
ZONE: dict[str, list[str]] = {
    "public.example": ["93.184.216.34"],
    "loopback.test": ["127.0.0.1"],
    "loopback6.test": ["::1"],
    "metadata.test": ["169.254.169.254"],
    "metadata6.test": ["fd00:ec2::254"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "private.test": ["10.1.2.3"],
    "linklocal6.test": ["fe80::1%eth0"],
    "mixed.test": ["93.184.216.34", "192.168.1.1"],
    "mixed-late.test": ["93.184.216.34", "2606:4700::1", "::1"],
    "empty.test": [],
    "garbage.test": ["not-an-address"],
    "xn--bcher-kva.example": ["93.184.216.34"],
}


def zone_resolver(host: str, port: int) -> Iterable[str]:
    if host not in ZONE:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ZONE[host]


def check(url: str, resolver=zone_resolver) -> Target:
    return check_url(url, allowed_hosts=(), default_deny=False, resolver=resolver)


SSRF_CORPUS = [
    # IPv4 loopback in every libc literal form
    "http://127.0.0.1/",
    "http://127.255.255.255/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0x7F.0x0.0x0.0x1/",
    "http://0177.0.0.1/",
    "http://0177.1/",
    "http://017700000001/",
    "http://127.0.0.1./",
    "http://127.0.0.1:8080/admin",
    "HTTP://127.0.0.1/",
    "http://\uff11\uff12\uff17.0.0.1/",  # fullwidth digits: IDNA maps them to ASCII
    "http://127\u30020\u30020\u30021/",  # ideographic full stops are label separators
    # "this network"
    "http://0.0.0.0/",
    "http://0/",
    "http://0.0.0.0:8000/",
    "http://0.255.255.255/",
    # RFC 1918, RFC 6598 and their edges
    "http://10.0.0.0/",
    "http://10.255.255.255/",
    "http://012.1/",  # octal 10 → 10.0.0.1
    "http://172.16.0.0/",
    "http://172.31.255.255/",
    "http://192.168.0.1/",
    "http://192.168.255.255/",
    "http://3232235521/",  # 192.168.0.1
    "http://100.64.0.0/",
    "http://100.127.255.255/",
    # link-local and cloud metadata
    "http://169.254.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",  # 169.254.169.254
    "http://169.254.170.2/v2/credentials",
    "http://100.100.100.200/latest/meta-data/",
    "http://192.0.0.192/",
    # documentation, benchmarking, protocol assignments, 6to4 relay
    "http://192.0.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.255/",
    "http://198.18.0.0/",
    "http://198.19.255.255/",
    "http://192.88.99.1/",
    # multicast, reserved, broadcast
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    # IPv6 loopback, unspecified, scopes
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "https://[::1]:443/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fec0::1]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[3fff::1]/",
    "http://[100::1]/",
    "http://[4000::1]/",  # outside 2000::/3, the global unicast space
    # every IPv6 embedding of IPv4
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::8.8.8.8]/",  # IPv4-compatible, even of a public address
    "http://[::ffff:0:7f00:1]/",  # IPv4-translated
    "http://[64:ff9b::127.0.0.1]/",  # NAT64 of loopback
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[64:ff9b:1::1]/",  # local-use NAT64
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2002:808:808::]/",  # 6to4, even of a public address
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    # malformed or ambiguous hosts
    "http://[::1/",
    "http://[127.0.0.1]/",
    "http://::1/",
    "http://[::1]x/",
    "http:///etc/passwd",
    "http://:80/",
    "http://127.0.0.1%2f/",
    "http://127.0.0.1:0/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:8o/",
    # userinfo confusion
    "http://public.example@127.0.0.1/",
    "http://public.example:80@127.0.0.1:80/",
    "http://127.0.0.1@public.example/",
    "http://user:pass@public.example/",
    "http://public.example\\@127.0.0.1/",
    # control characters and spaces (where parsers disagree)
    "http://127.0.0.1 /",
    "http://public.example/\r\nHost: 127.0.0.1",
    "http://public.example\t.127.0.0.1/",
    # schemes other than http(s)
    "ftp://public.example/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "dict://127.0.0.1:11211/stats",
    "ldap://public.example/",
    "javascript:alert(1)",
    "//public.example/",
    "public.example/",
    # names whose DNS answers are private, mixed, empty, malformed or missing
    "http://loopback.test/",
    "http://LOOPBACK.TEST./",
    "http://loopback6.test/",
    "http://metadata.test/",
    "http://metadata6.test/",
    "http://mapped.test/",
    "http://private.test/",
    "http://linklocal6.test/",
    "http://mixed.test/",
    "http://mixed-late.test/",
    "http://empty.test/",
    "http://garbage.test/",
    "http://does-not-exist.test/",
]


def test_the_corpus_is_large() -> None:
    assert len(SSRF_CORPUS) >= 60
    assert len(set(SSRF_CORPUS)) == len(SSRF_CORPUS)


@pytest.mark.parametrize("url", SSRF_CORPUS)
def test_corpus_url_is_refused(url: str) -> None:
    with pytest.raises(SsrfRefused) as caught:
        check(url)
    assert caught.value.exit_code == ExitCode.NOPERM
    assert str(caught.value).startswith("refusing")


def test_a_refusal_names_the_address_and_the_range() -> None:
    with pytest.raises(SsrfRefused, match=r"refusing metadata\.test: 169\.254\.169\.254 is a cloud metadata"):
        check("http://metadata.test/")
    with pytest.raises(SsrfRefused, match=r"192\.168\.1\.1 is in 192\.168\.0\.0/16: private"):
        check("http://mixed.test/")
    with pytest.raises(SsrfRefused, match=r"::ffff:7f00:1 is IPv4-mapped 127\.0\.0\.1, and 127\.0\.0\.1 is in"):
        check("http://[::ffff:127.0.0.1]/")


# --- what passes ----------------------------------------------------------------------------------------

# Just outside each refused range (and a few well-known public addresses).
BOUNDARY_PUBLIC = [
    "1.0.0.0",  # after 0.0.0.0/8
    "9.255.255.255",  # around 10.0.0.0/8
    "11.0.0.0",
    "100.63.255.255",  # around 100.64.0.0/10
    "100.128.0.0",
    "126.255.255.255",  # around 127.0.0.0/8
    "128.0.0.0",
    "169.253.255.255",  # around 169.254.0.0/16
    "169.255.0.0",
    "172.15.255.255",  # around 172.16.0.0/12
    "172.32.0.0",
    "191.255.255.255",  # before 192.0.0.0/24
    "192.0.1.0",  # between 192.0.0.0/24 and 192.0.2.0/24
    "192.0.3.0",  # after 192.0.2.0/24
    "192.88.98.255",  # around 192.88.99.0/24
    "192.88.100.0",
    "192.167.255.255",  # around 192.168.0.0/16
    "192.169.0.0",
    "198.17.255.255",  # around 198.18.0.0/15
    "198.20.0.0",
    "198.51.99.255",  # around 198.51.100.0/24
    "198.51.101.0",
    "203.0.112.255",  # around 203.0.113.0/24
    "203.0.114.0",
    "223.255.255.255",  # before 224.0.0.0/4
    "8.8.8.8",
    "1.1.1.1",
]
BOUNDARY_PUBLIC_V6 = [
    "2000::1",  # start of global unicast
    "2001:200::1",  # just after 2001::/23
    "2001:db9::1",  # just after 2001:db8::/32
    "2003::1",  # after 2002::/16
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "3ffe:ffff::1",  # before 3fff::/20
    "3fff:1000::1",  # after 3fff::/20
    "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # end of 2000::/3
]


@pytest.mark.parametrize("address", BOUNDARY_PUBLIC)
def test_public_ipv4_just_outside_a_range_passes(address: str) -> None:
    target = check(f"http://{address}/")
    assert (target.host, target.addresses, target.pinned_ip) == (address, (address,), address)


@pytest.mark.parametrize("address", BOUNDARY_PUBLIC_V6)
def test_public_ipv6_just_outside_a_range_passes(address: str) -> None:
    target = check(f"http://[{address}]:8080/")
    assert target.pinned_ip == target.host
    assert target.url == f"http://[{target.host}]:8080/"


@pytest.mark.parametrize(
    ("url", "pinned"),
    [
        ("http://[::ffff:8.8.8.8]/", "8.8.8.8"),  # IPv4-mapped: judged, and dialled, as the IPv4 address
        ("http://[64:ff9b::808:808]/", "64:ff9b::808:808"),  # NAT64 of a public address (DNS64 networks)
    ],
)
def test_embeddings_of_public_ipv4_that_are_judged_pass(url: str, pinned: str) -> None:
    assert check(url).pinned_ip == pinned


def test_a_public_name_passes_with_every_part_normalised() -> None:
    target = check("HTTPS://Public.Example.:8443/a/b?q=1&r=%20#fragment")
    assert target == Target(
        scheme="https",
        host="public.example",
        port=8443,
        path_query="/a/b?q=1&r=%20",
        addresses=("93.184.216.34",),
        pinned_ip="93.184.216.34",
    )
    assert target.host_header == "public.example:8443"
    assert target.url == "https://public.example:8443/a/b?q=1&r=%20"


@pytest.mark.parametrize(
    ("url", "port", "path_query", "host_header"),
    [
        ("http://public.example", 80, "/", "public.example"),
        ("http://public.example:/x", 80, "/x", "public.example"),
        ("https://public.example:443/", 443, "/", "public.example"),
        ("http://public.example:443/?", 443, "/", "public.example:443"),
    ],
)
def test_ports_and_paths(url: str, port: int, path_query: str, host_header: str) -> None:
    target = check(url)
    assert (target.port, target.path_query, target.host_header) == (port, path_query, host_header)


def test_an_internationalised_name_is_idna_encoded_before_resolution() -> None:
    assert check("http://Bücher.example/").host == "xn--bcher-kva.example"


# --- resolution -----------------------------------------------------------------------------------------


class CountingResolver:
    """A resolver whose answer changes after the first call (DNS rebinding)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def test_the_name_is_resolved_once_and_the_first_answer_is_pinned() -> None:
    resolver = CountingResolver(["93.184.216.34", "2606:4700::1"], ["127.0.0.1"])
    target = check("https://rebind.example/", resolver)
    assert resolver.calls == [("rebind.example", 443)]
    assert target.addresses == ("93.184.216.34", "2606:4700::1")
    assert target.pinned_ip == "93.184.216.34"


def test_duplicate_answers_are_collapsed() -> None:
    target = check("http://dup.example/", CountingResolver(["93.184.216.34", "93.184.216.34"]))
    assert target.addresses == ("93.184.216.34",)


def test_a_literal_address_is_not_resolved() -> None:
    resolver = CountingResolver(["127.0.0.1"])
    check("http://8.8.8.8/", resolver)
    assert resolver.calls == []


@pytest.mark.parametrize(
    "error",
    [socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), TimeoutError(), UnicodeError()],
)
def test_a_dns_failure_is_a_refusal_never_unchecked(error: Exception) -> None:
    def failing(host: str, port: int) -> list[str]:
        raise error

    with pytest.raises(SsrfRefused, match="cannot resolve"):
        check("http://public.example/", failing)


def test_the_system_resolver_is_used_by_default_and_localhost_is_refused() -> None:
    try:
        socket.getaddrinfo("localhost", 80)
    except OSError:
        pytest.skip("this machine cannot resolve localhost")
    with pytest.raises(SsrfRefused, match="loopback"):
        check_url("http://localhost/", allowed_hosts=(), default_deny=False)
