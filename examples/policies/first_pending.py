#!/usr/bin/env python3
"""Example policy driver for MACHINA_POLICY_CMD: pick the first menu tool that has not succeeded yet.

Machina runs it as `python3 <this file> <payload.json>` with a cleared environment; the payload is
{goal_digest, state_digest, control_mode, inputs, menu: [{sid, aid, name, tags}], goal_id, step, completed}.
It must print exactly one reply: <PICK><SIDdddd><END> (optionally with <INP>{json}</INP> before <END>),
<ASK_SUP><END> or <NOOP><END>.  Anything else, a non-zero exit or a timeout makes Machina fall back.
"""

import json
import sys


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        payload = json.load(handle)
    done = set(payload["completed"])
    for entry in payload["menu"]:
        if entry["aid"] not in done:
            print(f"<PICK><{entry['sid']}><END>")
            return 0
    print("<NOOP><END>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
