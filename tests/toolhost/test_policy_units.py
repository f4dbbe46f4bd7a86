"""Permissions, leases, idempotency and capability narrowing, with an injected clock (no sleeping)."""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from pathlib import Path

import pytest

from machina.clock import FakeClock
from machina.manifests.tools import EFFECT_TIERS, load_tools, toolpack_manifests
from machina.toolhost.enqueue import covered, narrow
from machina.toolhost.idempotency import IdempotencyCache, InFlight, Mismatch, fingerprint
from machina.toolhost.leases import LeaseError, LeaseStore, inputs_digest
from machina.toolhost.permissions import ALLOW, ASK, DENY, MODES, Permissions
from machina.toolhost.runners import BUILTIN_RUNNERS, MANIFEST_ONLY, POOL

# --- permissions ---------------------------------------------------------------------------------------------

MODE_MATRIX = {
    "open": [ALLOW, ALLOW, ALLOW, ALLOW],
    "standard": [ALLOW, ALLOW, ASK, ASK],
    "supervised": [ALLOW, ASK, ASK, ASK],
    "locked": [ALLOW, DENY, DENY, DENY],
}


@pytest.mark.parametrize("mode", sorted(MODE_MATRIX))
def test_mode_matrix(mode: str) -> None:
    permissions = Permissions(mode)
    assert [permissions.decide("AID.X.v1", tier) for tier in range(4)] == MODE_MATRIX[mode]
    assert set(MODES) == set(MODE_MATRIX)


def test_overrides_replace_the_mode_and_the_strictest_match_wins() -> None:
    permissions = Permissions.from_config(
        "standard", ("AID.SHELL.*=allow", "AID.SHELL.EXEC.v1=deny", "AID.NET.*=ask", "AID.NOOP.v1=deny", "*=allow")
    )
    assert permissions.decide("AID.SHELL.EXEC.v1", 3) == DENY  # deny beats allow
    assert permissions.decide("AID.SHELL.OTHER.v1", 3) == ALLOW  # the override replaces "ask"
    assert permissions.decide("AID.NET.HTTP_GET.v1", 2) == ASK  # ask beats allow (the * pattern)
    assert permissions.decide("AID.NOOP.v1", 0) == DENY
    assert permissions.decide("AID.FILE.READ.v1", 0) == ALLOW
    assert Permissions.from_config("locked", ("AID.FILE.WRITE.v1=allow",)).decide("AID.FILE.WRITE.v1", 1) == ALLOW


def test_ask_is_never_a_yes_by_default() -> None:
    for mode in MODES:
        for tier in range(4):
            assert Permissions(mode).decide("AID.X.v1", tier) in (ALLOW, ASK, DENY)
    assert Permissions("standard").decide("AID.SHELL.EXEC.v1", 3) == ASK


# --- leases --------------------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> LeaseStore:
    leases = LeaseStore(str(tmp_path / "state" / "leases.json"), clock)
    leases.load()
    return leases


def test_lease_is_single_use(store: LeaseStore) -> None:
    token, lease = store.issue("AID.SHELL.EXEC.v1", 3, 30_000, issued_by=0)
    assert store.consume(token, "AID.SHELL.EXEC.v1", 3).lease_id == lease.lease_id
    with pytest.raises(LeaseError, match="unknown or already used"):
        store.consume(token, "AID.SHELL.EXEC.v1", 3)


def test_lease_expires(store: LeaseStore, clock: FakeClock) -> None:
    token, _ = store.issue("AID.SHELL.EXEC.v1", 3, 30_000, issued_by=0)
    clock.advance(30.0)
    with pytest.raises(LeaseError, match="expired"):
        store.consume(token, "AID.SHELL.EXEC.v1", 3)
    assert store.count() == 0


