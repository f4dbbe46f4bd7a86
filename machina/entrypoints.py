"""Executable name -> entry point, for running from a checkout without an installed package.

Mirrors ``[project.scripts]`` in pyproject.toml (a test keeps the two equal).  ``bin/<name>`` uses the
checkout's .venv when it exists and falls back to ``python3 -m machina.entrypoints <name>``.
"""

from __future__ import annotations

import importlib
import sys

ENTRY_POINTS: dict[str, str] = {
    "machina": "machina.cli:main",
    "machina-enqueued": "machina.enqueued.main:main",
    "machina-worker": "machina.worker.main:main",
    "machina-toolhost": "machina.toolhost.main:main",
    "machina-embed": "machina.embed.main:main",
    "machina-policy-llm": "machina.llm.policy_driver:main",
    "machina-chat-driver": "machina.agent.chat_driver:main",
    "machina-autonomic": "machina.autonomic.main:main",
    "machina-telegram": "machina.telegram.main:main",
}


def run(name: str) -> None:
    module_name, func = ENTRY_POINTS[name].split(":")
    sys.argv[0] = name
    getattr(importlib.import_module(module_name), func)()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ENTRY_POINTS:
        sys.exit(f"usage: python3 -m machina.entrypoints {{{','.join(ENTRY_POINTS)}}} [ARGS...]")
    name = sys.argv.pop(1)
    run(name)
