"""Run inside a private mount namespace (unshare --mount): a working root on a 2 MiB tmpfs, then a
FILE.WRITE that does not fit: a large one (written by the executor through a descriptor) and, with the
disk filled, a small one (written by the toolhost in one request).  Prints one JSON object of results.
Used by test_tools.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from machina.root import init_root
from machina.testing.toolhost import running_toolhost


def main(mountpoint: str) -> None:
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mountpoint], check=True)
    root = os.path.join(mountpoint, "root")
    init_root(root)
    os.makedirs(os.path.join(root, "data"))
    with open(os.path.join(root, "data", "keep.txt"), "w") as handle:
        handle.write("the old content")
    results = {}
    with running_toolhost(root, env={"MACHINA_PERMISSION_MODE": "open"}) as host:
        big = {"path": "data/keep.txt", "content": "x" * (3 * 1024 * 1024), "overwrite": True}
        results["big"] = host.client.call("AID.FILE.WRITE.v1", big).to_wire()
        filler = os.path.join(mountpoint, "filler")
        with open(filler, "wb") as handle:
            free = os.statvfs(mountpoint)
            handle.write(b"\0" * max(0, free.f_bavail * free.f_frsize - 64 * 1024))
        inline = {"path": "data/keep.txt", "content": "y" * 200_000, "overwrite": True}
        results["inline"] = host.client.call("AID.FILE.WRITE.v1", inline).to_wire()
        os.unlink(filler)
        results["small"] = host.client.call("AID.FILE.WRITE.v1", {"path": "data/new.txt", "content": "fits"}).to_wire()
    with open(os.path.join(root, "data", "keep.txt")) as handle:
        results["kept"] = handle.read()
    results["files"] = sorted(os.listdir(os.path.join(root, "data")))
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
