"""The sandbox every tool process runs in, and ``sandboxed_run()``, its Python API.

What a sandboxed process gets (bubblewrap present, the normal case):

* every namespace unshared (mount, pid, ipc, uts, cgroup; network too unless the profile is ``net``);
* a fresh root holding read-only binds of the system (``/usr`` and the merged-usr links, a short list of
  ``/etc`` files: never ``/etc/shadow``), the Python it needs when it is a Python executor, a new ``/proc``
  of its own pid namespace, a minimal ``/dev`` and a private, size-capped ``/tmp``.  Nothing of
  ``MACHINA_ROOT`` is mounted: a tool receives the files its grant allows as open file descriptors from
  the toolhost (see :mod:`machina.toolhost.broker`);
* a cleared environment: PATH, LANG, HOME, TMPDIR and what the tool is explicitly given;
* ``--die-with-parent`` and ``--new-session``; rlimits (CPU, AS, FSIZE, NOFILE, NPROC, set by ``prlimit``
  inside the sandbox so that nothing runs between fork and exec in the toolhost); ``no_new_privs``;
* the seccomp-BPF profile (:mod:`machina.sandbox.seccomp`) when ``MACHINA_SECCOMP_ENABLE=1``;
* an unprivileged uid.  When the toolhost runs as root, bubblewrap runs as root (so it can bind the
  interpreter wherever it is installed) with every capability dropped except CAP_SETUID/CAP_SETGID/
  CAP_SETPCAP, and
  the tool drops to ``MACHINA_TOOL_UID``/``MACHINA_TOOL_GID`` before any tool code runs (``setpriv`` for an
  external program, :func:`machina.sandbox.drop.drop_privileges` inside a Python executor).  When the
  toolhost is not root, bubblewrap makes an unprivileged user namespace and forbids nested ones
  (``--disable-userns``); the tool keeps the toolhost's uid.

Without bubblewrap (``MACHINA_BWRAP_REQUIRED=1`` refuses this; the prod profile logs a warning; dev falls
back silently) the same process runs without namespaces but keeps the cleared environment, rlimits,
no_new_privs, the seccomp profile and the uid drop, plus a seccomp rule refusing setsid/setpgid so that the
timeout's process-group kill reaches everything it started.  That setup runs in a launcher program of its
own (:mod:`machina.sandbox.fallback`), never between fork and exec of the threaded toolhost.  What it
loses: the private view of the file system (the uid's permissions are all that guard it) and of other
processes; RLIMIT_NPROC is left out when it would count the daemon's own tasks (see
:func:`machina.sandbox.launch.nproc_where_it_counts`).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from machina.sandbox.launch import Launch, prepare
    from machina.sandbox.policy import SandboxPolicy, SandboxUnavailable, resolve_policy
    from machina.sandbox.run import sandboxed_run

__all__ = ["Launch", "SandboxPolicy", "SandboxUnavailable", "prepare", "resolve_policy", "sandboxed_run"]

_EXPORTS = {
    "Launch": "machina.sandbox.launch",
    "prepare": "machina.sandbox.launch",
    "SandboxPolicy": "machina.sandbox.policy",
    "SandboxUnavailable": "machina.sandbox.policy",
    "resolve_policy": "machina.sandbox.policy",
    "sandboxed_run": "machina.sandbox.run",
}


def __getattr__(name: str) -> Any:
    """Exports load on first use: an executor inside a sandbox imports only what it needs (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'machina.sandbox' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
