"""Saved utilities (AID.UTIL.SAVE/RUN/LIST/UPDATE/DELETE.v1): short Python or sh programs an agent keeps by
name and runs again later, each pinned by the SHA-256 of its code.

They live in ``state/utilities/`` (the suite's, out of every tool's reach): ``<name>.json`` holds the code
and its description, ``pins.json`` the SHA-256 each name must have.  A utility runs only when its code
still has the pinned hash (compared in constant time), only through AID.UTIL.RUN.v1, only in a fresh
sandbox like AID.CODE.EXEC.v1 (no network, never auto-fixed: what runs is exactly what was approved when
it was saved).  A caller may also name the ``sha256`` it expects, to be sure it runs what it reviewed.
Deleting moves the record to ``state/trash/utilities/``.

Saving and updating carry the code in their inputs, so an approval of either shows the code that will run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from typing import Any

from machina.fsutil import ensure_dir, write_atomic
from machina.tools.base import ToolFailure
from machina.tools.code import MAX_SOURCE_BYTES

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
PINS_FILE = "pins.json"
MAX_UTILITIES = 1000


def digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


class UtilityStore:
    def __init__(self, state_dir: str, *, fsync: bool = True) -> None:
        self.root = os.path.dirname(os.path.abspath(state_dir))
        self.dir = os.path.join(state_dir, "utilities")
        self.trash = os.path.join(state_dir, "trash", "utilities")
        self.fsync = fsync
        self._lock = threading.Lock()

    # --- the tools ------------------------------------------------------------------------------------------

    def save(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = self._name(inputs["name"])
        with self._lock:
            if os.path.exists(self._path(name)):
                raise ToolFailure(f"utility {name!r} exists: change it with AID.UTIL.UPDATE.v1")
            if len(self._names()) >= MAX_UTILITIES:
                raise ToolFailure(f"there are already {MAX_UTILITIES} utilities: delete some first")
            now = time.time()
            record = {
                "name": name,
                "lang": inputs.get("lang", "python"),
                "code": inputs["code"],
                "description": inputs.get("description", ""),
                "created": round(now, 3),
                "updated": round(now, 3),
            }
            return self._store(record)

    def update(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = self._name(inputs["name"])
        with self._lock:
            record = self._load(name)
            for key in ("code", "lang", "description"):
                if key in inputs:
                    record[key] = inputs[key]
            record["updated"] = round(time.time(), 3)
            return self._store(record)

    def delete(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = self._name(inputs["name"])
        with self._lock:
            self._load(name)
            ensure_dir(self.trash)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            kept = os.path.join(self.trash, f"{stamp}-{secrets.token_hex(4)}-{name}.json")
            os.rename(self._path(name), kept)
            pins = self._pins()
            pins.pop(name, None)
            self._write_pins(pins)
        return {"name": name, "deleted": True, "kept_as": os.path.relpath(kept, self.root)}

    def listing(self) -> dict[str, Any]:
        with self._lock:
            pins = self._pins()
            rows = []
            for name in self._names():
                try:
                    record = self._read(name)
                except ToolFailure as exc:
                    rows.append({"name": name, "pinned": False, "problem": str(exc)})
                    continue
                rows.append(
                    {
                        "name": name,
                        "lang": record["lang"],
                        "description": record["description"],
                        "sha256": digest(record["code"]),
                        "bytes": len(record["code"].encode("utf-8")),
                        "updated": record["updated"],
                        "pinned": hmac.compare_digest(digest(record["code"]), pins.get(name, "")),
                    }
                )
        return {"utilities": rows, "count": len(rows)}

    def pinned_code(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The record of a utility about to run, and its hash; ToolFailure when its code is not the pinned one."""
        name = self._name(inputs["name"])
        with self._lock:
            record = self._load(name)
            pinned = self._pins().get(name, "")
        actual = digest(record["code"])
        if not hmac.compare_digest(actual, pinned):
            raise ToolFailure(f"utility {name!r} does not match its pin (changed outside UTIL.UPDATE); not run")
        expected = inputs.get("sha256")
        if expected is not None and not hmac.compare_digest(actual, str(expected).lower()):
            raise ToolFailure(f"utility {name!r} is {actual}, not the sha256 asked for; not run")
        return record, actual

    # --- storage ------------------------------------------------------------------------------------------

    @staticmethod
    def _name(name: str) -> str:
        if not NAME.fullmatch(name):
            raise ToolFailure(f"{name!r} is not a utility name (a-z, 0-9 and _, starting with a letter, at most 64)")
        return name

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".json")

    def _names(self) -> list[str]:
        try:
            files = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(f[:-5] for f in files if f.endswith(".json") and NAME.fullmatch(f[:-5]))

    def _load(self, name: str) -> dict[str, Any]:
        if not os.path.exists(self._path(name)):
            raise ToolFailure(f"no utility {name!r} (AID.UTIL.LIST.v1 lists them)")
        return self._read(name)

    def _read(self, name: str) -> dict[str, Any]:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                record = json.loads(handle.read(4 * MAX_SOURCE_BYTES))
        except (OSError, ValueError) as exc:
            raise ToolFailure(f"utility {name!r} cannot be read: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("code"), str) or record.get("name") != name:
            raise ToolFailure(f"utility {name!r} is damaged")
        record.setdefault("lang", "python")
        record.setdefault("description", "")
        record.setdefault("updated", 0)
        return record

    def _store(self, record: dict[str, Any]) -> dict[str, Any]:
        code = record["code"]
        if len(code.encode("utf-8")) > MAX_SOURCE_BYTES or "\x00" in code:
            raise ToolFailure(f"code must be at most {MAX_SOURCE_BYTES} bytes, without NUL characters")
        if record["lang"] == "python":
            try:
                compile(code, f"<utility {record['name']}>", "exec", dont_inherit=True)
            except SyntaxError as exc:
                raise ToolFailure(f"the code does not compile (line {exc.lineno}: {exc.msg}); nothing saved") from None
        ensure_dir(self.dir)
        body = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        write_atomic(self._path(record["name"]), body.encode("utf-8"), fsync=self.fsync)
        pins = self._pins()
        pins[record["name"]] = digest(code)
        self._write_pins(pins)
        return {"name": record["name"], "lang": record["lang"], "sha256": pins[record["name"]], "pinned": True}

    def _pins(self) -> dict[str, str]:
        try:
            with open(os.path.join(self.dir, PINS_FILE), encoding="utf-8") as handle:
                doc = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # an unreadable pin file pins nothing: every utility then refuses to run
        pins = doc.get("pins") if isinstance(doc, dict) else None
        return {str(k): str(v) for k, v in pins.items()} if isinstance(pins, dict) else {}

    def _write_pins(self, pins: dict[str, str]) -> None:
        ensure_dir(self.dir)
        body = json.dumps({"version": 1, "pins": dict(sorted(pins.items()))}, indent=2) + "\n"
        write_atomic(os.path.join(self.dir, PINS_FILE), body.encode(), fsync=self.fsync)
