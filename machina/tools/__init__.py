"""Built-in tool implementations, run inside sandboxed executors (see machina.sandbox.executor).

``EXECUTOR_TOOLS`` maps the name the toolhost sends to ``module:function``.  The shell and code tools are not
here: they run an external program and are started by the toolhost itself (``machina.tools.shell``,
``machina.tools.code``) in a fresh sandbox per call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

EXECUTOR_TOOLS: dict[str, str] = {
    "noop": "machina.tools.basic:noop",
    "ask_supervisor": "machina.tools.basic:ask_supervisor",
    "file_read": "machina.tools.files:file_read",
    "file_write": "machina.tools.files:file_write",
    "file_list": "machina.tools.filesearch:file_list",
    "file_search": "machina.tools.filesearch:file_search",
    "file_diff": "machina.tools.fileedit:file_diff",
    "file_edit": "machina.tools.fileedit:file_edit",
    "file_append": "machina.tools.fileedit:file_append",
    "file_delete": "machina.tools.fileedit:file_delete",
    "error_scan": "machina.tools.scan:error_scan",
    "report_summary": "machina.tools.report:report_summary",
    "run_log_summary": "machina.tools.runlog:run_log_summary",
    "memory_append": "machina.tools.memory:memory_append",
    "memory_query": "machina.tools.memory:memory_query",
    "memory_search": "machina.tools.memory:memory_search",
    "embed_text": "machina.tools.memory:embed_text",
    "queue_enqueue": "machina.tools.queue:queue_enqueue",
    "self_metrics": "machina.tools.metrics:self_metrics",
    "gpu_smoke": "machina.tools.gpu:gpu_smoke",
    "http_get": "machina.tools.http:http_get",
    "web_search": "machina.tools.search:web_search",
}

ToolFunction = Callable[[dict[str, Any], Any], dict[str, Any]]


def load(name: str) -> ToolFunction:
    module_name, func = EXECUTOR_TOOLS[name].split(":")
    function: ToolFunction = getattr(importlib.import_module(module_name), func)
    return function
