"""mcp_servers.json: the shape, placeholders only for secrets, clear errors that never show a value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from machina.config.mcp_servers import (
    HttpServer,
    McpConfigError,
    StdioServer,
    expand,
    parse_mcp_servers,
    read_mcp_servers,
)

GITHUB_TOKEN = "ghp_" + "A1b2C3d4" * 5  # a token-shaped literal (never a real one)


def parse(servers: dict) -> dict:
    return parse_mcp_servers(json.dumps({"mcpServers": servers}), "mcp_servers.json").servers


def test_both_shapes_parse() -> None:
    servers = parse(
        {
            "files": {"command": "python3", "args": ["-m", "x"], "env": {"TOKEN": "${FILES_TOKEN}"}, "cwd": "/srv"},
            "web": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer ${WEB_KEY}"}},
            "old": {"url": "https://mcp.example.com/sse", "transport": "sse", "disabled": True},
        }
    )
    assert servers["files"] == StdioServer("files", "python3", ("-m", "x"), (("TOKEN", "${FILES_TOKEN}"),), "/srv")
    assert servers["web"] == HttpServer("web", "http://127.0.0.1:9/mcp", (("Authorization", "Bearer ${WEB_KEY}"),))
    assert isinstance(servers["old"], HttpServer) and servers["old"].transport == "sse" and servers["old"].disabled


def test_a_missing_file_means_no_servers(tmp_path: Path) -> None:
    config = read_mcp_servers(str(tmp_path / "absent.json"))
    assert config.servers == {} and not config.exists


@pytest.mark.parametrize(
    ("entry", "secret"),
    [
        ({"command": "x", "env": {"GITHUB_TOKEN": GITHUB_TOKEN}}, GITHUB_TOKEN),
        ({"command": "x", "env": {"API_KEY": "hunter2hunter2"}}, "hunter2hunter2"),
        ({"url": "http://127.0.0.1/mcp", "headers": {"Authorization": "Bearer abcdefgh12345678"}}, "abcdefgh12345678"),
        ({"command": "x", "args": ["--token", GITHUB_TOKEN]}, GITHUB_TOKEN),
    ],
)
def test_literal_secrets_are_refused_without_showing_them(entry: dict, secret: str) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse({"srv": entry})
    assert "${ENV_VAR}" in str(caught.value) and "$.mcpServers.srv" in str(caught.value)
    assert secret not in str(caught.value)
    assert caught.value.exit_code == 78


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"mcpServers": ', "not valid JSON"),
        ("[]", '{"mcpServers"'),
        ('{"mcpServers": {}, "extra": 1}', "unknown top-level key(s) extra"),
        ('{"mcpServers": {"a": {"command": "x"}, "a": {"command": "y"}}}', "not valid JSON"),
        ('{"mcpServers": {"a": {}}}', "exactly one of command"),
        ('{"mcpServers": {"a": {"command": "x", "url": "http://h/"}}}', "exactly one of command"),
        ('{"mcpServers": {"a": {"command": "x", "disable": true}}}', "unknown key(s) disable"),
        ('{"mcpServers": {"a": {"command": "x", "args": "-v"}}}', "args: expected a list of strings"),
        ('{"mcpServers": {"a": {"command": "x", "cwd": "rel"}}}', "cwd: expected an absolute path"),
        ('{"mcpServers": {"a": {"url": "http://u:p@h/"}}}', "without credentials"),
        ('{"mcpServers": {"a": {"url": "ftp://h/"}}}', "url: expected"),
        ('{"mcpServers": {"a b": {"command": "x"}}}', "a server name is"),
        ('{"mcpServers": {"a": {"command": "x", "disabled": "no"}}}', "disabled: expected true or false"),
        ('{"mcpServers": {"a": {"url": "http://h/", "transport": "ws"}}}', "transport: expected"),
    ],
)
def test_bad_files_get_a_clear_error(text: str, expected: str) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse_mcp_servers(text, "f.json")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("f.json")


def test_placeholders_expand_from_the_environment_only_when_set() -> None:
    assert expand("Bearer ${KEY}", {"KEY": "s3cret"}, "web.headers.Authorization") == "Bearer s3cret"
    with pytest.raises(McpConfigError, match=r"needs \$\{KEY\}, which is not set"):
        expand("Bearer ${KEY}", {}, "web.headers.Authorization")
