"""Genesis: tools written at run time (AID.GENESIS.WRITE_FILE / COMPILE_SHARED / LOAD_PLUGIN.v1).

A model-written plugin goes through three steps, each a tool call under the usual permission rules:

1. **write** puts the source in quarantine, ``plugins/genesis/<name>.py`` (256 KB at most, 32 KB with
   MACHINA_GENESIS_PROD_MODE).  Nothing there is ever loaded: the catalog reads ``plugins/*.py`` only.
2. **compile** checks it: byte-compiled; its ``MACHINA_PLUGIN`` declaration read like any plugin's, its
   capabilities within MACHINA_PLUGIN_ALLOWED_CAPS; with MACHINA_GENESIS_GUARD the AST guard
   (machina.plugins.guard); then its own acceptance test, ``MACHINA_GENESIS_TEST = {"inputs": {...},
   "expect": {...}}``, run in a fresh sandbox shaped by its capabilities (the output must hold ``expect``).
   What passed is recorded with its SHA-256 in ``plugins/genesis/<name>.checked.json``.
3. **load** copies exactly the checked bytes (same SHA-256, compared in constant time) to
   ``plugins/<name>.py`` and pins that hash in ``plugins/pins.json``; from then on it runs like every
   plugin: in the sandbox, with its declared capabilities only, re-verified on every call.  A plugin may
   implement a declared but unimplemented tool (the missing-tool path, AID.DEMO.MISSING_TOOL.v1), never
   replace an implemented one.

Nothing is enabled without the load call, which is tier 3 (the permission mode decides who approves it).
MACHINA_GENESIS_ENABLE=0 (the prod profile) refuses all three.  A breaker stops repeated failures: 3 failed
compiles or loads within 300 s close Genesis for 600 s.
"""

from __future__ import annotations

import ast
import contextlib
import hmac
import json
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from machina import toolapi
from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir, write_atomic
from machina.plugins.guard import guard_problems
from machina.plugins.loader import Plugin, PluginRefused, checked_plugin
from machina.plugins.pins import PLUGIN_NAME, digest, read_pins, write_pins
from machina.tools.base import ToolFailure

QUARANTINE = "genesis"
TEST_DECLARATION = "MACHINA_GENESIS_TEST"
MAX_SOURCE_BYTES = 256 * 1024
PROD_MAX_SOURCE_BYTES = 32 * 1024
BREAKER_FAILURES, BREAKER_WINDOW_S, BREAKER_COOLDOWN_S = 3, 300.0, 600.0


@dataclass(frozen=True)
class GenesisSettings:
    enabled: bool
    guard: bool
    prod_mode: bool
    allowed_caps: tuple[str, ...]

    @property
    def max_bytes(self) -> int:
        return PROD_MAX_SOURCE_BYTES if self.prod_mode else MAX_SOURCE_BYTES


class Breaker:
    """Opens after ``failures`` failures within ``window`` seconds and stays open ``cooldown`` seconds."""

    def __init__(self, clock: Clock, failures: int, window: float, cooldown: float) -> None:
        self.clock, self.failures, self.window, self.cooldown = clock, failures, window, cooldown
        self._recent: deque[float] = deque()
        self._open_until = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            left = self._open_until - self.clock.monotonic()
        if left > 0:
            raise ToolFailure(f"Genesis is paused after repeated failures: {left:.0f} s of cooldown left")

    def failed(self) -> None:
        with self._lock:
            now = self.clock.monotonic()
            self._recent.append(now)
            while self._recent and now - self._recent[0] > self.window:
                self._recent.popleft()
            if len(self._recent) >= self.failures:
                self._open_until = now + self.cooldown
                self._recent.clear()


# run_test(plugin, inputs) -> (status, output, error): the plugin run once in its sandbox.
TestRunner = Callable[[Plugin, dict[str, Any]], tuple[str, dict[str, Any], str]]


