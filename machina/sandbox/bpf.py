"""Install a seccomp BPF program from its bytes: how a Python executor loads a layer the toolhost built.

The program is built with pyseccomp in the toolhost (machina.sandbox.seccomp) and handed over as bytes, so
an executor does not import libseccomp at start-up (its library lookup alone runs ldconfig).  Loading is
one prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) call, after no_new_privs, on the calling thread: call it
before starting any thread (threads started later inherit it).
"""

from __future__ import annotations

import ctypes
import os

import prctl

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SOCK_FILTER_SIZE = 8


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_program(program: bytes) -> None:
    if not program or len(program) % _SOCK_FILTER_SIZE:
        raise ValueError(f"not a BPF program: {len(program)} bytes")
    prctl.set_no_new_privs(True)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _SOCK_FILTER_SIZE, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"loading the seccomp filter failed: {os.strerror(code)}")


def read_program(fd: int) -> bytes:
    """All of a program passed as a descriptor (a memfd at offset 0); the descriptor is closed."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
