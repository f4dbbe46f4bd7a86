#!/usr/bin/env python3
"""The LLM policy driver: MACHINA_POLICY_CMD="python3 /etc/machina/policies/llm_policy.py".

Asks the backend configured in llm_policy.env beside this script (MACHINA_CHAT_BACKEND, OAI_COMPAT_*,
ANTHROPIC_*, OLLAMA_*: see docs/LLM_BACKENDS.md) which tool is next, and prints one line of the reply
grammar (machina.llm.policy_driver does the work; this file only has to live under the script root).
Keep llm_policy.env mode 0600: it may hold an API key.
"""

import os
import sys

from machina.llm.policy_driver import main

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(["--env", os.path.join(here, "llm_policy.env"), *sys.argv[1:]]))
