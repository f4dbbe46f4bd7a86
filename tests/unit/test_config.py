"""The configuration contract: every variable declared once, profiles, precedence, bad values → exit 78."""

from __future__ import annotations

import pytest

from machina import config
from machina.cli.config_cmd import render_template
from machina.config import ConfigError, Source
from machina.config.profiles import PROFILES
from machina.config.variables import VARIABLES
from machina.exitcodes import ExitCode

from ..conftest import CHECKOUT


def load(env: dict[str, str], **overrides: str) -> config.Config:
    return config.load(environ={"MACHINA_ENV_FILE": "/dev/null", **env}, overrides=overrides)


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load(env)
    assert excinfo.value.exit_code == ExitCode.CONFIG == 78
    return str(excinfo.value)


def test_every_default_is_valid_for_its_own_kind() -> None:
    for var in VARIABLES.values():
        if var.default is None:
            continue
        rendered = var.kind.render(var.default)
        assert var.kind.parse(rendered) == var.default, var.name


def test_every_variable_of_the_manual_is_declared() -> None:
    import re

    manual = CHECKOUT / "docs" / "spec" / "OPERATIONS.md"

    named = set(re.findall(r"`(MACHINA_[A-Z0-9_]+)`", manual.read_text()))
    # Families the manual abbreviates with a star; their members are declared with unit suffixes.
    families = {n for n in named if n.endswith("_")}
    missing = sorted(n for n in named - families if n not in VARIABLES)
    assert missing == []
    for family in families:
        assert any(v.startswith(family) for v in VARIABLES), family


def test_defaults_without_anything_set() -> None:
    cfg = load({})
    assert cfg["MACHINA_PROFILE"] == "dev"
    assert cfg.wal_checkpoint_ms == 5000
    assert cfg.wal_fsync is False
    assert cfg["MACHINA_DEDUP_TTL_MS"] == 300000
    assert cfg["MACHINA_API_PORT"] == 8080
    assert cfg["MACHINA_HTTP_STDOUT_MAX"] == 128 * 1024
    assert cfg.source("MACHINA_WAL_CHECKPOINT_MS") is Source.DEFAULT


@pytest.mark.parametrize("name", sorted(PROFILES["prod"]))
def test_prod_profile_sets_each_value_of_its_table(name: str) -> None:
    cfg = load({"MACHINA_PROFILE": "prod"})
    var = VARIABLES[name]
    assert cfg[name] == var.kind.parse(PROFILES["prod"][name])
    assert cfg.source(name) is Source.PROFILE


def test_prod_profile_values_of_the_manual() -> None:
    cfg = load({"MACHINA_PROFILE": "prod"})
    assert cfg.wal_fsync is True
    assert cfg.seccomp_enable is True
    assert cfg.genesis_enable is False
    assert cfg.genesis_guard is True
    assert cfg.shell_timeout_ms == 10000
    assert cfg.policy_timeout_ms == 30000
    assert cfg.http_default_deny is True
    assert cfg.toolhost_isolate is True
    assert cfg.genesis_prod_mode is True
    assert (cfg.max_cycles, cfg.pulse_budget_s) == (30, 600)


def test_dev_profile_values_of_the_manual() -> None:
    cfg = load({"MACHINA_PROFILE": "dev"})
    assert (cfg.wal_fsync, cfg.genesis_enable, cfg.seccomp_enable, cfg.genesis_guard) == (False, True, False, False)
    assert (cfg.shell_timeout_ms, cfg.policy_timeout_ms) == (30000, 60000)
    assert (cfg.max_cycles, cfg.pulse_budget_s) == (100, 3600)
    assert cfg.http_default_deny is False and cfg.toolhost_isolate is False


@pytest.mark.parametrize("name", sorted(PROFILES["prod"]))
def test_explicit_environment_value_wins_over_the_profile(name: str) -> None:
    var = VARIABLES[name]
    profile_value = var.kind.parse(PROFILES["prod"][name])
    other = "0" if profile_value is True else "1" if profile_value is False else str(profile_value + 7)
    cfg = load({"MACHINA_PROFILE": "prod", name: other})
    assert cfg[name] == var.kind.parse(other)
    assert cfg.source(name) is Source.ENV


