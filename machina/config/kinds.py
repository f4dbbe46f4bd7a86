"""Value kinds for configuration variables: each parses a raw string and says what it expects.

A kind never guesses: ``parse`` either returns a typed value or raises ``ValueError`` whose text completes
the sentence "expected ..." in the error the operator sees.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Kind:
    """How one variable's raw text becomes a value."""

    def parse(self, raw: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def expects(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def render(self, value: Any) -> str:
        """The value written back as an operator would type it."""
        if value is None:
            return ""
        return str(value)

    def redact(self, raw: str) -> str:
        """The raw text as an error message may quote it (kinds that can carry a credential hide it)."""
        return raw


@dataclass(frozen=True)
class Bool(Kind):
    def parse(self, raw: str) -> bool:
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(self.expects())

    def expects(self) -> str:
        return "0 or 1 (also true/false, yes/no, on/off)"

    def render(self, value: Any) -> str:
        return "1" if value else "0"


@dataclass(frozen=True)
class Int(Kind):
    """An integer within [minimum, maximum]; ``unit`` is part of the message (ms, bytes, s)."""

    minimum: int | None = 0
    maximum: int | None = None
    unit: str = ""

    def parse(self, raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError(self.expects())
        return _within(int(text), self.minimum, self.maximum, self.expects())

    def expects(self) -> str:
        return _range_text(f"an integer in {self.unit}" if self.unit else "an integer", self.minimum, self.maximum)


@dataclass(frozen=True)
class Float(Kind):
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(self.expects()) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(self.expects())
        return _within(value, self.minimum, self.maximum, self.expects())

    def expects(self) -> str:
        return _range_text("a number", self.minimum, self.maximum)


def _within(value: Any, minimum: Any, maximum: Any, expects: str) -> Any:
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(expects)
    return value


def _range_text(what: str, minimum: Any, maximum: Any) -> str:
    if minimum is not None and maximum is not None:
        return f"{what} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{what} >= {minimum}"
    if maximum is not None:
        return f"{what} <= {maximum}"
    return what


@dataclass(frozen=True)
class Choice(Kind):
    """One of a fixed set; matched case-insensitively and returned in its declared spelling."""

    choices: tuple[str, ...]

    def parse(self, raw: str) -> str:
        text = raw.strip()
        for choice in self.choices:
            if text.lower() == choice.lower():
                return choice
        raise ValueError(self.expects())

    def expects(self) -> str:
        return "one of " + ", ".join(self.choices)


@dataclass(frozen=True)
class Text(Kind):
    """Free text; ``pattern`` (a full-match regular expression) restricts it where a shape is known."""

    pattern: str | None = None
    description: str = "text"

    def parse(self, raw: str) -> str:
        if self.pattern is not None and not re.fullmatch(self.pattern, raw):
            raise ValueError(self.expects())
        if "\x00" in raw or "\n" in raw:
            raise ValueError(self.expects() + " on one line")
        return raw

    def expects(self) -> str:
        return self.description


@dataclass(frozen=True)
class List(Kind):
    """Comma-separated items, blanks dropped; each item must full-match ``item_pattern``."""

    item_pattern: str = r"[^,\s]+"
    description: str = "a comma-separated list"

    def parse(self, raw: str) -> tuple[str, ...]:
        items = tuple(part.strip() for part in raw.split(",") if part.strip())
        for item in items:
            if not re.fullmatch(self.item_pattern, item):
                raise ValueError(f"{self.expects()} ({item!r} is not valid)")
        return items

    def expects(self) -> str:
        return self.description

    def render(self, value: Any) -> str:
        return ",".join(value or ())


OVERFLOW_UID = 65534


@dataclass(frozen=True)
class Uids(List):
    """A list of uids allowed as peers of a socket service; never the overflow uid.

    Under the units' ``PrivateUsers=yes`` every uid but root and ``machina`` shows up as 65534 in
    SO_PEERCRED, so allowing 65534 would allow every user of the machine (defect D5 of issue 11).
    """

    item_pattern: str = r"[0-9]+"
    description: str = "a comma-separated list of uids"

    def parse(self, raw: str) -> tuple[str, ...]:
        items = super().parse(raw)
        if any(int(item) == OVERFLOW_UID for item in items):
            raise ValueError(
                f"{self.expects()} without {OVERFLOW_UID}: it is the overflow uid every unmapped user appears as"
                " under PrivateUsers=yes, so it would let everyone in"
            )
        return items


@dataclass(frozen=True)
class Path(Kind):
    """A file-system path; absolute when ``absolute`` (services must not depend on their cwd)."""

    absolute: bool = True

    def parse(self, raw: str) -> str:
        text = raw.strip()
        if not text or "\x00" in text:
            raise ValueError(self.expects())
        if self.absolute and not os.path.isabs(text):
            raise ValueError(self.expects())
        return os.path.normpath(text)

    def expects(self) -> str:
        return "an absolute path" if self.absolute else "a path"


@dataclass(frozen=True)
class Command(Kind):
    """A command line split like a shell would split words, but never run through a shell."""

    def parse(self, raw: str) -> tuple[str, ...]:
        import shlex

        try:
            argv = tuple(shlex.split(raw))
        except ValueError as exc:
            raise ValueError(f"{self.expects()} ({exc})") from None
        if not argv:
            raise ValueError(self.expects())
        return argv

    def expects(self) -> str:
        return "a command line (program and arguments, shell-quoted; no shell is used)"

    def render(self, value: Any) -> str:
        import shlex

        return shlex.join(value) if value else ""


_PASSWORD_IN_QUERY = re.compile(r"(?i)([?&]password=)[^&]*")
_PASSWORD_IN_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^/@?#]*@")


def redact_url(url: str) -> str:
    """``url`` with any password (``user:PASSWORD@`` or ``?password=``) replaced by ``***``: what may be logged."""
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_USERINFO.sub(r"\1:***@", url))


@dataclass(frozen=True)
class QueueUrl(Kind):
    """Where the queue lives: ``file:`` (the file queue under MACHINA_ROOT), or a libpq ``postgresql://`` URL
    without a password (it comes from PGPASSFILE, ~/.pgpass or the secret MACHINA_QUEUE_PASSWORD, so the URL
    itself may be shown and logged).  ``file:`` parses to None."""

    def parse(self, raw: str) -> str | None:
        text = raw.strip()
        if text in ("file:", "file://"):
            return None
        if "\x00" in text or "\n" in text or re.search(r"\s", text):
            raise ValueError(self.expects())
        if not re.match(r"(?i)postgres(ql)?://", text):
            raise ValueError(self.expects())
        if _PASSWORD_IN_USERINFO.match(text) or _PASSWORD_IN_QUERY.search(text):
            raise ValueError(
                f"{self.expects()}; the URL holds a password: put it in MACHINA_QUEUE_PASSWORD, PGPASSFILE or "
                "~/.pgpass instead (the URL is shown and logged)"
            )
        return text

    def expects(self) -> str:
        return "file: or a postgresql:// URL (libpq) without a password"

    def redact(self, raw: str) -> str:
        return redact_url(raw)
