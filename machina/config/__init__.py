"""The one place Machina reads and validates its configuration.

Resolution order for every variable, later wins:

    default  <  profile (MACHINA_PROFILE)  <  env file (MACHINA_ENV_FILE)  <  environment  <  command line

The profile only fills in what the operator did not set (the manual's ``setenv(overwrite=0)``).  An empty
value means "unset".  Any bad value raises :class:`ConfigError` (exit 78, EX_CONFIG) naming the variable,
the value and what was expected; secrets are never echoed.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from machina.config.envfile import EnvFileError, read_env_file
from machina.config.profiles import PROFILES
from machina.config.variables import SECTIONS, VARIABLES, Var
from machina.exitcodes import ExitCode, MachinaError

__all__ = ["SECTIONS", "VARIABLES", "Config", "ConfigError", "Setting", "Source", "Var", "load"]


class ConfigError(MachinaError):
    exit_code = ExitCode.CONFIG


class Source(enum.Enum):
    DEFAULT = "default"
    PROFILE = "profile"
    FILE = "file"
    ENV = "env"
    ARG = "arg"


@dataclass(frozen=True)
class Setting:
    var: Var
    value: Any
    source: Source
    origin: str  # where the raw text came from: "MACHINA_PROFILE=prod", "/etc/machina/machina.env:12", ...

    @property
    def name(self) -> str:
        return self.var.name

    def shown(self) -> str:
        """The value as ``config show`` prints it: secrets only say whether they are set."""
        if self.var.secret:
            return "<set>" if self.value else "<unset>"
        return self.var.kind.render(self.value)


class Config:
    """Typed, validated configuration.  ``cfg["MACHINA_WAL_FSYNC"]`` or ``cfg.wal_fsync``."""

    def __init__(self, settings: dict[str, Setting], unknown: tuple[str, ...], env_file: str | None) -> None:
        self._settings = settings
        self.unknown_variables = unknown
        self.env_file = env_file

    def __getitem__(self, name: str) -> Any:
        return self._settings[name].value

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        for name in ("MACHINA_" + attr.upper(), attr.upper()):
            setting = self.__dict__["_settings"].get(name)
            if setting is not None:
                return setting.value
        raise AttributeError(f"no configuration variable for {attr!r}")

    def setting(self, name: str) -> Setting:
        return self._settings[name]

    def source(self, name: str) -> Source:
        return self._settings[name].source

    def __iter__(self) -> Iterator[Setting]:
        return iter(self._settings.values())

    def secret_values(self) -> list[str]:
        """Values that must never appear in logs, errors or metrics."""
        return [s.value for s in self._settings.values() if s.var.secret and s.value]

    # --- derived values, computed in one place so every component agrees --------------------------------

    @property
    def seccomp_profile(self) -> str:
        """``net`` when asked for either way (the legacy MACHINA_SECCOMP_ALLOW_NET included), else ``strict``."""
        return "net" if self["MACHINA_SECCOMP_ALLOW_NET"] else self["MACHINA_SECCOMP_PROFILE"]

    def require_root(self) -> str:
        """MACHINA_ROOT, which must be set and be an existing directory (else exit 78)."""
        root = self["MACHINA_ROOT"]
        if not root:
            raise ConfigError(
                "MACHINA_ROOT is not set: point it at the working root (create one with `machina init DIR`)"
            )
        if not os.path.isdir(root):
            raise ConfigError(f"MACHINA_ROOT={root!r}: directory does not exist (create it with `machina init {root}`)")
        return str(root)


def load(environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate every variable.  Raises ConfigError listing each bad value on its own line."""
    env = os.environ if environ is None else environ
    args = dict(overrides or {})
    errors: list[str] = []

    env_file, file_values = _read_env_file(env, args, errors)
    profile = _pick_profile(env, args, file_values, errors)
    profile_values = PROFILES.get(profile, {})

    settings: dict[str, Setting] = {}
    for name, var in VARIABLES.items():
        setting = _resolve(var, args, env, file_values, profile, profile_values, errors)
        if setting is not None:
            settings[name] = setting
    if not errors:
        _check_relations(settings, errors)
    if errors:
        raise ConfigError("\n".join(errors))
    unknown = tuple(sorted(k for k in env if k.startswith("MACHINA_") and k not in VARIABLES))
    return Config(settings, unknown, env_file)


def _read_env_file(
    env: Mapping[str, str], args: Mapping[str, str], errors: list[str]
) -> tuple[str | None, dict[str, tuple[str, str]]]:
    explicit = args.get("MACHINA_ENV_FILE") or env.get("MACHINA_ENV_FILE")
    path = explicit or VARIABLES["MACHINA_ENV_FILE"].default
    if not os.path.exists(path):
        if explicit:
            errors.append(f"MACHINA_ENV_FILE={path!r}: file does not exist")
        return None, {}
    try:
        entries = read_env_file(path)
    except (EnvFileError, OSError) as exc:
        errors.append(f"MACHINA_ENV_FILE={path!r}: {exc}")
        return path, {}
    values = {key: (value, f"{path}:{line}") for key, value, line in entries if key in VARIABLES}
    return path, values