def test_precedence_default_profile_file_env_arg(tmp_path) -> None:
    env_file = tmp_path / "machina.env"
    env_file.write_text("MACHINA_PROFILE=prod\nMACHINA_SHELL_TIMEOUT_MS=1234\nMACHINA_API_PORT='9000'\n")
    base = {"MACHINA_ENV_FILE": str(env_file)}
    cfg = config.load(environ=base)
    assert cfg.profile == "prod" and cfg.source("MACHINA_PROFILE") is Source.FILE
    assert cfg.shell_timeout_ms == 1234 and cfg.source("MACHINA_SHELL_TIMEOUT_MS") is Source.FILE  # file > profile
    assert cfg.wal_fsync is True and cfg.source("MACHINA_WAL_FSYNC") is Source.PROFILE
    assert cfg.setting("MACHINA_SHELL_TIMEOUT_MS").origin == f"{env_file}:2"
    cfg = config.load(environ={**base, "MACHINA_API_PORT": "9100"})
    assert cfg.api_port == 9100 and cfg.source("MACHINA_API_PORT") is Source.ENV  # env > file
    cfg = config.load(environ={**base, "MACHINA_API_PORT": "9100"}, overrides={"MACHINA_API_PORT": "9200"})
    assert cfg.api_port == 9200 and cfg.source("MACHINA_API_PORT") is Source.ARG  # command line > env


def test_environment_profile_beats_the_file_profile(tmp_path) -> None:
    env_file = tmp_path / "machina.env"
    env_file.write_text("MACHINA_PROFILE=prod\n")
    cfg = config.load(environ={"MACHINA_ENV_FILE": str(env_file), "MACHINA_PROFILE": "dev"})
    assert cfg.profile == "dev" and cfg.wal_fsync is False


def test_empty_value_means_unset() -> None:
    cfg = load({"MACHINA_WAL_CHECKPOINT_MS": "", "MACHINA_PROFILE": ""})
    assert cfg.wal_checkpoint_ms == 5000 and cfg.profile == "dev"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MACHINA_WAL_CHECKPOINT_MS", "abc", "an integer in ms"),
        ("MACHINA_SHELL_TIMEOUT_MS", "-5", "an integer in ms from 1"),
        ("MACHINA_API_PORT", "70000", "from 1 to 65535"),
        ("MACHINA_API_PORT", "80.5", "an integer"),
        ("MACHINA_WAL_FSYNC", "maybe", "0 or 1"),
        ("MACHINA_PROFILE", "staging", "one of dev, prod"),
        ("MACHINA_SELECTOR", "RANDOM", "one of HEURISTIC, GPU_CENTROID"),
        ("MACHINA_ROOT", "relative/dir", "an absolute path"),
        ("MACHINA_SHELL_ALLOWED_EXE", "ls,/bin/sh", "executable basenames"),
        ("MACHINA_HTTP_ALLOWED_HOSTS", "good.example, bad host", "host names"),
        ("MACHINA_HTTP_ALLOWED_HOSTS", "*example.com", "host names"),
        ("MACHINA_POLICY_CMD", "python3 'unterminated", "a command line"),
        ("TELEGRAM_CHAT_ID", "everyone", "a chat id"),
        ("MACHINA_PLUGIN_ALLOWED_CAPS", "FILE_READ,ROOTKIT", "plugin capabilities"),
        ("MACHINA_LOG_LEVEL", "loud", "one of debug"),
    ],
)
def test_bad_value_names_variable_value_and_expectation(name: str, value: str, expected: str) -> None:
    message = error_of({name: value})
    assert message.startswith(f"{name}={value!r}: expected ")
    assert expected in message
    assert "\n" not in message


def test_every_bad_value_is_reported_each_on_its_own_line() -> None:
    message = error_of({"MACHINA_WAL_CHECKPOINT_MS": "abc", "MACHINA_API_PORT": "0"})
    assert len(message.splitlines()) == 2


def test_secret_values_are_never_echoed_in_errors() -> None:
    message = error_of({"MACHINA_API_TOKEN": "s3cr3t-token\nsecond-line"})
    assert "s3cr3t" not in message and "<secret>" in message


def test_retry_bounds_must_be_ordered() -> None:
    assert "MACHINA_RETRY_MIN_MS=5000 is larger than MACHINA_RETRY_MAX_MS=10" in error_of(
        {"MACHINA_RETRY_MIN_MS": "5000", "MACHINA_RETRY_MAX_MS": "10"}
    )


def test_cmd_embed_provider_needs_a_command() -> None:
    assert "MACHINA_EMBED_CMD" in error_of({"MACHINA_EMBED_PROVIDER": "cmd"})


def test_explicit_env_file_must_exist(tmp_path) -> None:
    message = error_of({"MACHINA_ENV_FILE": str(tmp_path / "nope.env")})
    assert "MACHINA_ENV_FILE" in message and "does not exist" in message


def test_default_env_file_may_be_missing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(
        VARIABLES,
        "MACHINA_ENV_FILE",
        VARIABLES["MACHINA_ENV_FILE"].__class__(
            **{**VARIABLES["MACHINA_ENV_FILE"].__dict__, "default": str(tmp_path / "absent.env")}
        ),
    )
    cfg = config.load(environ={})
    assert cfg.env_file is None


