"""Plugin capabilities: what each declares, what it costs in tier, and what the sandbox then grants.

    capability   side effect (tier)   what the sandbox grants
    FILE_READ    fs_read (0)          open_read of files under the root (through the toolhost)
    FILE_WRITE   fs_write (1)         create_file/commit under the root (through the toolhost)
    MEMORY       memory_write (1)     memory streams read and append, embeddings
    NETWORK      network (2)          the host's network namespace and the ``net`` seccomp profile
    GPU          gpu (2)              the GPU device nodes, when present
    SHELL        shell (3)            new programs and processes (without it a seccomp layer refuses both)
    GENESIS      code (3)             nothing more: this suite has no Genesis interface for plugins

A plugin that declares nothing gets every capability (the earlier runtime's rule), so by default it is
refused: MACHINA_PLUGIN_ALLOWED_CAPS defaults to FILE_READ,MEMORY.
"""

from __future__ import annotations

from collections.abc import Iterable

ALL_CAPABILITIES = ("FILE_READ", "FILE_WRITE", "SHELL", "NETWORK", "MEMORY", "GENESIS", "GPU")

SIDE_EFFECTS = {
    "FILE_READ": "fs_read",
    "FILE_WRITE": "fs_write",
    "MEMORY": "memory_write",
    "NETWORK": "network",
    "GPU": "gpu",
    "SHELL": "shell",
    "GENESIS": "code",
}

BROKER_GRANTS = {
    "FILE_READ": ("fs_read",),
    "FILE_WRITE": ("fs_write",),
    "MEMORY": ("memory_read", "memory_write", "embed"),
}


def side_effects(caps: Iterable[str]) -> tuple[str, ...]:
    effects = sorted({SIDE_EFFECTS[c] for c in caps})
    return tuple(effects) or ("none",)


def grants(caps: Iterable[str]) -> frozenset[str]:
    return frozenset(g for c in caps for g in BROKER_GRANTS.get(c, ()))
