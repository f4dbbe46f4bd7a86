"""The shipped LLM policy driver (examples/policies/llm_policy.py) run by the engine against a fake model server."""

from __future__ import annotations

import json
import os
import site
from pathlib import Path

from engine_support import ERROR_SCAN, EXAMPLES, events

from machina.testing.fake_llm import FakeLLM
from tests.conftest import CHECKOUT

KEY = "sk-policy-5c1f0e"
TOOL_UID = 65534  # MACHINA_TOOL_UID's default


def install_driver(root: Path, base_url: str) -> str:
    """The example driver in the script root, with its settings file beside it.

    The engine runs the system python3 with a cleared environment; where Machina is installed (make install)
    that python imports it.  Here the checkout and this virtualenv stand in for the installed package.
    """
    paths = [str(CHECKOUT), *site.getsitepackages()]
    prelude = (
        f"import site, sys\nsys.path.insert(0, {str(CHECKOUT)!r})\nfor p in {paths[1:]!r}:\n    site.addsitedir(p)\n"
    )
    (root / "policies" / "llm_policy.py").write_text(prelude + (EXAMPLES / "policies" / "llm_policy.py").read_text())
    env = root / "policies" / "llm_policy.env"
    env.write_text(
        f"MACHINA_CHAT_BACKEND=anthropic\nANTHROPIC_BASE_URL={base_url}\nANTHROPIC_MODEL=claude-test\n"
        f"ANTHROPIC_API_KEY={KEY}\n"
    )
    env.chmod(0o600)
    if os.geteuid() == 0:  # a root worker runs the driver as the tool uid: the file belongs to the uid reading it
        os.chown(env, TOOL_UID, TOOL_UID)
    return "python3 policies/llm_policy.py"


def test_the_engine_follows_the_models_picks(make_engine, root: Path) -> None:
    turns = [{"json": {"choice": "SID0001"}}, {"text": '```json\n{"choice": "SID0002"}\n```'}]
    with FakeLLM(turns, api_key=KEY) as fake:
        cmd = install_driver(root, fake.base_url)
        result = make_engine(MACHINA_POLICY_CMD=cmd).run({**ERROR_SCAN, "control_mode": "POLICY_ONLY"})
    assert result.status == "done", result
    raws = [s["raw"].strip() for s in events(result.log_path, "selection")]
    assert raws == ["<PICK><SID0001><END>", "<PICK><SID0002><END>"]
    first = fake.chat_requests[0]
    assert first.headers["x-api-key"] == KEY
    assert "AID.ERROR_SCAN.v1" in json.dumps(first.body)
    assert KEY not in Path(result.log_path).read_text()


def test_a_garbage_answer_is_noop_and_a_dead_model_falls_back(make_engine, root: Path) -> None:
    with FakeLLM([{"text": "Let me think about this step by step..."}], api_key=KEY) as fake:
        cmd = install_driver(root, fake.base_url)
        result = make_engine(MACHINA_POLICY_CMD=cmd).run({**ERROR_SCAN, "control_mode": "BLENDED"})
        [first, *_] = events(result.log_path, "selection")
        assert first["raw"].strip() == "<NOOP><END>"
    # The server is gone now: the driver exits 69 and the engine's own selector carries the goal.
    result = make_engine(MACHINA_POLICY_CMD=cmd).run({**ERROR_SCAN, "control_mode": "BLENDED"})
    assert result.status == "done"
    selections = events(result.log_path, "selection")
    assert selections[0]["fallback_reason"] == "exit_status"
