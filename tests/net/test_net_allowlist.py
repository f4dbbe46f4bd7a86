"""MACHINA_HTTP_ALLOWED_HOSTS and MACHINA_HTTP_DEFAULT_DENY as check_url applies them (the toolhost passes
the configured values in)."""

from __future__ import annotations

import pytest

from machina.exitcodes import ExitCode, MachinaError
from machina.net.ssrf import SsrfRefused, check_url, validate_allowed_hosts

PUBLIC = "93.184.216.34"


class RecordingResolver:
    def __init__(self, answer: str = PUBLIC) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answer]


def allowed(url: str, allowed_hosts: tuple[str, ...], default_deny: bool = False) -> bool:
    try:
        check_url(url, allowed_hosts=allowed_hosts, default_deny=default_deny, resolver=RecordingResolver())
    except SsrfRefused:
        return False
    return True


@pytest.mark.parametrize(
    ("allowed_hosts", "default_deny", "url", "expected"),
    [
        # empty list: any public host, unless default-deny
        ((), False, "http://api.example.com/", True),
        ((), False, "http://8.8.8.8/", True),
        ((), True, "http://api.example.com/", False),
        ((), True, "http://8.8.8.8/", False),
        # exact names: case-insensitive, trailing dot ignored on both sides, nothing else
        (("example.com",), False, "http://example.com/", True),
        (("example.com",), False, "http://EXAMPLE.com./", True),
        (("Example.COM.",), False, "http://example.com/", True),
        (("example.com",), False, "http://www.example.com/", False),
        (("example.com",), False, "http://example.com.evil.test/", False),
        (("example.com",), False, "http://evilexample.com/", False),
        (("example.com",), True, "http://example.com/", True),  # default-deny yields to a list
        (("example.com",), True, "http://other.com/", False),
        # wildcards: any depth below the domain, never the domain itself
        (("*.example.com",), False, "http://api.example.com/", True),
        (("*.example.com",), False, "http://a.b.example.com/", True),
        (("*.EXAMPLE.com",), False, "http://API.example.COM./", True),
        (("*.example.com",), False, "http://example.com/", False),
        (("*.example.com",), False, "http://badexample.com/", False),
        (("*.example.com",), False, "http://example.com.evil.test/", False),
        (("*.example.com", "example.com"), False, "http://example.com/", True),
        (("*.example.com",), True, "http://api.example.com/", True),
        # addresses: matched in any literal form, never by a wildcard
        (("8.8.8.8",), False, "http://8.8.8.8/", True),
        (("8.8.8.8",), False, "http://0x08080808/", True),
        (("8.8.8.8",), False, "http://134744072/", True),
        (("8.8.8.8",), False, "http://8.8.4.4/", False),
        (("*.example.com",), False, "http://8.8.8.8/", False),
        (("2606:4700::1111",), False, "http://[2606:4700:0::1111]/", True),
        # a lone * allows every host (the address check still applies)
        (("*",), True, "http://anything.test/", True),
        (("*",), True, "http://8.8.8.8/", True),
    ],
)
def test_allowlist_matrix(allowed_hosts: tuple[str, ...], default_deny: bool, url: str, expected: bool) -> None:
    assert allowed(url, allowed_hosts, default_deny) is expected


def test_a_host_not_allowed_is_never_looked_up() -> None:
    resolver = RecordingResolver()
    with pytest.raises(SsrfRefused, match="not in MACHINA_HTTP_ALLOWED_HOSTS"):
        check_url(
            "http://secret.internal.test/", allowed_hosts=("*.example.com",), default_deny=False, resolver=resolver
        )
    assert resolver.asked == []


def test_default_deny_says_why() -> None:
    with pytest.raises(SsrfRefused, match="MACHINA_HTTP_DEFAULT_DENY=1 and MACHINA_HTTP_ALLOWED_HOSTS is empty"):
        check_url("http://api.example.com/", allowed_hosts=(), default_deny=True, resolver=RecordingResolver())


@pytest.mark.parametrize("allowed_hosts", [("*.example.com",), ("api.example.com",), ("*",)])
def test_the_allowlist_never_overrides_the_address_check(allowed_hosts: tuple[str, ...]) -> None:
    with pytest.raises(SsrfRefused, match=r"169\.254\.169\.254"):
        check_url(
            "http://api.example.com/",
            allowed_hosts=allowed_hosts,
            default_deny=True,
            resolver=RecordingResolver("169.254.169.254"),
        )


@pytest.mark.parametrize(
    ("entry", "url"), [("127.0.0.1", "http://127.0.0.1/"), ("localhost", "http://localhost/"), ("*", "http://127.1/")]
)
def test_an_allowlisted_loopback_host_is_still_refused(entry: str, url: str) -> None:
    with pytest.raises(SsrfRefused, match="loopback"):
        check_url(url, allowed_hosts=(entry,), default_deny=True, resolver=RecordingResolver("127.0.0.1"))


def test_valid_entries_are_normalised() -> None:
    assert validate_allowed_hosts([" Example.COM. ", "*.Sub.Example.com", "0x7f.1", "*", "[2001:DB8::1]"]) == (
        "example.com",
        "*.sub.example.com",
        "127.0.0.1",
        "*",
        "2001:db8::1",
    )


@pytest.mark.parametrize(
    "entry",
    ["", "*.", "**.example.com", "*example.com", "api.*.com", "*.8.8", "http://example.com", "a..b", "exa mple"],
)
def test_an_invalid_entry_is_a_configuration_error_naming_it(entry: str) -> None:
    with pytest.raises(MachinaError) as caught:
        check_url("http://example.com/", allowed_hosts=(entry,), default_deny=False, resolver=RecordingResolver())
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "MACHINA_HTTP_ALLOWED_HOSTS" in str(caught.value)
    assert repr(entry) in str(caught.value)
