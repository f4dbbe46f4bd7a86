"""The unit files of systemd/, and copies of them runnable from this checkout.

The shipped units name ``@BINDIR@`` and ``@LIBEXECDIR@`` (``make install`` substitutes them).  For checks,
the copies point ``ExecStart=`` at the checkout's ``bin/`` and ``scripts/``, which exist on the test machine
(``systemd-analyze verify`` rejects a missing executable).
"""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent.parent
UNIT_DIR = CHECKOUT / "systemd"
DAEMONS = (
    "machina-enqueued.service",
    "machina-worker@.service",
    "machina-toolhost.service",
    "machina-embed.service",
    "machina-autonomic.service",
    "machina-telegram.service",
)
# systemd-analyze security --offline: the ceilings (the toolhost must create namespaces for bwrap).
# The units that start sandboxes (bubblewrap needs namespaces and @mount) score higher, within this bound.
EXPOSURE_CEILING = {"machina-toolhost.service": 3.0, "machina-worker@.service": 3.0, "machina-embed.service": 3.0}
DEFAULT_CEILING = 2.0


def unit_files() -> list[Path]:
    return sorted(p for p in UNIT_DIR.iterdir() if p.suffix in (".service", ".socket", ".target", ".timer"))


def render(text: str, bindir: Path = CHECKOUT / "bin", libexecdir: Path = CHECKOUT / "scripts") -> str:
    return text.replace("@BINDIR@", str(bindir)).replace("@LIBEXECDIR@", str(libexecdir))


def render_all(dest: Path, **kw: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for unit in unit_files():
        target = dest / unit.name
        target.write_text(render(unit.read_text(), **kw))
        out.append(target)
    return out


def directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value (systemd keys repeat; configparser would keep only the last)."""
    result: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            result.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        result.setdefault(section, {}).setdefault(key.strip(), []).append(value.strip())
    return result


def seconds(value: str) -> float:
    """A systemd time span as used in our units: "30", "30s", "5min", "1h"."""
    for suffix, factor in (("min", 60), ("ms", 0.001), ("s", 1), ("h", 3600)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)
