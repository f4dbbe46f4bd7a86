"""Whether a manifest's JSON Schema is itself a valid JSON Schema, remembered by content.

Checking a schema against the 2020-12 metaschema (``check_schema``) walks ``$dynamicRef`` chains: about a
millisecond a schema, four fifths of loading the catalog.  A job child loads the catalog when it starts,
and its worker has checked the same manifests a moment before, so the worker hands the child the digests
of the schemas it found valid (the ``init`` message) and the child checks only the others (a manifest
edited since).  The check is a pure function of the schema's content, so a digest stands for the schema.
Nothing else is skipped: each pack is still validated against its pack schema, in every process.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from machina.audit.canonical import digest

_DIGEST = re.compile(r"[0-9a-f]{64}")

#: Digests (hex SHA-256 of the canonical JSON) of the schemas known to pass ``check_schema``.
_checked: set[str] = set()


def check_schema(schema: Any) -> None:
    """``jsonschema.Draft202012Validator.check_schema``, once per distinct schema; raises SchemaError."""
    try:
        key: str | None = digest(schema)
    except (TypeError, ValueError):  # NaN or infinity (json.load reads them): checked, never remembered
        key = None
    if key is not None and key in _checked:
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    if key is not None:
        _checked.add(key)


def checked_digests() -> list[str]:
    """What this process has found valid, for a job child's ``init`` message."""
    return sorted(_checked)


def trust_checked(digests: Any) -> None:
    """Take the digests a worker found valid (its child's ``init``, so untrusted in shape): ValueError, and
    nothing taken, unless ``digests`` is a list of hex SHA-256 digests."""
    if not isinstance(digests, list):
        raise ValueError(f"not a list of schema digests: {type(digests).__name__}")
    bad = [key for key in digests if not isinstance(key, str) or not _DIGEST.fullmatch(key)]
    if bad:
        raise ValueError(f"not a schema digest: {str(bad[0])[:80]!r}")
    _checked.update(digests)
