"""``validate_aid_refs`` and ``validate_docs_refs``: every AID named in code or docs is a real tool.

The canonical set is what the tool manifests declare: the built-in pack plus ``MACHINA_ROOT/toolpacks``.
A reference is a versioned AID (``AID.FILE.READ.v1``) or a capability pattern ending in ``*``
(``AID.FILE.*``), which must match at least one tool.  A renamed or removed tool therefore shows up as
every stale place that still names it, with the nearest real AID as a hint.

Not references: placeholders in prose (a segment such as ``X``, ``XXX``, ``NAME`` or ``EXAMPLE``:
``AID.NAME.v1``, ``AID.X.*``), any line that says ``aid-refs: ignore`` (an example in a docstring), and the
families whose tools exist only at run time (``AID.MCP.*``: the MCP bridge names them after the servers an
operator configures).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from machina.cli.common import bootstrap, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.manifests.tools import load_tools, toolpack_manifests
from machina.ops.paths import PACKAGE_DIR, checkout_dir, configured_root

AID_REF = re.compile(r"(?<![A-Za-z0-9_.])AID\.[A-Z0-9_]+(?:\.[A-Z0-9_]+)*(?:\.v[0-9]+\b|\.?\*)")
PLACEHOLDER_SEGMENTS = {"X", "XX", "XXX", "NAME", "EXAMPLE", "FOO", "BAR", "TOOL", "SOMETHING"}
IGNORE_MARKER = "aid-refs: ignore"
RUNTIME_FAMILIES = ("AID.MCP.",)  # served by machina.mcp from mcp_servers.json, in no manifest
CODE_SUFFIXES = (".py", ".json", ".sh", ".toml")
DOC_SUFFIXES = (".md", ".rst", ".txt")
SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache", "tests"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    ref: str
    hint: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.ref} is not a known tool{self.hint}"


def known_aids(toolpacks_dir: str | None) -> set[str]:
    return set(load_tools(toolpack_manifests(toolpacks_dir)))


def is_placeholder(ref: str) -> bool:
    segments = ref.rstrip("*").rstrip(".").split(".")[1:]
    return any(segment in PLACEHOLDER_SEGMENTS for segment in segments)


def is_known(ref: str, aids: set[str]) -> bool:
    if ref.startswith(RUNTIME_FAMILIES):
        return True
    if ref.endswith("*"):
        prefix = ref[:-1]
        return any(aid.startswith(prefix) for aid in aids)
    return ref in aids


def iter_files(paths: Iterable[Path], suffixes: tuple[str, ...]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(suffixes) or _is_man_page(name, dirpath):
                    yield Path(dirpath, name)


def _is_man_page(name: str, dirpath: str) -> bool:
    return os.path.basename(dirpath) == "man" and re.fullmatch(r".+\.[1-8]", name) is not None


def scan(files: Iterable[Path], aids: set[str]) -> list[Finding]:
    findings = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise MachinaError(f"{path}: {exc.strerror}", ExitCode.NOINPUT) from None
        for number, line in enumerate(text.splitlines(), start=1):
            if IGNORE_MARKER in line:
                continue
            for match in AID_REF.finditer(line.replace("\\-", "-").replace("\\&", "")):
                ref = match.group(0)
                if not is_known(ref, aids) and not is_placeholder(ref):
                    close = difflib.get_close_matches(ref, sorted(aids), n=1)
                    findings.append(Finding(str(path), number, ref, f" (did you mean {close[0]}?)" if close else ""))
    return findings


def _default_code_paths(goalpacks: str | None) -> list[Path]:
    paths = [PACKAGE_DIR]
    checkout = checkout_dir()
    if checkout is not None:
        paths += [p for p in (checkout / "scripts", checkout / "policies", checkout / "bench") if p.is_dir()]
    if goalpacks and os.path.isdir(goalpacks):
        paths.append(Path(goalpacks))
    return paths


def _default_doc_paths() -> list[Path]:
    checkout = checkout_dir()
    if checkout is None:
        return []
    candidates = [checkout / "README.md", checkout / "docs", checkout / "man"]
    return [p for p in candidates if p.exists()]


def _run(kind: str, paths: tuple[str, ...], root: str | None, suffixes: tuple[str, ...]) -> int:
    cfg = bootstrap(f"validate_{kind}_refs", {"MACHINA_ROOT": os.path.abspath(root)} if root else None)
    machina_root = configured_root(cfg)
    aids = known_aids(machina_root.toolpacks if machina_root else None)
    if paths:
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise MachinaError(f"no such file or directory: {', '.join(missing)}", ExitCode.NOINPUT)
        targets = [Path(p) for p in paths]
    elif kind == "aid":
        targets = _default_code_paths(machina_root.goalpacks if machina_root else None)
    else:
        targets = _default_doc_paths()
    files = list(iter_files(targets, suffixes))
    findings = scan(files, aids)
    for finding in findings:
        click.echo(str(finding))
    verdict = f"{len(findings)} unknown AID reference(s)" if findings else "all AID references are known tools"
    click.echo(f"{verdict} ({len(files)} files, {len(aids)} tools)", err=True)
    return ExitCode.FAILURE if findings else ExitCode.OK


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@root_option
def validate_aid_refs(paths: tuple[str, ...], root: str | None) -> int:
    """Check that every AID named in code matches a tool manifest (read-only).

    PATHS default to the machina package, the checkout's scripts/, policies/ and bench/, and
    MACHINA_ROOT/goalpacks.  Exit status: 0 all known, 1 unknown AIDs found (listed on stdout as
    FILE:LINE: AID), 66 a PATH does not exist.
    """
    return _run("aid", paths, root, CODE_SUFFIXES)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@root_option
def validate_docs_refs(paths: tuple[str, ...], root: str | None) -> int:
    """Check that every AID named in the docs matches a tool manifest (read-only).

    PATHS default to the checkout's README.md, docs/ and man/.  Exit status as validate_aid_refs.
    """
    return _run("docs", paths, root, DOC_SUFFIXES)
