"""A job child with a fault switch, for the worker's crash tests: ``machina.worker.child`` with its
``fault_hook`` set.  A request's top-level ``"fault"`` key (kept by the queue as an unknown key) names what
the child does to itself before the engine sees the job:

``segv``       dereference NULL through ctypes (SIGSEGV)
``oom``        cap its address space (RLIMIT_AS) a little above what it uses, then allocate past it
``pause``      write its pid to ``<root>/faults/<job>.a<attempt>.pid`` and sleep (for a kill -9 from outside)
``hang``       start two sleepers (one in its own group, one in a new session), record all three pids in
               the pid file, and sleep forever
``garbage``    answer with a message that is not JSON
``exit``       exit with status 3
``slow``       write its pid to the same file as ``pause`` (the job has reached the child), sleep
               ``fault_s`` seconds (default 1), then run the job normally
``leave``      start the same two sleepers as ``hang``, record the pids, then run the job normally (and
               leave them behind when the child retires)
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import subprocess
import sys
import time
from typing import Any

from machina.worker import child

FD = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else -1


def _pid_file(message: dict[str, Any]) -> str:
    root = message["request"]["fault_root"]
    os.makedirs(os.path.join(root, "faults"), exist_ok=True)
    return os.path.join(root, "faults", f"{message['job']}.a{message['attempt']}.pid")


def _record(message: dict[str, Any], pids: list[int]) -> None:
    path = _pid_file(message)
    with open(path + ".tmp", "w") as handle:
        handle.write(" ".join(map(str, pids)))
    os.rename(path + ".tmp", path)


def fault(message: dict[str, Any]) -> None:
    kind = message["request"].get("fault")
    if kind == "segv":
        ctypes.string_at(0)
    elif kind == "oom":
        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[0]) * resource.getpagesize()
        limit = used + 64 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        hog = []
        while True:
            hog.append(bytearray(8 * 1024 * 1024))
    elif kind == "pause":
        _record(message, [os.getpid()])
        time.sleep(120)
    elif kind in ("hang", "leave"):
        same_group = subprocess.Popen(["sleep", "300"])
        own_session = subprocess.Popen(["sleep", "300"], start_new_session=True)
        _record(message, [os.getpid(), same_group.pid, own_session.pid])
        if kind == "hang":
            time.sleep(3600)
    elif kind == "garbage":
        os.write(FD, struct.pack("!i", 8) + b"not json")
        time.sleep(120)
    elif kind == "exit":
        os._exit(3)
    elif kind == "slow":
        _record(message, [os.getpid()])
        time.sleep(float(message["request"].get("fault_s", 1)))


if __name__ == "__main__":
    child.fault_hook = fault
    sys.exit(child.main())
