"""Overhead of the LLM backends' client (machina.llm) against a loopback fake model server.

For each backend, whole and streamed, N calls through ``Backend.complete`` are timed against a baseline of
the same requests sent with a bare ``httpx.Client`` and parsed with ``json.loads`` (no retries, no helper
thread, no stream decoding).  The difference is what the client adds per call: its helper thread, queue,
stream decoding and checks.  Loopback only; the fake server is stopped at the end.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import httpx

from machina.config import load
from machina.llm import Message, open_backend
from machina.testing.fake_llm import FakeLLM

N = 200
TEXT = "The disk is 42% full and nothing needs doing about it today. " * 4
WIRES = {
    "oai_compat": ("OAI_COMPAT_BASE_URL", "OAI_COMPAT_MODEL", "/v1/chat/completions"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL", "/v1/messages"),
    "ollama": ("OLLAMA_HOST", "OLLAMA_MODEL", "/api/chat"),
}


def timed(call) -> list[float]:
    samples = []
    for _ in range(N):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def row(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{label:<28} {statistics.median(samples):8.2f} {p95:8.2f}"


def main() -> int:
    print(f"{'calls (ms)':<28} {'median':>8} {'p95':>8}   N={N}")
    with FakeLLM(rules=[{"match": ".", "reply": {"text": TEXT}}]) as fake:
        for name, (url_var, model_var, path) in WIRES.items():
            env = {"MACHINA_ENV_FILE": "/dev/null", "MACHINA_CHAT_BACKEND": name, url_var: fake.base_url}
            env.update({model_var: "bench", "ANTHROPIC_API_KEY": "k"})
            backend = open_backend(load(env))
            messages = [Message("user", "how full is the disk?")]
            body = {"model": "bench", "messages": [{"role": "user", "content": "how full is the disk?"}]}
            body.update({"max_tokens": 64, "stream": False})
            with httpx.Client() as raw:
                base = timed(
                    lambda raw=raw, body=body, path=path: json.loads(raw.post(fake.base_url + path, json=body).content)
                )
            whole = timed(lambda b=backend, m=messages: b.complete(m))
            streamed = timed(lambda b=backend, m=messages: b.complete(m, on_text=lambda _: None))
            backend.close()
            print(row(f"{name} bare httpx", base))
            print(row(f"{name} complete()", whole))
            print(row(f"{name} complete(on_text)", streamed))
            added = statistics.median(whole) - statistics.median(base)
            print(f"{'':<28} client adds {added:+.2f} ms per whole call (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