def test_lease_for_another_tool_or_a_lower_tier_is_refused_and_kept(store: LeaseStore) -> None:
    token, _ = store.issue("AID.FILE.WRITE.v1", 1, 30_000, issued_by=0)
    with pytest.raises(LeaseError, match=r"lease is for AID\.FILE\.WRITE\.v1, not AID\.SHELL\.EXEC\.v1"):
        store.consume(token, "AID.SHELL.EXEC.v1", 1)
    with pytest.raises(LeaseError, match="covers tier 1"):
        store.consume(token, "AID.FILE.WRITE.v1", 3)
    store.consume(token, "AID.FILE.WRITE.v1", 1)


def test_wildcard_lease_covers_any_tool_up_to_its_tier(store: LeaseStore) -> None:
    token, _ = store.issue("*", 2, 30_000, issued_by=0)
    with pytest.raises(LeaseError, match=r"covers tier 2; AID\.SHELL\.EXEC\.v1 is tier 3"):
        store.consume(token, "AID.SHELL.EXEC.v1", 3)
    assert store.count() == 1, "refused for too high a tier: kept"
    spent = store.consume(token, "AID.NET.HTTP_GET.v1", 2)  # exactly its tier
    assert (spent.aid, spent.tier) == ("*", 2)
    lower, _ = store.issue("*", 2, 30_000, issued_by=0)
    assert store.consume(lower, "AID.FILE.WRITE.v1", 1).tier == 2  # below its tier
    assert store.count() == 0


def test_inputs_digest_is_the_canonical_json_of_the_aid_and_inputs() -> None:
    expected = hashlib.sha256(b'{"aid":"AID.X.v1","inputs":{"a":1,"b":"\xc3\xa9"}}').hexdigest()
    assert inputs_digest("AID.X.v1", {"b": "\u00e9", "a": 1}) == expected
    assert inputs_digest("AID.X.v1", {"a": 1}) != inputs_digest("AID.Y.v1", {"a": 1})


def test_a_lease_bound_to_one_call_is_refused_and_kept_for_other_inputs(store: LeaseStore) -> None:
    ls = {"cmd": ["ls", "data"]}
    token, lease = store.issue(
        "AID.SHELL.EXEC.v1", 3, 30_000, issued_by=0, inputs_digest=inputs_digest("AID.SHELL.EXEC.v1", ls)
    )
    assert lease.public()["inputs_digest"] == inputs_digest("AID.SHELL.EXEC.v1", ls)
    for other in ({"cmd": ["rm", "-rf", "data"]}, {"cmd": ["ls", "data"], "extra": 1}, {}, {"x": float("nan")}):
        with pytest.raises(LeaseError, match=r"one call of AID\.SHELL\.EXEC\.v1 with other inputs"):
            store.consume(token, "AID.SHELL.EXEC.v1", 3, other)
    with pytest.raises(LeaseError, match="other inputs"):
        store.consume(token, "AID.SHELL.EXEC.v1", 3)  # no inputs presented: not the bound call
    assert store.count() == 1
    assert store.consume(token, "AID.SHELL.EXEC.v1", 3, {"cmd": ["ls", "data"]}).lease_id == lease.lease_id
    assert store.count() == 0


def test_a_bound_lease_survives_a_restart_still_bound(store: LeaseStore, clock: FakeClock) -> None:
    bound = inputs_digest("AID.FILE.WRITE.v1", {"path": "data/a", "content": "x"})
    token, _ = store.issue("AID.FILE.WRITE.v1", 1, 30_000, issued_by=0, inputs_digest=bound)
    reopened = LeaseStore(store.path, clock)
    reopened.load()
    with pytest.raises(LeaseError, match="other inputs"):
        reopened.consume(token, "AID.FILE.WRITE.v1", 1, {"path": "data/b", "content": "x"})
    reopened.consume(token, "AID.FILE.WRITE.v1", 1, {"content": "x", "path": "data/a"})