class Genesis:
    def __init__(
        self,
        plugins_dir: str,
        settings: GenesisSettings,
        run_test: TestRunner,
        implemented_aids: Callable[[], set[str]],
        refresh: Callable[[], object],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.plugins_dir = plugins_dir
        self.quarantine = os.path.join(plugins_dir, QUARANTINE)
        self.settings = settings
        self.run_test = run_test
        self.implemented_aids = implemented_aids  # built-ins and other plugins: a Genesis plugin never replaces one
        self.refresh = refresh
        self.breaker = Breaker(clock, BREAKER_FAILURES, BREAKER_WINDOW_S, BREAKER_COOLDOWN_S)
        self._lock = threading.Lock()

    # --- the three tools ----------------------------------------------------------------------------------

    def write(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self._open()
        file = _file_name(inputs["name"])
        data = inputs["source"].encode("utf-8")
        if len(data) > self.settings.max_bytes:
            mode = " (MACHINA_GENESIS_PROD_MODE)" if self.settings.prod_mode else ""
            raise ToolFailure(f"source is {len(data)} bytes; Genesis takes at most {self.settings.max_bytes}{mode}")
        with self._lock:
            ensure_dir(self.quarantine)
            write_atomic(os.path.join(self.quarantine, file), data, fsync=True)
            _remove(os.path.join(self.quarantine, file[:-3] + ".checked.json"))  # a new source is unchecked
        return {"name": file, "path": f"plugins/{QUARANTINE}/{file}", "bytes": len(data), "sha256": digest(data)}

    def compile(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self._open()
        file = _file_name(inputs["name"])
        data = self._quarantined(file)
        try:
            report = self._check(file, data)
        except ToolFailure:
            self.breaker.failed()
            raise
        with self._lock:
            write_atomic(self._checked_path(file), (json.dumps(report, sort_keys=True) + "\n").encode(), fsync=True)
        return report

    def load(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self._open()
        file = _file_name(inputs["name"])
        try:
            return self._load(file)
        except ToolFailure:
            self.breaker.failed()
            raise

    # --- steps ---------------------------------------------------------------------------------------------

    def _open(self) -> None:
        if not self.settings.enabled:
            raise ToolFailure(
                "Genesis is off (MACHINA_GENESIS_ENABLE=0, as in the prod profile)", status=toolapi.DENIED
            )
        self.breaker.check()

    def _check(self, file: str, data: bytes) -> dict[str, Any]:
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolFailure(f"{file} is not UTF-8 text") from None
        try:
            compile(source, f"plugins/{QUARANTINE}/{file}", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise ToolFailure(f"{file} does not compile: {exc}") from None
        plugin = self._declared(file, data)
        if self.settings.guard:
            problems = guard_problems(source, plugin.capabilities, file)
            if problems:
                raise ToolFailure(f"{file} refused by the Genesis guard: " + "; ".join(problems[:10]))
        test = _acceptance_test(source, file)
        invalid = plugin.spec.input_errors(test["inputs"])
        if invalid:
            raise ToolFailure(f"{file}: its acceptance test's inputs break its inputs_schema: {'; '.join(invalid[:5])}")
        status, output, error = self.run_test(plugin, test["inputs"])
        if status != toolapi.OK:
            raise ToolFailure(f"{file}: its acceptance test did not pass ({status}: {error[:300]})")
        missing = {k: v for k, v in test.get("expect", {}).items() if output.get(k) != v}
        if missing:
            raise ToolFailure(f"{file}: its acceptance test expected {missing!r}, got {output!r}"[:600])
        return {
            "name": file,
            "aid": plugin.spec.aid,
            "sha256": plugin.sha256,
            "capabilities": sorted(plugin.capabilities),
            "tier": plugin.spec.tier,
            "guard": self.settings.guard,
            "test_inputs": test["inputs"],
            "test_output": output,
            "checked": True,
        }

    def _declared(self, file: str, data: bytes) -> Plugin:
        try:
            plugin = checked_plugin(file, data, digest(data), self.settings.allowed_caps, self.plugins_dir)
        except PluginRefused as exc:
            raise ToolFailure(str(exc)) from None
        if plugin.spec.aid in self.implemented_aids():
            raise ToolFailure(f"{file}: {plugin.spec.aid} is already implemented; Genesis adds tools, never replaces")
        return plugin

    def _load(self, file: str) -> dict[str, Any]:
        data = self._quarantined(file)
        checked = self._checked(file)
        if not hmac.compare_digest(digest(data), str(checked.get("sha256", ""))):
            raise ToolFailure(f"{file} changed since it was compiled: run AID.GENESIS.COMPILE_SHARED.v1 again")
        plugin = self._declared(file, data)
        target = os.path.join(self.plugins_dir, file)
        with self._lock:
            if os.path.lexists(target):
                raise ToolFailure(f"plugins/{file} already exists: a Genesis plugin never overwrites a plugin")
            write_atomic(target, data, fsync=True)
            pins = read_pins(self.plugins_dir)
            pins[file] = plugin.sha256
            write_pins(self.plugins_dir, pins)
        self.refresh()
        return {
            "name": file,
            "aid": plugin.spec.aid,
            "sha256": plugin.sha256,
            "pinned": True,
            "tier": plugin.spec.tier,
            "tool": plugin.spec.listing(),  # what a caller needs to offer it (a Genesis run's menu)
        }

    # --- files ---------------------------------------------------------------------------------------------

    def _quarantined(self, file: str) -> bytes:
        path = os.path.join(self.quarantine, file)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ToolFailure(f"no Genesis source {file}: write it with AID.GENESIS.WRITE_FILE.v1 first") from None
        except OSError as exc:
            raise ToolFailure(f"{file}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
        if len(data) > self.settings.max_bytes:
            raise ToolFailure(f"{file} is over {self.settings.max_bytes} bytes")
        return data

    def _checked_path(self, file: str) -> str:
        return os.path.join(self.quarantine, file[:-3] + ".checked.json")

    def _checked(self, file: str) -> dict[str, Any]:
        try:
            with open(self._checked_path(file), encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            raise ToolFailure(f"{file} has not passed AID.GENESIS.COMPILE_SHARED.v1") from None
        return record if isinstance(record, dict) else {}


def _file_name(name: str) -> str:
    file = name if name.endswith(".py") else name + ".py"
    if not PLUGIN_NAME.fullmatch(file):
        raise ToolFailure(f"{name!r} is not a plugin name (letters, digits, _ . -)")
    return file


def _acceptance_test(source: str, file: str) -> dict[str, Any]:
    for node in ast.parse(source, filename=file).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == TEST_DECLARATION for t in node.targets
        ):
            try:
                test = ast.literal_eval(node.value)
            except ValueError:
                raise ToolFailure(f"{file}: {TEST_DECLARATION} must be a literal") from None
            if (
                isinstance(test, dict)
                and isinstance(test.get("inputs"), dict)
                and isinstance(test.get("expect", {}), dict)
            ):
                return test
            raise ToolFailure(f'{file}: {TEST_DECLARATION} must be {{"inputs": {{...}}, "expect": {{...}}}}')
    raise ToolFailure(f'{file}: no acceptance test ({TEST_DECLARATION} = {{"inputs": {{...}}, "expect": {{...}}}})')


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
