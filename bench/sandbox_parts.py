"""What each part of a fresh sandbox costs: the launch a shell tool gets, whole and with one part left out.

The launch is bubblewrap, then ``prlimit`` (the rlimits), then ``setpriv`` (the tool uid, when run as root),
then the program (``/usr/bin/true``), with every namespace unshared and the seccomp filters loaded.  Each
variant takes one part away (or, for ``host nsswitch``, binds the host's own nsswitch.conf in the /etc view,
as before the view kept only the files and dns modules) and is timed in rounds alternated with the others,
so a noisy minute costs every variant alike.  Figures only: the parts left out here are what the sandbox
promises, and the differences say what each promise costs.

    python bench/sandbox_parts.py [--rounds 10] [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from machina import config
from machina.proc import Rlimits
from machina.sandbox import SandboxPolicy, resolve_policy
from machina.sandbox.launch import PRLIMIT, SETPRIV, prepare

#: The limits of a shell tool's call (their values do not change the cost; their presence adds prlimit).
LIMITS = Rlimits(cpu_sec=10, as_mb=1024, fsize_mb=64, nofile=256, nproc=64)
PROGRAM = ["/usr/bin/true"]


def without_option(argv: list[str], option: str, values: int = 0) -> list[str]:
    """``argv`` without every ``option`` and the ``values`` arguments after each."""
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg == option:
            skip = values
        else:
            out.append(arg)
    return out


def without_helper(argv: list[str], helper: str) -> list[str]:
    """``argv`` without the helper program ``helper`` and its options, up to and including its ``--``."""
    if helper not in argv:
        return argv
    start = argv.index(helper)
    return argv[:start] + argv[argv.index("--", start) + 1 :]


def etc_source_at(argv: list[str]) -> int:
    """Where in ``argv`` the host directory bound as the sandbox's /etc (the view) is named."""
    return next(i + 1 for i in range(len(argv) - 2) if argv[i] == "--ro-bind" and argv[i + 2] == "/etc")


def with_etc(argv: list[str], etc: str) -> list[str]:
    """``argv`` binding ``etc`` as the sandbox's /etc instead of the view."""
    out = list(argv)
    out[etc_source_at(out)] = etc
    return out


def host_nsswitch_etc(view: str, into: str) -> str:
    """A copy of the view with the host's nsswitch.conf in it."""
    shutil.copytree(view, into, symlinks=True)
    shutil.copyfile("/etc/nsswitch.conf", os.path.join(into, "nsswitch.conf"))
    return into


def variants(scratch: str) -> dict[str, Callable[[list[str]], list[str]]]:
    host_etc: list[str] = []

    def host_nsswitch(argv: list[str]) -> list[str]:
        if not host_etc:
            view = argv[etc_source_at(argv)]
            host_etc.append(host_nsswitch_etc(view, os.path.join(scratch, "etc")))
        return with_etc(argv, host_etc[0])

    return {
        "whole launch": lambda argv: argv,
        "without the network namespace": lambda argv: without_option(argv, "--unshare-net"),
        "without prlimit": lambda argv: without_helper(argv, PRLIMIT),
        "without setpriv": lambda argv: without_helper(argv, SETPRIV),
        "without seccomp": lambda argv: without_option(argv, "--add-seccomp-fd", 1),
        "with the host's nsswitch.conf": host_nsswitch,
    }


def time_one(policy: SandboxPolicy, change: Callable[[list[str]], list[str]]) -> float:
    launch = prepare(policy, PROGRAM, rlimits=LIMITS)  # the seccomp memfds are read once: a new launch per call
    try:
        argv = change(launch.argv)
        started = time.perf_counter()
        subprocess.run(argv, env=launch.env, pass_fds=launch.pass_fds, check=True)
        return (time.perf_counter() - started) * 1000
    finally:
        launch.finished()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20, help="calls of each variant per round")
    args = parser.parse_args()
    cfg = config.load(environ={"MACHINA_ENV_FILE": "/dev/null", "MACHINA_SECCOMP_ENABLE": "1"})
    policy = resolve_policy(cfg)
    if policy.bwrap is None:
        print("bubblewrap is not installed: no sandbox launch to take apart", file=sys.stderr)
        return 1
    print(f"uid {os.geteuid()}, load {os.getloadavg()[0]:.2f}; {args.rounds} rounds of {args.calls} calls each")
    with tempfile.TemporaryDirectory(prefix="machina-sandbox-parts-") as scratch:
        chosen = variants(scratch)
        if not policy.drops_privileges:
            del chosen["without setpriv"]  # not root: no drop to the tool uid, no setpriv
        samples: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(args.rounds):
            for name, change in chosen.items():
                samples[name] += [time_one(policy, change) for _ in range(args.calls)]
    whole = statistics.median(samples["whole launch"])
    for name, times in samples.items():
        p50 = statistics.median(times)
        print(f"{name:32} p50 {p50:6.2f} ms   min {min(times):6.2f} ms   {p50 - whole:+6.2f} ms against the whole")
    return 0


if __name__ == "__main__":
    sys.exit(main())
