"""``plugins/pins.json``: the SHA-256 each plugin file must have to be loaded.

Format: ``{"version": 1, "pins": {"<file name>": "<sha256 hex>"}}``; file names are plain names in the
plugins directory.  Written atomically and fsynced (machina.fsutil); compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import stat
from typing import Any

from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import write_atomic

PINS_FILE = "pins.json"
PLUGIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.py")
_HEX = re.compile(r"[0-9a-f]{64}")


class PinError(MachinaError):
    exit_code = ExitCode.DATAERR


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def matches(data: bytes, pinned: str) -> bool:
    """Whether ``data`` has the pinned SHA-256 (constant-time comparison)."""
    return hmac.compare_digest(digest(data), pinned.lower())


def read_pins(plugins_dir: str) -> dict[str, str]:
    path = os.path.join(plugins_dir, PINS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            doc: Any = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PinError(f"{path}: cannot read pins: {exc}") from None
    pins = doc.get("pins") if isinstance(doc, dict) else None
    if not isinstance(pins, dict):
        raise PinError(f'{path}: expected {{"version": 1, "pins": {{file: sha256}}}}')
    for name, value in pins.items():
        if not PLUGIN_NAME.fullmatch(str(name)) or not isinstance(value, str) or not _HEX.fullmatch(value):
            raise PinError(f"{path}: bad pin {name!r}: expected a plugin file name and a lower-case SHA-256 hex")
    return dict(pins)


def write_pins(plugins_dir: str, pins: dict[str, str]) -> None:
    body = json.dumps({"version": 1, "pins": dict(sorted(pins.items()))}, indent=2) + "\n"
    write_atomic(os.path.join(plugins_dir, PINS_FILE), body.encode(), fsync=True)


def read_plugin_file(plugins_dir: str, name: str) -> bytes:
    """The bytes of a plugin file; a symbolic link or anything but a regular file is refused."""
    if not PLUGIN_NAME.fullmatch(name):
        raise PinError(f"{name!r} is not a plugin file name (letters, digits, _ . -, ending in .py)")
    dir_fd = os.open(plugins_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        raise PinError(f"{name}: {exc.strerror}", ExitCode.NOINPUT) from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise PinError(f"{name}: not a regular file")
        return handle.read()


def pin(plugins_dir: str, file: str) -> tuple[str, str]:
    """Pin ``file``: copied into the plugins directory first when it lives elsewhere.  Returns (name, sha256)."""
    source = os.path.realpath(file)
    name = os.path.basename(source)
    if not os.path.isfile(source):
        raise PinError(f"{file}: no such file", ExitCode.NOINPUT)
    if not PLUGIN_NAME.fullmatch(name):
        raise PinError(f"{name!r} is not a plugin file name (letters, digits, _ . -, ending in .py)")
    target = os.path.join(os.path.realpath(plugins_dir), name)
    if source != target:
        if os.path.lexists(target):
            raise PinError(f"{target} already exists: remove it or pin that file instead", ExitCode.CANTCREAT)
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
    data = read_plugin_file(plugins_dir, name)
    pins = read_pins(plugins_dir)
    pins[name] = digest(data)
    write_pins(plugins_dir, pins)
    return name, pins[name]


def verify(plugins_dir: str) -> list[tuple[str, str]]:
    """Every plugin file and pin with its state: ok, mismatch, missing (pinned, no file), unpinned."""
    pins = read_pins(plugins_dir)
    files = sorted(n for n in os.listdir(plugins_dir) if n.endswith(".py"))
    states = []
    for name in sorted(set(files) | set(pins)):
        if name not in pins:
            states.append((name, "unpinned"))
        elif name not in files:
            states.append((name, "missing"))
        else:
            try:
                ok = matches(read_plugin_file(plugins_dir, name), pins[name])
            except PinError:
                ok = False
            states.append((name, "ok" if ok else "mismatch"))
    return states
