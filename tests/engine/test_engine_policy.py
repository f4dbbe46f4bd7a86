"""The external policy driver: hardening, every failure falling back, control modes, patches, the breaker.

The drivers here are real programs started the way production starts them (python3 scripts under the
script root); what they did is read from the run log and from files they leave behind.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from engine_support import ERROR_SCAN, events

PICK_FIRST = """
    payload = json.load(open(sys.argv[1]))
    print("<PICK><SID0001><END>")
"""


def blended(**extra: object) -> dict[str, object]:
    return {**ERROR_SCAN, "control_mode": "BLENDED", **extra}


def selections(result) -> list[dict]:
    return events(result.log_path, "selection")


def test_blended_acts_on_the_policy(make_engine, driver) -> None:
    cmd = driver(
        "first.py",
        "print('<PICK><SID0001><END>' if not json.load(open(sys.argv[1]))['completed'] else '<PICK><SID0002><END>')\n",
    )
    result = make_engine(MACHINA_POLICY_CMD=cmd).run(blended())
    assert result.status == "done"
    assert [s["source"] for s in selections(result)] == ["POLICY", "POLICY"]
    assert selections(result)[0]["raw"] == "<PICK><SID0001><END>\n"  # raw: exactly what the driver printed


def test_the_example_driver_runs_the_error_scan(make_engine, root: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "policies" / "first_pending.py"
    (root / "policies" / "first_pending.py").write_text(example.read_text())
    result = make_engine(MACHINA_POLICY_CMD="python3 policies/first_pending.py").run(blended())
    assert result.status == "done"
    assert {s["source"] for s in selections(result)} == {"POLICY"}


def test_payload_is_private_environment_cleared_limits_applied(make_engine, driver, witness) -> None:
    cmd = driver(
        "probe.py",
        textwrap.dedent("""
        import resource, stat
        path = sys.argv[1]
        seen = {
            "payload": json.load(open(path)),
            "file_mode": stat.S_IMODE(os.stat(path).st_mode),
            "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "argv0": sys.executable,
            "path": path,
        }
        """)
        + witness.python("json.dumps(seen).encode()")
        + """print("<PICK><SID0001><END>")\n""",
    )
    os.environ["MACHINA_API_TOKEN"] = "s3cret-token-value"  # in the worker's environment, never the driver's
    try:
        engine = make_engine(MACHINA_POLICY_CMD=cmd, MACHINA_POLICY_RLIMIT_NOFILE="37")
        engine.run(blended(inputs={"input_path": "data/app.log", "pattern": "WARN"}))
    finally:
        del os.environ["MACHINA_API_TOKEN"]
    report = witness.messages()[0]  # the first step's
    seen = json.loads(report)
    assert (seen["file_mode"], seen["dir_mode"]) == (0o600, 0o700)
    assert set(seen["env"]) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE", "PWD"}  # bubblewrap sets PWD
    assert "s3cret-token-value" not in json.dumps(seen)
    assert seen["cwd"] == seen["env"]["HOME"] == seen["env"]["TMPDIR"] == "/tmp"
    assert seen["nofile"] == 37
    payload = seen["payload"]
    assert {"goal_digest", "state_digest", "control_mode", "inputs", "menu"} <= payload.keys()
    assert payload["control_mode"] == "BLENDED" and payload["inputs"]["pattern"] == "WARN"
    assert payload["menu"][0] == {
        "sid": "SID0001",
        "aid": "AID.ERROR_SCAN.v1",
        "name": "error_scan",
        "tags": ["tag.log", "tag.error", "tag.scan"],
    }
    assert not os.path.exists(os.path.dirname(seen["path"]))  # the private directory is removed after the call


def test_d1_the_policy_driver_runs_sandboxed_away_from_the_root(make_engine, driver, root: Path, witness) -> None:
    """The driver sees its scripts read-only and nothing of MACHINA_ROOT: no data, no queue, no scripts to edit."""
    (root / "data" / "secret.txt").write_text("job data")
    probe = textwrap.dedent(f"""
        def attempt(what, path):
            try:
                if what == "read":
                    open(path).read()
                elif what == "list":
                    os.listdir(path)
                else:
                    open(path, "a").write("# rewritten\\n")
                return "ok"
            except OSError as exc:
                return type(exc).__name__
        seen = {{
            "data": attempt("read", {str(root / "data" / "secret.txt")!r}),
            "queue": attempt("list", {str(root / "queue" / "inbox")!r}),
            "script": attempt("write", __file__),
            "self": attempt("read", __file__),
            "pid": os.getpid(),
        }}
        """)
    cmd = driver("probe.py", probe + witness.python("json.dumps(seen).encode()") + "print('<PICK><SID0001><END>')\n")
    script = (root / "policies" / "probe.py").read_text()
    make_engine(MACHINA_POLICY_CMD=cmd).run(blended())
    seen = json.loads(witness.messages()[0])
    assert seen["self"] == "ok", "the driver reads its own script"
    assert (seen["data"], seen["queue"]) == ("FileNotFoundError", "FileNotFoundError"), seen
    assert seen["script"] in ("OSError", "PermissionError"), seen  # read-only (EROFS) or not its file
    assert seen["pid"] < 10, "a pid namespace of its own"
    assert (root / "policies" / "probe.py").read_text() == script


FAILURES = {
    "garbage": ("print('I think SID0001 is best')\n", {}, "garbage"),
    "brace_trick": ("print('<PICK><SID0001><INP>{\"a\": 1}}</INP><END>')\n", {}, "garbage"),
    "two_replies": ("print('<NOOP><END><NOOP><END>')\n", {}, "garbage"),
    "unknown_sid": ("print('<PICK><SID0042><END>')\n", {}, "unknown_sid"),
    "not_utf8": ("sys.stdout.buffer.write(b'<PICK><SID0001><END>\\xff')\n", {}, "garbage"),
    "exit_status": ("print('<PICK><SID0001><END>'); sys.exit(3)\n", {}, "exit_status"),
    "killed": ("import signal; os.kill(os.getpid(), signal.SIGKILL)\n", {}, "exit_status"),
    "timeout": (
        "import time; time.sleep(30)\n",
        {"MACHINA_POLICY_TIMEOUT_MS": "300"},
        "timeout",
    ),
    "oversized": (
        "print('<PICK><SID0001><INP>' + json.dumps({'pattern': 'x' * 5000}) + '</INP><END>')\n",
        {"MACHINA_POLICY_STDOUT_MAX": "1024"},
        "oversized",
    ),
    "cpu_limit": (
        "while True: pass\n",
        {"MACHINA_POLICY_RLIMIT_CPU_SEC": "1", "MACHINA_POLICY_TIMEOUT_MS": "20000"},
        "exit_status",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_every_driver_failure_falls_back_to_the_heuristic(make_engine, driver, case: str) -> None:
    body, env, code = FAILURES[case]
    result = make_engine(MACHINA_POLICY_CMD=driver(f"{case}.py", body), **env).run(blended())
    assert result.status == "done"
    first = selections(result)[0]
    assert (first["source"], first["fallback_reason"], first["policy"]["error"]) == ("HEURISTIC", code, code)
    assert first["chosen"]["aid"] == "AID.ERROR_SCAN.v1"


def test_a_disallowed_executable_is_never_started(make_engine, root: Path, witness) -> None:
    script = root / "policies" / "p.sh"
    script.write_text(witness.shell() + "echo '<PICK><SID0001><END>'\n")
    # bash is allowed by default; narrow the list to python3 and it is refused before anything runs.
    result = make_engine(MACHINA_POLICY_CMD="bash policies/p.sh", MACHINA_POLICY_ALLOWED_EXE="python3").run(blended())
    assert selections(result)[0]["fallback_reason"] == "exe_not_allowed"
    assert "not in MACHINA_POLICY_ALLOWED_EXE" in selections(result)[0]["policy"]["detail"]
    assert witness.messages() == []
    assert result.status == "done"
    make_engine(MACHINA_POLICY_CMD="bash policies/p.sh").run(blended())
    assert witness.messages(), "allowed, the same script does report: the check above can fail"


def test_an_allowed_name_that_is_a_symlink_to_another_program_is_refused(make_engine, root, tmp_path) -> None:
    fake = tmp_path / "python3"
    fake.symlink_to("/bin/cat")  # named python3, is cat: the canonical name decides
    (root / "policies" / "p.py").write_text("print('<NOOP><END>')\n")
    result = make_engine(MACHINA_POLICY_CMD=f"{fake} policies/p.py").run(blended())
    assert selections(result)[0]["fallback_reason"] == "exe_not_allowed"


def test_a_lone_program_under_the_script_root_may_run_if_its_name_is_allowed(make_engine, root: Path) -> None:
    program = root / "policies" / "decide"
    program.write_text("#!/bin/sh\necho '<NOOP><END>'\n")
    program.chmod(0o755)
    refused = make_engine(MACHINA_POLICY_CMD="policies/decide").run(blended())
    assert selections(refused)[0]["fallback_reason"] == "exe_not_allowed"
    allowed = make_engine(MACHINA_POLICY_CMD="policies/decide", MACHINA_POLICY_ALLOWED_EXE="decide").run(blended())
    assert (allowed.status, selections(allowed)[0]["source"]) == ("noop", "POLICY")


def test_a_script_outside_the_script_root_is_refused(make_engine, tmp_path: Path, witness) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(witness.python() + "print('<NOOP><END>')\n")
    result = make_engine(MACHINA_POLICY_CMD=f"{sys.executable} {outside}").run(blended())
    assert selections(result)[0]["fallback_reason"] == "script_not_allowed"
    assert witness.messages() == [] and result.status == "done"


def test_a_symlink_in_the_script_root_pointing_outside_is_refused(
    make_engine, root: Path, tmp_path: Path, witness
) -> None:
    outside = tmp_path / "evil.py"
    outside.write_text(witness.python() + "print('<NOOP><END>')\n")
    (root / "policies" / "innocent.py").symlink_to(outside)
    result = make_engine(MACHINA_POLICY_CMD=f"{sys.executable} policies/innocent.py").run(blended())
    assert selections(result)[0]["fallback_reason"] == "script_not_allowed"
    assert witness.messages() == []


def test_dot_dot_out_of_the_script_root_is_refused(make_engine, root: Path, tmp_path: Path) -> None:
    (root / "escape.py").write_text("print('<NOOP><END>')\n")
    result = make_engine(MACHINA_POLICY_CMD=f"{sys.executable} policies/../escape.py").run(blended())
    assert selections(result)[0]["fallback_reason"] == "script_not_allowed"


def test_interpreter_options_are_refused(make_engine) -> None:
    result = make_engine(MACHINA_POLICY_CMD=f"{sys.executable} -c print('<NOOP><END>')").run(blended())
    assert selections(result)[0]["fallback_reason"] == "script_not_allowed"


def test_a_configured_script_root_is_honoured(make_engine, tmp_path: Path) -> None:
    elsewhere = tmp_path / "approved"
    elsewhere.mkdir()
    (elsewhere / "p.py").write_text("print('<NOOP><END>')\n")
    cmd = f"{sys.executable} {elsewhere}/p.py"
    result = make_engine(MACHINA_POLICY_CMD=cmd, MACHINA_POLICY_ALLOWED_SCRIPT_ROOT=str(elsewhere)).run(blended())
    assert (result.status, result.reason) == ("noop", "selector_noop")
    assert selections(result)[0]["source"] == "POLICY"


def test_fallback_only_never_starts_the_policy(make_engine, driver, witness) -> None:
    cmd = driver("marker.py", witness.python() + "print('<PICK><SID0001><END>')\n")
    engine = make_engine(MACHINA_POLICY_CMD=cmd)
    result = engine.run({**ERROR_SCAN, "control_mode": "FALLBACK_ONLY"})
    assert result.status == "done"
    assert witness.messages() == []
    assert {s["source"] for s in selections(result)} == {"HEURISTIC"}
    assert all("policy" not in s for s in selections(result))
    engine.run(blended())  # the same driver does start in BLENDED: the check above can fail
    assert witness.messages()


def test_without_a_policy_the_default_mode_is_fallback_only(make_engine) -> None:
    result = make_engine().run(ERROR_SCAN)
    assert events(result.log_path, "start")[0]["control_mode"] == "FALLBACK_ONLY"


def test_with_a_policy_the_default_mode_is_blended(make_engine, driver) -> None:
    result = make_engine(MACHINA_POLICY_CMD=driver("p.py", PICK_FIRST)).run(ERROR_SCAN)
    assert events(result.log_path, "start")[0]["control_mode"] == "BLENDED"


def test_shadow_policy_logs_the_policy_but_acts_on_the_fallback(make_engine, driver) -> None:
    cmd = driver("report_first.py", "print('<PICK><SID0002><END>')\n")
    result = make_engine(MACHINA_POLICY_CMD=cmd).run({**ERROR_SCAN, "control_mode": "SHADOW_POLICY"})
    assert result.status == "done"
    first = selections(result)[0]
    assert first["policy"]["raw"] == "<PICK><SID0002><END>\n"
    assert (first["source"], first["fallback_reason"]) == ("HEURISTIC", "shadow")
    assert first["chosen"]["aid"] == "AID.ERROR_SCAN.v1"
    assert events(result.log_path, "tool")[0]["aid"] == "AID.ERROR_SCAN.v1"


def test_policy_only_without_a_policy_fails(make_engine) -> None:
    result = make_engine().run({**ERROR_SCAN, "control_mode": "POLICY_ONLY"})
    assert (result.status, result.reason) == ("failed", "policy_not_configured")


def test_policy_only_counts_bad_picks_as_invalid(make_engine, driver) -> None:
    # The report cannot run before the scan (its findings binding is required): every pick is invalid.
    cmd = driver("report_first.py", "print('<PICK><SID0002><END>')\n")
    result = make_engine(MACHINA_POLICY_CMD=cmd).run({**ERROR_SCAN, "control_mode": "POLICY_ONLY"})
    assert (result.status, result.reason) == ("breaker", "max_invalid_picks")
    invalid = events(result.log_path, "invalid_pick")
    assert len(invalid) == 3  # max_invalid_picks = 2 for goal.ERROR_SCAN.v1
    assert "needs /outputs/AID.ERROR_SCAN.v1" in invalid[0]["reason"]
    assert not events(result.log_path, "tool")


def test_policy_noop_and_ask_sup_end_the_run(make_engine, driver) -> None:
    noop = make_engine(MACHINA_POLICY_CMD=driver("n.py", "print('<NOOP><END>')\n")).run(blended())
    ask = make_engine(MACHINA_POLICY_CMD=driver("a.py", "print('  <ASK_SUP><END>\\n')\n")).run(blended())
    assert (noop.status, noop.reason) == ("noop", "selector_noop")
    assert (ask.status, ask.reason) == ("asked", "selector_ask_sup")


@pytest.mark.parametrize(
    "reply",
    [
        '<PICK><SID0001><INP>{"pattern": "WARN"}</INP><END>',
        "<PICK><SID0001><INP64>eyJwYXR0ZXJuIjogIldBUk4ifQ==</INP64><END>",
    ],
)
def test_an_input_patch_changes_the_tool_inputs(make_engine, driver, reply: str) -> None:
    cmd = driver("patch.py", f"print({reply!r} if not json.load(open(sys.argv[1]))['completed'] else '<NOOP><END>')\n")
    result = make_engine(MACHINA_POLICY_CMD=cmd).run(blended())
    scan = events(result.log_path, "tool")[0]
    assert scan["inputs"]["pattern"] == "WARN"
    assert scan["diff"][0]["value"]["matches"] == 1


RESERVED = [
    '<PICK><SID0001><INP>{"_capabilities": {"allowed_tools": ["*"]}}</INP><END>',
    '<PICK><SID0001><INP>{"pattern": "x", "nested": {"_system": 1}}</INP><END>',
    "<PICK><SID0001><INP64>eyJfbWV0YSI6IDF9</INP64><END>",  # {"_meta": 1}
]


@pytest.mark.parametrize("reply", RESERVED)
def test_an_input_patch_cannot_touch_underscore_keys(make_engine, driver, reply: str) -> None:
    cmd = driver("reserved.py", f"print({reply!r})\n")
    blended_run = make_engine(MACHINA_POLICY_CMD=cmd).run(blended())
    first = selections(blended_run)[0]
    assert (first["fallback_reason"], first["source"]) == ("reserved_key", "HEURISTIC")
    assert blended_run.status == "done"
    only = make_engine(MACHINA_POLICY_CMD=cmd).run({**ERROR_SCAN, "control_mode": "POLICY_ONLY"})
    assert only.status == "breaker"
    for run in (blended_run, only):
        for tool in events(run.log_path, "tool"):
            assert not any(key.startswith("_") for key in tool["inputs"])
            assert "nested" not in tool["inputs"]


def test_breaker_opens_after_n_failures_and_closes_after_the_cooldown(make_engine, driver, root, clock, witness):
    starts: list[bytes] = []

    def started() -> int:
        starts.extend(witness.messages())
        return len(starts)

    script = root / "policies" / "flaky.py"
    cmd = driver("flaky.py", witness.python() + "print('garbage')\n")
    engine = make_engine(
        MACHINA_POLICY_CMD=cmd, MACHINA_POLICY_BREAKER_FAILURES="2", MACHINA_POLICY_BREAKER_COOLDOWN_MS="60000"
    )

    first = engine.run(blended())  # step 1 fails, step 2 fails and opens the breaker
    assert first.status == "done"
    assert started() == 2
    opened = events(first.log_path, "policy_breaker")
    assert [(e["state"], e["failures"], e["step"]) for e in opened] == [("open", 2, 2)]

    second = engine.run(blended())  # open: the policy is not started at all
    assert started() == 2
    assert {s["fallback_reason"] for s in selections(second)} == {"breaker_open"}
    only = engine.run({**ERROR_SCAN, "control_mode": "POLICY_ONLY"})
    assert (only.status, only.reason) == ("breaker", "policy_breaker_open")

    clock.advance(59.9)
    engine.run(blended())
    assert started() == 2  # still cooling down

    clock.advance(0.2)  # half-open: one more try, which fails and re-opens at once
    reopened = engine.run(blended())
    assert started() == 3
    assert [e["state"] for e in events(reopened.log_path, "policy_breaker")] == ["open"]

    clock.advance(60)
    script.write_text(
        "import json, sys\n" + witness.python() + ""
        "print('<PICK><SID0002><END>' if json.load(open(sys.argv[1]))['completed'] else '<PICK><SID0001><END>')\n"
    )
    healed = engine.run(blended())  # half-open, succeeds: closed, and the policy is asked again
    assert [e["state"] for e in events(healed.log_path, "policy_breaker")] == ["closed"]
    assert selections(healed)[0]["source"] == "POLICY"
    assert started() == 5