def _pick_profile(
    env: Mapping[str, str],
    args: Mapping[str, str],
    file_values: Mapping[str, tuple[str, str]],
    errors: list[str],
) -> str:
    raw = args.get("MACHINA_PROFILE") or env.get("MACHINA_PROFILE") or file_values.get("MACHINA_PROFILE", ("", ""))[0]
    if not raw:
        return "dev"
    try:
        return str(VARIABLES["MACHINA_PROFILE"].kind.parse(raw))
    except ValueError:
        return "dev"  # the error itself is reported when MACHINA_PROFILE is resolved like any other variable


def _resolve(
    var: Var,
    args: Mapping[str, str],
    env: Mapping[str, str],
    file_values: Mapping[str, tuple[str, str]],
    profile: str,
    profile_values: Mapping[str, str],
    errors: list[str],
) -> Setting | None:
    name = var.name
    if args.get(name):
        raw, source, origin = args[name], Source.ARG, "command line"
    elif env.get(name):
        raw, source, origin = env[name], Source.ENV, "environment"
    elif file_values.get(name, ("", ""))[0]:
        raw, origin = file_values[name]
        source = Source.FILE
    elif name in profile_values:
        raw, source, origin = profile_values[name], Source.PROFILE, f"MACHINA_PROFILE={profile}"
    else:
        return Setting(var, var.default, Source.DEFAULT, "default")
    try:
        value = var.kind.parse(raw)
    except ValueError as exc:
        shown = "<secret>" if var.secret else repr(var.kind.redact(raw))
        where = "" if source is Source.ENV else f" (from {origin})"
        errors.append(f"{name}={shown}: expected {exc}{where}")
        return None
    return Setting(var, value, source, origin)


def _check_relations(settings: Mapping[str, Setting], errors: list[str]) -> None:
    lo, hi = settings["MACHINA_RETRY_MIN_MS"].value, settings["MACHINA_RETRY_MAX_MS"].value
    if lo > hi:
        errors.append(f"MACHINA_RETRY_MIN_MS={lo} is larger than MACHINA_RETRY_MAX_MS={hi}: expected min <= max")
    if settings["MACHINA_EMBED_PROVIDER"].value == "cmd" and not settings["MACHINA_EMBED_CMD"].value:
        errors.append("MACHINA_EMBED_PROVIDER='cmd' needs MACHINA_EMBED_CMD: expected a command line")
    _check_autonomic_approval(settings, errors)
    _check_script_root(settings, errors)


def _check_autonomic_approval(settings: Mapping[str, Setting], errors: list[str]) -> None:
    """Unattended approval is a development convenience only, and only for a peer of its own (AGENT.md fault 1)."""
    if settings["MACHINA_AUTONOMIC_APPROVE_ALL_ASK"].value and settings["MACHINA_PROFILE"].value == "prod":
        errors.append(
            "MACHINA_AUTONOMIC_APPROVE_ALL_ASK=1 is refused under MACHINA_PROFILE=prod: "
            "list the low-risk tools in MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS instead"
        )
    if settings["MACHINA_SELF_EVOLVE"].value and settings["MACHINA_PROFILE"].value == "prod":
        errors.append(
            "MACHINA_SELF_EVOLVE=1 is refused under MACHINA_PROFILE=prod: self-made changes are for development"
        )
    if "0" in settings["MACHINA_AUTONOMIC_UIDS"].value:
        errors.append(
            "MACHINA_AUTONOMIC_UIDS lists 0: root is every administrator's uid, not the autonomic engine's; "
            "run machina-autonomic as a uid of its own and list that"
        )


def _check_script_root(settings: Mapping[str, Setting], errors: list[str]) -> None:
    """The policy driver's scripts must not live where the file tools write (a job could replace them)."""
    from machina.root import TOOL_DIRS

    root, scripts = settings["MACHINA_ROOT"].value, settings["MACHINA_POLICY_ALLOWED_SCRIPT_ROOT"].value
    if not root:
        return
    canonical = os.path.realpath(scripts)
    for name in TOOL_DIRS:
        writable = os.path.join(os.path.realpath(root), name)
        if os.path.commonpath([writable, canonical]) in (writable, canonical):
            errors.append(
                f"MACHINA_POLICY_ALLOWED_SCRIPT_ROOT={scripts} holds or lies in {writable}, which jobs may write:"
                " expected a directory they cannot write (default /etc/machina/policies)"
            )
            return