def test_a_lease_file_without_digests_still_loads(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "leases.json"
    store = LeaseStore(str(path), clock)
    store.load()
    token, _ = store.issue("*", 1, 30_000, issued_by=0)
    doc = json.loads(path.read_text())
    for item in doc["leases"]:
        del item["inputs_digest"]  # a file an earlier toolhost wrote
    path.write_text(json.dumps(doc))
    reopened = LeaseStore(str(path), clock)
    reopened.load()
    reopened.consume(token, "AID.NOOP.v1", 0, {"anything": True})


def test_a_malformed_inputs_digest_is_refused_at_issue(store: LeaseStore) -> None:
    for bad in ("abc", "A" * 64, "g" * 64, 7):
        with pytest.raises(LeaseError, match="64 lowercase hex digits"):
            store.issue("AID.NOOP.v1", 0, 30_000, issued_by=0, inputs_digest=bad)  # type: ignore[arg-type]
    assert store.count() == 0


def test_forged_tokens_are_refused_without_telling_why(store: LeaseStore) -> None:
    token, lease = store.issue("*", 3, 30_000, issued_by=0)
    for forged in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        f"mlease_{lease.lease_id}_",
        "mlease_x_y",
        "nope",
        "",
    ):
        with pytest.raises(LeaseError) as caught:
            store.consume(forged, "AID.NOOP.v1", 0)
        assert str(caught.value) in ("unknown or already used lease", "not a lease token")
    store.consume(token, "AID.NOOP.v1", 0)


def test_leases_survive_a_restart_and_only_hashes_are_stored(
    tmp_path: Path, store: LeaseStore, clock: FakeClock
) -> None:
    token, _ = store.issue("AID.SHELL.EXEC.v1", 3, 60_000, issued_by=1000)
    stored = Path(store.path).read_text()
    assert token.rsplit("_", 1)[1] not in stored
    assert Path(store.path).stat().st_mode & 0o777 == 0o600
    reopened = LeaseStore(store.path, clock)
    reopened.load()
    assert reopened.consume(token, "AID.SHELL.EXEC.v1", 3).issued_by == 1000
    again = LeaseStore(store.path, clock)
    again.load()
    with pytest.raises(LeaseError):
        again.consume(token, "AID.SHELL.EXEC.v1", 3)  # spent before the restart: spent after it


