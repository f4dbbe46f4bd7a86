#!/usr/bin/env python3
"""A stand-in embedding command for the tests: ``fake_embedder.py MODE``, speaking the cmd protocol.

Modes: good (valid vectors, see vector()), hang, garbage, exit3, dim (one number short), count (one vector
too few), nan, zero, cpu (burns CPU until a limit stops it), flood (endless output), env (valid only when
the environment holds nothing beyond PATH and LANG, and the sandbox's own HOME, TMPDIR and PWD on /tmp),
slow-good (valid after 0.5 s), confined PATH (valid only in a pid namespace of its own where PATH, the
root, is not visible).
"""

import hashlib
import json
import os
import sys
import time


def vector(text: str, dim: int) -> list[float]:
    """Deterministic, not normalised (the service normalises): bytes of SHA-256 chains mapped to [-1, 1]."""
    out: list[float] = []
    seed = text.encode()
    while len(out) < dim:
        seed = hashlib.sha256(seed).digest()
        out.extend((b - 127.5) / 127.5 for b in seed)
    return out[:dim]


def main() -> None:
    mode = sys.argv[1]
    request = json.load(sys.stdin)
    dim = request["dim"]
    texts = [request["text"]] if "text" in request else request["texts"]
    vectors = [vector(t, dim) for t in texts]
    if mode == "hang":
        time.sleep(3600)
    elif mode == "garbage":
        sys.stdout.write("this is not { json")
        return
    elif mode == "exit3":
        print("something broke", file=sys.stderr)
        sys.exit(3)
    elif mode == "dim":
        vectors = [v[:-1] for v in vectors]
    elif mode == "count":
        vectors = vectors[:-1] if len(vectors) > 1 else []
    elif mode == "nan":
        vectors[0][0] = float("nan")
    elif mode == "zero":
        vectors[0] = [0.0] * dim
    elif mode == "cpu":
        while True:
            pass
    elif mode == "flood":
        chunk = "[" * 65536
        while True:
            sys.stdout.write(chunk)
    elif mode == "env":
        sandbox_own = {k for k in ("HOME", "TMPDIR", "PWD") if os.environ.get(k) == "/tmp"}
        extra = sorted(set(os.environ) - {"PATH", "LANG", "LC_CTYPE"} - sandbox_own)
        if extra:
            print(f"unexpected environment: {extra}", file=sys.stderr)
            sys.exit(3)
    elif mode == "slow-good":
        time.sleep(0.5)
    elif mode == "confined" and (os.path.exists(sys.argv[2]) or os.getpid() > 10):
        print(f"not confined: {sys.argv[2]} visible or pid {os.getpid()} of the host", file=sys.stderr)
        sys.exit(3)
    if "text" in request:
        json.dump({"embedding": vectors[0] if vectors else []}, sys.stdout)
    else:
        json.dump({"embeddings": vectors}, sys.stdout)


if __name__ == "__main__":
    main()
