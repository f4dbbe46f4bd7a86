"""The LLM variables: each bad value is a one-line configuration error (exit 78); open_backend's own checks."""

from __future__ import annotations

import pytest
from llm_support import ANTHROPIC, OAI, config

from machina.config import ConfigError, load
from machina.exitcodes import ExitCode
from machina.llm import open_backend


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load({"MACHINA_ENV_FILE": "/dev/null", **env})
    assert caught.value.exit_code == ExitCode.CONFIG
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MACHINA_CHAT_BACKEND", "openai", "one of oai_compat, anthropic, ollama"),
        ("MACHINA_CHAT_TEMPERATURE", "hot", "a number from 0.0 to 2.0"),
        ("MACHINA_CHAT_TEMPERATURE", "2.5", "a number from 0.0 to 2.0"),
        ("MACHINA_CHAT_MAX_TOKENS", "0", "an integer in tokens from 1"),
        ("MACHINA_CHAT_TIMEOUT_MS", "soon", "an integer in ms"),
        ("MACHINA_CHAT_TOOL_MODE", "xml", "one of native, json"),
        ("OAI_COMPAT_BASE_URL", "localhost:11434", "an http:// or https:// URL"),
        ("OAI_COMPAT_BASE_URL", "https://user:sk-abc@api.example.com", "without credentials"),
        ("OAI_COMPAT_BASE_URL", "https://api.example.com/v1?key=abc", "without credentials, query"),
        ("OAI_COMPAT_MODEL", "two words", "a model name"),
        ("OAI_COMPAT_TIMEOUT_SEC", "0", "an integer in seconds from 1"),
        ("ANTHROPIC_BASE_URL", "ftp://api.anthropic.com", "an http:// or https:// URL"),
        ("ANTHROPIC_MODEL", "-claude", "a model name"),
        ("ANTHROPIC_MAX_TOKENS", "lots", "an integer in tokens"),
        ("OLLAMA_HOST", "127.0.0.1:11434", "an http:// or https:// URL"),
        ("OLLAMA_MODEL", "llama3;rm", "a model name"),
    ],
)
def test_bad_value_is_a_configuration_error(name: str, value: str, expected: str) -> None:
    message = error_of({name: value})
    assert message.startswith(f"{name}={value!r}: expected ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["OAI_COMPAT_API_KEY", "ANTHROPIC_API_KEY"])
def test_a_bad_key_is_never_echoed(name: str) -> None:
    message = error_of({name: "sk-first-line\nsecond-line"})
    assert "sk-first" not in message and "<secret>" in message


def test_defaults() -> None:
    cfg = load({"MACHINA_ENV_FILE": "/dev/null"})
    assert cfg["MACHINA_CHAT_BACKEND"] == "oai_compat"
    assert cfg["OAI_COMPAT_BASE_URL"] == "http://127.0.0.1:11434"
    assert cfg["ANTHROPIC_BASE_URL"] == "https://api.anthropic.com"
    assert cfg["OLLAMA_HOST"] == "http://127.0.0.1:11434"
    assert (cfg["MACHINA_CHAT_TEMPERATURE"], cfg["MACHINA_CHAT_MAX_TOKENS"]) == (0.7, 4096)
    assert cfg["MACHINA_CHAT_TOOL_MODE"] == "native"


def test_the_keys_are_secrets() -> None:
    cfg = load({"MACHINA_ENV_FILE": "/dev/null", "OAI_COMPAT_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2"})
    assert {"k1", "k2"} <= set(cfg.secret_values())
    assert cfg.setting("OAI_COMPAT_API_KEY").shown() == "<set>"


@pytest.mark.parametrize("model_var", ["OAI_COMPAT_MODEL", "ANTHROPIC_MODEL", "OLLAMA_MODEL"])
def test_a_backend_without_a_model_is_a_configuration_error(model_var: str) -> None:
    backend = {"OAI_COMPAT_MODEL": "oai_compat", "ANTHROPIC_MODEL": "anthropic", "OLLAMA_MODEL": "ollama"}[model_var]
    cfg = load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_CHAT_BACKEND": backend, "ANTHROPIC_API_KEY": "k"})
    with pytest.raises(ConfigError, match=f"{model_var} is not set") as caught:
        open_backend(cfg)
    assert caught.value.exit_code == ExitCode.CONFIG


def test_anthropic_needs_a_key_for_the_real_service() -> None:
    cfg = load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_CHAT_BACKEND": "anthropic", "ANTHROPIC_MODEL": "claude"})
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        open_backend(cfg)


def test_anthropic_compatible_local_server_needs_no_key() -> None:
    cfg = config(ANTHROPIC, "http://127.0.0.1:9", ANTHROPIC_API_KEY="")
    assert open_backend(cfg).name == "anthropic"


def test_an_unknown_backend_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="LLM backend 'gemini': expected one of oai_compat, anthropic, ollama"):
        open_backend(config(OAI, "http://127.0.0.1:9"), backend="gemini")
