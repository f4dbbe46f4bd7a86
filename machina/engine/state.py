"""The run state, and transactions over it.

A run's state is a JSON document with two branches: ``inputs`` (the request's inputs, fixed for the run)
and ``outputs`` (each tool's latest successful output, by AID).  Its SHA-256 over the canonical form is the
*state digest* that run logs record and strict replay compares.

States are never modified in place.  A tool call runs inside a :class:`Transaction`: writes are staged,
and ``commit`` builds a new state that copies only the dicts on the written paths and shares everything
else with the old one (copy on write), returning the RFC 6902-style diff that the run log records.  A
transaction that is not committed (the tool failed, or anything raised) leaves no trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from machina.audit.canonical import canonical, copy_value, digest
from machina.manifests.goals import MISSING, format_pointer, resolve_pointer


class RunState:
    """An immutable snapshot of a run's state."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @classmethod
    def initial(cls, inputs: Mapping[str, Any]) -> RunState:
        return cls({"inputs": copy_value(dict(inputs)), "outputs": {}})

    @property
    def inputs(self) -> Mapping[str, Any]:
        return self._data["inputs"]

    @property
    def outputs(self) -> Mapping[str, Any]:
        return self._data["outputs"]

    def get(self, tokens: tuple[str, ...]) -> Any:
        """The value at a JSON Pointer's tokens, or ``MISSING``."""
        return resolve_pointer(self._data, tokens)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy to hand to code outside the engine."""
        return copy_value(dict(self._data))

    @cached_property
    def digest(self) -> str:
        return digest(self._data)

    def begin(self) -> Transaction:
        return Transaction(self)


class Transaction:
    """Staged writes over one state; ``commit`` once, or let it go (rollback)."""

    def __init__(self, base: RunState) -> None:
        self.base = base
        self._writes: list[tuple[tuple[str, ...], Any]] = []
        self._open = True

    def set(self, tokens: tuple[str, ...], value: Any) -> None:
        if not self._open:
            raise RuntimeError("transaction already finished")
        if not tokens:
            raise ValueError("cannot replace the whole state")
        canonical(value)  # refuse what the log and digests could not represent (NaN, non-JSON types) now
        self._writes.append((tokens, copy_value(value)))

    def commit(self) -> tuple[RunState, list[dict[str, Any]]]:
        """The new state and the diff that leads to it."""
        if not self._open:
            raise RuntimeError("transaction already finished")
        self._open = False
        data: Any = self.base._data
        diff = []
        for tokens, value in self._writes:
            op = "add" if resolve_pointer(data, tokens) is MISSING else "replace"
            data = _with(data, tokens, value)
            diff.append(_diff_op(op, tokens, value))
        return RunState(data), diff

    def rollback(self) -> None:
        self._open = False
        self._writes.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self.rollback()


def _with(node: Mapping[str, Any], tokens: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``node`` with ``value`` at ``tokens``; only the dicts on the path are copied."""
    head, rest = tokens[0], tokens[1:]
    copied = dict(node)
    if rest:
        child = node.get(head)
        copied[head] = _with(child if isinstance(child, Mapping) else {}, rest, value)
    else:
        copied[head] = value
    return copied


def _diff_op(op: str, tokens: tuple[str, ...], value: Any) -> dict[str, Any]:
    # The whole value: strict replay rebuilds a side-effecting tool's output from it (outputs are bounded by
    # the toolhost's reply size).
    return {"op": op, "path": format_pointer(tokens), "value": value}