def test_a_corrupt_lease_file_voids_every_lease(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "leases.json"
    path.write_text('{"version": 1, "leases": [{"lease_id": ')
    leases = LeaseStore(str(path), clock)
    leases.load()
    assert leases.count() == 0
    assert (tmp_path / "leases.json.corrupt").exists()
    assert "unreadable" in caplog.text


def test_gc_removes_only_expired_leases(store: LeaseStore, clock: FakeClock) -> None:
    store.issue("*", 1, 1_000, issued_by=0)
    keep, _ = store.issue("*", 1, 60_000, issued_by=0)
    clock.advance(2.0)
    assert store.gc() == 1 and store.count() == 1
    store.consume(keep, "AID.NOOP.v1", 0)


def test_concurrent_consumers_spend_a_lease_once(store: LeaseStore) -> None:
    token, _ = store.issue("*", 3, 60_000, issued_by=0)
    wins: list[int] = []

    def consume(i: int) -> None:
        try:
            store.consume(token, "AID.NOOP.v1", 0)
            wins.append(i)
        except LeaseError:
            pass

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


# --- idempotency ---------------------------------------------------------------------------------------------


def test_repeated_key_returns_the_stored_reply(clock: FakeClock) -> None:
    cache = IdempotencyCache(60_000, clock)
    fp = fingerprint("AID.NOOP.v1", {"a": 1})
    assert cache.begin(0, "k", fp, wait_s=1) is None
    cache.finish(0, "k", {"ok": True, "n": 1}, keep=True)
    assert cache.begin(0, "k", fp, wait_s=1) == {"ok": True, "n": 1}
    assert cache.begin(1000, "k", fp, wait_s=1) is None, "keys belong to one uid"
    with pytest.raises(Mismatch):
        cache.begin(0, "k", fingerprint("AID.NOOP.v1", {"a": 2}), wait_s=1)
    clock.advance(61)
    assert cache.begin(0, "k", fp, wait_s=1) is None, "expired"


def test_a_call_that_did_not_run_is_not_kept(clock: FakeClock) -> None:
    cache = IdempotencyCache(60_000, clock)
    fp = fingerprint("AID.NOOP.v1", {})
    assert cache.begin(0, "k", fp, wait_s=1) is None
    cache.finish(0, "k", {"status": "approval_required"}, keep=False)
    assert cache.begin(0, "k", fp, wait_s=1) is None


def test_a_repeat_waits_for_the_first_call() -> None:
    cache = IdempotencyCache(60_000)
    fp = fingerprint("AID.NOOP.v1", {})
    assert cache.begin(0, "k", fp, wait_s=1) is None
    seen: list[object] = []
    waiter = threading.Thread(target=lambda: seen.append(cache.begin(0, "k", fp, wait_s=10)))
    waiter.start()
    cache.finish(0, "k", {"first": True}, keep=True)
    waiter.join(10)
    assert seen == [{"first": True}]


def test_d13_a_repeat_never_runs_a_call_still_in_flight() -> None:
    cache = IdempotencyCache(60_000)
    fp = fingerprint("AID.SHELL.EXEC.v1", {"cmd": ["rm", "x"]})
    assert cache.begin(0, "k", fp, wait_s=1) is None  # the first call runs, and runs long
    with pytest.raises(InFlight, match="still running"):
        cache.begin(0, "k", fp, wait_s=0.01)
    cache.finish(0, "k", {"first": True}, keep=True)
    assert cache.begin(0, "k", fp, wait_s=0.01) == {"first": True}


def test_d13_an_entry_in_flight_is_never_evicted(clock: FakeClock) -> None:
    cache = IdempotencyCache(60_000, clock, max_entries=2)
    fp = fingerprint("AID.NOOP.v1", {})
    assert cache.begin(0, "running", fp, wait_s=1) is None
    for n in range(5):  # finished calls push the table past its bound
        assert cache.begin(0, f"done-{n}", fp, wait_s=1) is None
        cache.finish(0, f"done-{n}", {"n": n}, keep=True)
    with pytest.raises(InFlight):
        cache.begin(0, "running", fp, wait_s=0.01)
    assert cache.begin(0, "done-0", fp, wait_s=1) is None, "the oldest finished entry was evicted"


class _CountingEntries(collections.OrderedDict):  # type: ignore[type-arg]
    """The cache's table, counting the entries its eviction looks at."""

    looked_at = 0

    def items(self):  # type: ignore[no-untyped-def]
        for item in super().items():
            self.looked_at += 1
            yield item


def test_eviction_of_a_full_table_looks_at_the_oldest_entries_only(clock: FakeClock) -> None:
    cache = IdempotencyCache(60_000, clock, max_entries=1000)
    table = _CountingEntries()
    cache._entries = table
    fp = fingerprint("AID.NOOP.v1", {})
    assert cache.begin(0, "running", fp, wait_s=1) is None  # the oldest entry is in flight: skipped, kept
    for n in range(1000):
        assert cache.begin(0, f"done-{n}", fp, wait_s=1) is None
        cache.finish(0, f"done-{n}", {"n": n}, keep=True)
    table.looked_at = 0
    for n in range(1000, 1100):  # a full table: each call evicts the oldest finished entry
        assert cache.begin(0, f"done-{n}", fp, wait_s=1) is None
        cache.finish(0, f"done-{n}", {"n": n}, keep=True)
    assert len(table) == 1000
    # Per call: expiry peeks at the front entry once, eviction passes the one in flight and drops the next.
    # A pass over the whole table would have looked at 100,000.
    assert table.looked_at <= 100 * 3, f"the cache looked at {table.looked_at} entries for 100 calls"
    assert cache.begin(0, "done-101", fp, wait_s=1) == {"n": 101}
    assert cache.begin(0, "done-100", fp, wait_s=1) is None, "the 101 oldest finished entries are gone"
    with pytest.raises(InFlight):
        cache.begin(0, "running", fp, wait_s=0.01)


def test_fingerprint_ignores_key_order() -> None:
    assert fingerprint("A", {"x": 1, "y": [1, 2]}) == fingerprint("A", json.loads('{"y": [1, 2], "x": 1}'))


# --- capability narrowing of QUEUE.ENQUEUE -------------------------------------------------------------------


def test_pattern_coverage() -> None:
    assert covered("AID.FILE.READ.v1", ["AID.FILE.*"])
    assert covered("AID.FILE.*", ["AID.*"])
    assert not covered("AID.*", ["AID.FILE.*"])
    assert not covered("*", ["AID.*"])
    assert covered("AID.X.v1", ["*"])


@pytest.mark.parametrize(
    "caller, requested, expected",
    [
        (None, {"allowed_tools": ["*"]}, {"allowed_tools": ["*"]}),
        ({"allowed_tools": ["AID.FILE.*"]}, None, {"allowed_tools": ["AID.FILE.*"]}),
        ({"allowed_tools": ["AID.FILE.*"]}, {"allowed_tools": ["*"]}, {"allowed_tools": ["AID.FILE.*"]}),
        ({"allowed_tools": ["AID.FILE.*"]}, {"allowed_tools": ["AID.SHELL.EXEC.v1"]}, {"allowed_tools": []}),
        (
            {"allowed_tools": ["AID.FILE.*", "AID.NOOP.v1"]},
            {"allowed_tools": ["AID.FILE.READ.v1", "AID.SHELL.*"]},
            {"allowed_tools": ["AID.FILE.READ.v1"]},
        ),
        (
            {"blocked_tools": ["AID.SHELL.*"]},
            {"allowed_tools": ["*"], "blocked_tools": ["AID.NET.*"]},
            {"allowed_tools": ["*"], "blocked_tools": ["AID.SHELL.*", "AID.NET.*"]},
        ),
        ({"blocked_tools": ["AID.SHELL.*"]}, None, {"blocked_tools": ["AID.SHELL.*"]}),
    ],
)
def test_a_job_cannot_start_a_job_that_may_do_more(caller, requested, expected) -> None:
    assert narrow(caller, requested) == expected


# --- the built-in table --------------------------------------------------------------------------------------

GRANT_EFFECTS = {
    "fs_read": "fs_read",
    "fs_write": "fs_write",
    "memory_read": "memory_read",
    "memory_write": "memory_write",
    "queue_write": "queue_write",
    "proc_read": "proc_read",
}


def test_every_builtin_has_an_implementation_and_grants_that_follow_its_manifest() -> None:
    manifests = load_tools(toolpack_manifests(None))
    assert set(manifests) >= MANIFEST_ONLY
    assert set(BUILTIN_RUNNERS) == set(manifests) - MANIFEST_ONLY
    for aid, runner in BUILTIN_RUNNERS.items():
        effects = set(manifests[aid].side_effects)
        granted = {GRANT_EFFECTS[g] for g in runner.grants if g in GRANT_EFFECTS}
        assert granted <= effects, aid
        assert runner.network == ("network" in effects), aid
        assert runner.gpu == ("gpu" in effects), aid
        if runner.path == POOL:
            assert not ({"shell", "process", "privileged", "code"} & effects), aid
    assert set(EFFECT_TIERS) >= {e for spec in manifests.values() for e in spec.side_effects}


def test_the_inputs_opened_ahead_are_string_paths_of_a_reading_tool() -> None:
    manifests = load_tools(toolpack_manifests(None))
    declared = {aid: runner.reads for aid, runner in BUILTIN_RUNNERS.items() if runner.reads}
    assert {"AID.ERROR_SCAN.v1", "AID.FILE.READ.v1", "AID.FILE.DIFF.v1"} <= set(declared)
    for aid, names in declared.items():
        assert "fs_read" in BUILTIN_RUNNERS[aid].grants and BUILTIN_RUNNERS[aid].path == POOL, aid
        properties = manifests[aid].inputs_schema["properties"]
        for name in names:
            assert properties[name]["type"] == "string", (aid, name)
