"""A full, read-only or size-limited file system: a clear error, nothing half-written, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from queue_shell import env_for, run_shell

from tests.disk_support import tmpfs_unavailable

KIT = Path(__file__).with_name("queue_diskkit.py")
CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_full_then_read_only_file_system(tmp_path: Path) -> None:
    why_not = tmpfs_unavailable()
    if why_not:
        pytest.skip(why_not)
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, str(KIT), str(mount)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CHECKOUT,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    before = report["before"]["name"]
    # Full: a typed error naming ENOSPC, and nothing half-written in inbox/ or tmp/.
    assert report["full"] == {"ok": False, "errno": "ENOSPC", "message": report["full"]["message"]}
    assert report["full_small"]["ok"] is False and report["full_small"]["errno"] == "ENOSPC"
    assert report["full_listing"] == {"inbox": [before], "tmp": []}
    # A result that cannot be written leaves the claim in place, to be completed once there is room.
    assert report["full_complete"] == {"ok": False, "errno": "ENOSPC"}
    assert report["full_complete_state"] == "processing" and report["after_complete_state"] == "done"
    assert report["full_cli"]["rc"] == 73 and "ENOSPC" in report["full_cli"]["stderr"]
    assert report["full_cli"]["stdout"] == ""
    # Space back: the same request_id makes a real job (the failed try left no dedup entry behind).
    assert report["after"]["ok"] is True and report["after"]["deduplicated"] is False
    # Read-only: refused with EROFS, the queue is still readable, the jobs are all there.
    assert report["readonly"]["ok"] is False and report["readonly"]["errno"] == "EROFS"
    assert report["readonly_listing"]["tmp"] == []
    assert sorted(report["readonly_jobs"]) == sorted([before, report["after"]["name"]])  # "running" is done
    assert report["readonly_cli"]["rc"] == 73 and "EROFS" in report["readonly_cli"]["stderr"]


def test_file_size_limit_gives_efbig_and_leaves_nothing(machina_root: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE (``ulimit -f``) below the request's size: exit 73, EFBIG, empty inbox and tmp."""
    request = tmp_path / "big.json"
    request.write_text(json.dumps({"goal_id": "goal.BIG.v1", "inputs": {"blob": "y" * 20000}}))
    proc = run_shell(f"ulimit -f 8; exec machina enqueue {request}", env=env_for(machina_root))
    assert proc.returncode == 73, proc.stderr
    assert "EFBIG" in proc.stderr and proc.stdout == ""
    assert os.listdir(machina_root / "queue" / "inbox") == []
    assert os.listdir(machina_root / "queue" / "tmp") == []
    small = run_shell('echo \'{"goal_id":"goal.SMALL.v1"}\' | machina enqueue', env=env_for(machina_root))
    assert small.returncode == 0 and small.stdout.startswith("p5000_rq_")
