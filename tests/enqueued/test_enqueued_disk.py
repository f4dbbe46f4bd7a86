"""A full or read-only disk under the daemon: 503, nothing queued, nothing half-written, and back to
normal once there is room again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.disk_support import tmpfs_unavailable

KIT = Path(__file__).with_name("enqueued_diskkit.py")
CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_full_then_read_only_disk_gives_503_and_queues_nothing(tmp_path: Path) -> None:
    why_not = tmpfs_unavailable()
    if why_not:
        pytest.skip(why_not)
    mount, logs = tmp_path / "mnt", tmp_path / "logs"
    mount.mkdir()
    logs.mkdir()
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, str(KIT), str(mount), str(logs)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=CHECKOUT,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    before = report["before"]["body"]["queued"]
    assert report["before"]["status"] == 200
    for stage in ("full", "full_small"):
        answer = report[stage]
        assert answer["status"] == 503, answer
        assert "ENOSPC" in answer["body"]["error"] and "nothing was queued" in answer["body"]["error"]
        assert answer["retry_after"] == "5"
    assert report["full_listing"] == {"inbox": [before], "tmp": []}
    assert (report["full_health"], report["full_stats"]) == (200, 200)
    # Room again: the same request_id makes a real job (the refused try left no dedup entry behind).
    assert report["after"]["status"] == 200 and "deduplicated" not in report["after"]["body"]
    assert report["readonly"]["status"] == 503 and "EROFS" in report["readonly"]["body"]["error"]
    assert report["readonly_listing"]["tmp"] == []
    assert sorted(report["readonly_listing"]["inbox"]) == sorted([before, report["after"]["body"]["queued"]])
    assert report["readonly_job"]["state"] == "inbox"
    assert 'machina_http_requests_total{code="503",endpoint="enqueue"} 3.0' in report["metrics"]
    assert report["stop_rc"] == 0, report["log"]
    refusals = [line for line in report["log"].splitlines() if "POST /enqueue -> 503" in line]
    assert len(refusals) == 3 and "request_id=r-full" in refusals[1]  # logged under the client's request_id
