"""What tool packs and goal packs share: where their manifests are, reading one, indexing by a unique key."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from machina.exitcodes import ExitCode, MachinaError

T = TypeVar("T")


class ManifestError(MachinaError):
    exit_code = ExitCode.DATAERR


def pack_manifests(builtin: str, root_dir: str | None) -> list[str]:
    """The built-in manifest, then each ``<root_dir>/<pack>/manifest.json`` in name order."""
    paths = [builtin]
    if root_dir and os.path.isdir(root_dir):
        for name in sorted(os.listdir(root_dir)):
            candidate = os.path.join(root_dir, name, "manifest.json")
            if os.path.isfile(candidate):
                paths.append(candidate)
    return paths


def read_manifest_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None


def index_unique(manifests: Iterable[str], read: Callable[[str], list[T]], key: Callable[[T], str]) -> dict[str, T]:
    """Every entry of every manifest by its key; a key declared twice is an error naming both files."""
    index: dict[str, T] = {}
    sources: dict[str, str] = {}
    for path in manifests:
        for spec in read(path):
            name = key(spec)
            if name in index:
                raise ManifestError(f"{path}: {name} is already declared by {sources[name]}")
            index[name], sources[name] = spec, path
    return index
