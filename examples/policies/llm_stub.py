#!/usr/bin/env python3
"""Example of a policy driver that asks a language model through an OpenAI-compatible HTTP API.

The model's answer is reduced to the reply grammar here, never passed through as is.  Machina starts
drivers with a cleared environment, so the endpoint and model come from a file beside this script
(llm_stub.json: {"url": "http://127.0.0.1:11434/v1/chat/completions", "model": "..."}); with no such file,
or on any error, it prints nothing useful and exits 1, and Machina falls back to its heuristic.
"""

import json
import os
import re
import sys
import urllib.request


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        payload = json.load(handle)
    settings_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llm_stub.json")
    with open(settings_path, encoding="utf-8") as handle:
        settings = json.load(handle)
    menu = "\n".join(f"{e['sid']}: {e['aid']} ({e['name']}; {', '.join(e['tags'])})" for e in payload["menu"])
    prompt = (
        f"Goal {payload['goal_id']}. Already done: {', '.join(payload['completed']) or 'nothing'}.\n"
        f"Tools:\n{menu}\nAnswer with the SID of the next tool to run, or NOOP if none is needed."
    )
    body = json.dumps({"model": settings["model"], "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(settings["url"], body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - the operator's endpoint
        answer = json.load(response)["choices"][0]["message"]["content"]
    sids = {e["sid"] for e in payload["menu"]}
    found = [s for s in re.findall(r"SID[0-9]{4}", answer) if s in sids]
    print(f"<PICK><{found[0]}><END>" if found else "<NOOP><END>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
