"""The no-bubblewrap launcher: the setup of a fallback sandbox, run as a program of its own (D17, issue 11).

Without bubblewrap a tool process is set up by hand: rlimits, the drop to the tool uid, no_new_privs, the
seccomp programs, death with its parent.  Doing that in ``preexec_fn`` -- between fork and exec -- is
unsafe in a threaded process such as the toolhost (the child may block forever on a lock another thread
held at fork time), so :func:`machina.sandbox.launch.prepare` starts this module instead:

    python -I -B -m machina.sandbox.fallback [--rlimit NAME=N]... [--uid U --gid G] [--seccomp-fd FD]...
        --parent PID -- COMMAND...

Single-threaded, it applies the limits, drops privileges (unless the command does that itself: a Python
executor), asks for SIGKILL when its parent dies, sets no_new_privs, loads each BPF program handed over as
a descriptor (layers stack) and execs COMMAND with the environment it was given.  Any failure exits 71
(EX_OSERR) before COMMAND runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import prctl

from machina.proc import Rlimits
from machina.sandbox.bpf import load_program, read_program
from machina.sandbox.drop import drop_privileges

EX_OSERR = 71
RLIMIT_NAMES = ("cpu_sec", "as_mb", "fsize_mb", "nofile", "nproc")


def arguments(
    command: list[str], parent: int, rlimits: Rlimits | None, uid: int | None, gid: int | None, seccomp_fds: list[int]
) -> list[str]:
    """The command line of this launcher for ``command`` (the inverse of :func:`main`'s parsing)."""
    args = [sys.executable, "-I", "-B", "-m", "machina.sandbox.fallback"]
    for name in RLIMIT_NAMES:
        value = getattr(rlimits, name, 0) if rlimits else 0
        if value:
            args.append(f"--rlimit={name}={value}")
    if uid is not None and gid is not None:
        args += [f"--uid={uid}", f"--gid={gid}"]
    args += [f"--seccomp-fd={fd}" for fd in seccomp_fds]
    return [*args, f"--parent={parent}", "--", *command]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="machina.sandbox.fallback")
    parser.add_argument("--rlimit", action="append", default=[])
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--seccomp-fd", type=int, action="append", default=[])
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        limits = {name: int(value) for name, value in (item.split("=", 1) for item in args.rlimit)}
        Rlimits(**limits).apply()
        if args.uid is not None:
            drop_privileges(args.uid, args.gid)
        prctl.set_pdeathsig(signal.SIGKILL)  # after the drop, which would clear it
        if os.getppid() != args.parent:  # the parent died before the line above took effect
            return EX_OSERR
        prctl.set_no_new_privs(True)
        for fd in args.seccomp_fd:
            load_program(read_program(fd))
        os.execvp(args.command[0], args.command)  # noqa: S606 - argv, never a shell: the tool itself
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"machina sandbox (no bubblewrap): cannot start {args.command[0]}: {exc}", file=sys.stderr)
    return EX_OSERR


if __name__ == "__main__":
    sys.exit(main())