def test_bad_line_in_env_file_names_file_and_line(tmp_path) -> None:
    env_file = tmp_path / "machina.env"
    env_file.write_text("# comment\nMACHINA_API_PORT=9000\nthis is not an assignment\n")
    message = error_of({"MACHINA_ENV_FILE": str(env_file)})
    assert str(env_file) in message and "line 3" in message


def test_bad_value_in_env_file_says_where_it_came_from(tmp_path) -> None:
    env_file = tmp_path / "machina.env"
    env_file.write_text("MACHINA_API_PORT=http\n")
    assert f"(from {env_file}:1)" in error_of({"MACHINA_ENV_FILE": str(env_file)})


def test_unknown_machina_variables_are_reported() -> None:
    cfg = load({"MACHINA_WAL_FSINC": "1", "UNRELATED": "x"})
    assert cfg.unknown_variables == ("MACHINA_WAL_FSINC",)


def test_values_are_typed() -> None:
    cfg = load(
        {
            "MACHINA_SHELL_ALLOWED_EXE": " ls, cat ,,grep",
            "MACHINA_POLICY_CMD": "python3 'my policy.py' --x",
            "MACHINA_WAL_FSYNC": "yes",
            "MACHINA_SELECTOR": "gpu_centroid",
        }
    )
    assert cfg.shell_allowed_exe == ("ls", "cat", "grep")
    assert cfg.policy_cmd == ("python3", "my policy.py", "--x")
    assert cfg.wal_fsync is True
    assert cfg.selector == "GPU_CENTROID"


def test_secret_values_are_collected_for_redaction() -> None:
    cfg = load({"MACHINA_API_TOKEN": "tok-123", "TELEGRAM_BOT_TOKEN": "123:abc", "MACHINA_AUDIT_KEY": "k"})
    assert sorted(cfg.secret_values()) == ["123:abc", "k", "tok-123"]
    assert cfg.setting("MACHINA_API_TOKEN").shown() == "<set>"
    assert cfg.setting("MACHINA_API_HMAC_SECRET").shown() == "<unset>"


def test_seccomp_profile_follows_the_legacy_toggle() -> None:
    assert load({}).seccomp_profile == "strict"
    assert load({"MACHINA_SECCOMP_PROFILE": "net"}).seccomp_profile == "net"
    assert load({"MACHINA_SECCOMP_ALLOW_NET": "1"}).seccomp_profile == "net"


def test_missing_root_is_a_configuration_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="MACHINA_ROOT is not set"):
        load({}).require_root()
    with pytest.raises(ConfigError, match="directory does not exist") as excinfo:
        load({"MACHINA_ROOT": str(tmp_path / "missing")}).require_root()
    assert excinfo.value.exit_code == 78
    assert load({"MACHINA_ROOT": str(tmp_path)}).require_root() == str(tmp_path)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = load({}).no_such_knob


def test_shipped_env_file_is_the_current_template() -> None:
    shipped = (CHECKOUT / "etc" / "machina" / "machina.env").read_text()
    assert shipped == render_template(), "regenerate with: bin/machina config template > etc/machina/machina.env"


def test_template_lists_every_variable_commented_out() -> None:
    text = render_template()
    for name in VARIABLES:
        assert f"\n#{name}=" in text
    from machina.config.envfile import parse_env_text

    assert parse_env_text(text) == []  # everything is commented: installing it changes nothing


def test_d1_the_policy_script_root_defaults_outside_the_root_and_never_where_jobs_write(tmp_path) -> None:
    root = tmp_path / "root"
    cfg = load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root)})
    assert cfg["MACHINA_POLICY_ALLOWED_SCRIPT_ROOT"] == "/etc/machina/policies"
    for scripts in (root / "data" / "policies", root / "work", root, tmp_path):
        error = error_of({"MACHINA_ROOT": str(root), "MACHINA_POLICY_ALLOWED_SCRIPT_ROOT": str(scripts)})
        assert "which jobs may write" in error, scripts
    fine = {"MACHINA_ROOT": str(root), "MACHINA_POLICY_ALLOWED_SCRIPT_ROOT": str(root / "policies")}
    assert load({"MACHINA_ENV_FILE": "/dev/null", **fine})["MACHINA_POLICY_ALLOWED_SCRIPT_ROOT"] == str(
        fine["MACHINA_POLICY_ALLOWED_SCRIPT_ROOT"]
    )


@pytest.mark.parametrize(
    "name", ["MACHINA_TOOLHOST_ALLOWED_UIDS", "MACHINA_TOOLHOST_ADMIN_UIDS", "MACHINA_EMBED_ALLOWED_UIDS"]
)
def test_d5_the_overflow_uid_is_refused_as_a_peer(name: str) -> None:
    error = error_of({name: "1000,65534"})
    assert f"{name}='1000,65534'" in error and "overflow uid" in error and "PrivateUsers=yes" in error
    assert load({name: "1000, 64056"})[name] == ("1000", "64056")
