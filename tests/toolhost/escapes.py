"""The escape suite's attempts: Python snippets run inside a tool sandbox, each of which must fail.

Each attempt is the body of a function that sets ``result = {"escaped": bool, "detail": str}``.  ``escaped``
is True only when the forbidden thing actually happened; ``detail`` names the error that stopped it, and
the test checks that error against ``blocked_by`` (so an attempt that crashed for an unrelated reason, or
never ran, does not count as a pass).  The same attempts run on both sandbox paths: as a program in a fresh
sandbox (AID.SHELL.EXEC.v1 running the system python) and as code inside a pre-started pooled executor.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

PRELUDE = """
import ctypes, errno, fcntl, json, os, socket, termios, time
libc = ctypes.CDLL(None, use_errno=True)
def attempt(fn):
    try:
        value = fn()
    except BaseException as exc:
        return {"escaped": False, "detail": f"{type(exc).__name__}: {exc}"[:400]}
    return {"escaped": True, "detail": repr(value)[:400]}
def call(name, *args):
    if getattr(libc, name)(*args) == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
"""


@dataclass(frozen=True)
class Attempt:
    name: str
    body: str
    blocked_by: str  # regular expression the detail must match


ATTEMPTS = [
    Attempt("write_usr", 'result = attempt(lambda: open("/usr/bin/machina-escape", "w"))', r"Read-only file system"),
    Attempt(
        "append_etc_passwd",
        'result = attempt(lambda: open("/etc/passwd", "a"))',
        r"Read-only file system|Permission denied",
    ),
    Attempt(
        "write_the_working_root",
        'result = attempt(lambda: open(ROOT + "/queue/inbox/p0000_rq_evil.json", "w"))',
        r"No such file or directory|Permission denied",
    ),
    Attempt(
        "read_etc_shadow", 'result = attempt(lambda: open("/etc/shadow").read())', r"No such file|Permission denied"
    ),
    Attempt(
        "secrets_in_environment",
        "SECRET = SECRET_A + SECRET_B\n"
        "leaked = [k for k, v in os.environ.items() if SECRET in v]\n"
        'result = {"escaped": bool(leaked), "detail": "environment: " + ",".join(sorted(os.environ))}',
        r"^environment: [A-Z_,]*$",
    ),
    Attempt(
        "secrets_in_proc",
        "SECRET = SECRET_A + SECRET_B\n"
        "found, read = [], 0\n"
        'for pid in [p for p in os.listdir("/proc") if p.isdigit()]:\n'
        '    for what in ("environ", "cmdline"):\n'
        "        try:\n"
        '            with open(f"/proc/{pid}/{what}", "rb") as f:\n'
        "                data = f.read()\n"
        "            read += 1\n"
        "            if SECRET.encode() in data: found.append(f'{pid}/{what}')\n"
        "        except OSError:\n"
        "            pass\n"
        'result = {"escaped": bool(found), "detail": f"searched {read} files, secret in {found}"}',
        r"searched [1-9][0-9]* files, secret in \[\]",
    ),
    Attempt(
        "network_socket",
        "def connect():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(3)\n"
        '    s.connect(("127.0.0.1", PORT)); return s.recv(100)\n'
        "result = attempt(connect)",
        r"Operation not permitted|Network is unreachable|Connection refused",
    ),
    Attempt(
        "unix_socket_to_the_toolhost",
        "def connect():\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(TOOLHOST_SOCKET)\n"
        "result = attempt(connect)",
        r"Operation not permitted|No such file or directory",
    ),
    Attempt("ptrace_attach_pid1", "result = attempt(lambda: call('ptrace', 16, 1, 0, 0))", r"Operation not permitted"),
    Attempt("ptrace_traceme", "result = attempt(lambda: call('ptrace', 0, 0, 0, 0))", r"Operation not permitted"),
    Attempt(
        "mount_tmpfs", "result = attempt(lambda: call('mount', b'none', b'/tmp', b'tmpfs', 0, None))", r"not permitted"
    ),
    Attempt("unshare_user_namespace", "result = attempt(lambda: call('unshare', 0x10000000))", r"not permitted"),
    Attempt("chroot", "result = attempt(lambda: call('chroot', b'/tmp'))", r"not permitted"),
    Attempt(
        "tiocsti_type_into_terminal",
        "def typed():\n    m, s = os.openpty(); fcntl.ioctl(s, termios.TIOCSTI, b'x')\nresult = attempt(typed)",
        r"Operation not permitted",
    ),
    Attempt(
        "fork_bomb",
        "pids = []\n"
        "try:\n"
        "    for _ in range(300):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(20); os._exit(0)\n"
        "        pids.append(pid)\n"
        "    result = {'escaped': True, 'detail': f'{len(pids)} processes'}\n"
        "except OSError as exc:\n"
        "    result = {'escaped': len(pids) >= 64, 'detail': f'{exc.strerror} after {len(pids)} processes'}\n"
        "for pid in pids:\n"
        "    os.kill(pid, 9); os.waitpid(pid, 0)",
        r"(Resource temporarily unavailable|Operation not permitted) after [0-9]+ processes",
    ),
    Attempt("memory_bomb", "result = attempt(lambda: bytearray(8 * 1024 ** 3))", r"MemoryError|Cannot allocate memory"),
    Attempt(
        "fill_the_disk",
        "def fill():\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        for _ in range(1024): f.write(b'x' * (1 << 20))\n"
        "result = attempt(fill)",
        r"File too large|No space left on device",
    ),
    Attempt(
        "start_a_program",
        "result = attempt(lambda: os.posix_spawn('/usr/bin/id', ['id'], {}) and os.wait())",
        r"Operation not permitted",
    ),
    Attempt("become_root", "result = attempt(lambda: os.setuid(0))", r"Operation not permitted"),
    Attempt("signal_init", "result = attempt(lambda: os.kill(1, 9))", r"Operation not permitted"),
    Attempt(
        "read_init_memory",
        "result = attempt(lambda: open('/proc/1/mem', 'rb').read(1))",
        r"Permission denied|not permitted",
    ),
    Attempt(
        "raw_device", "result = attempt(lambda: open('/dev/mem', 'rb').read(1))", r"No such file|Permission denied"
    ),
    Attempt("bpf", "result = attempt(lambda: call('syscall', 321, 0, None, 0))", r"Operation not permitted"),
    Attempt(
        "io_uring",
        "result = attempt(lambda: call('syscall', 425, 4, ctypes.create_string_buffer(120)))",
        r"not permitted",
    ),
    Attempt(
        "write_proc_sys",
        "result = attempt(lambda: open('/proc/sys/kernel/hostname', 'w').write('pwned'))",
        r"Read-only file system|Permission denied",
    ),
]

# start_a_program is refused by seccomp inside a pooled executor (no process may start there); in a fresh
# sandbox the tool already is a program and may start others, so it is not an escape there.
POOL_ONLY = {"start_a_program"}


def source(attempt: Attempt, constants: dict[str, object]) -> str:
    """The attempt as a function body (with PRELUDE and constants) that leaves ``result`` set."""
    lines = [PRELUDE]
    lines += [f"{name} = {value!r}" for name, value in constants.items()]
    lines.append(attempt.body)
    return "\n".join(lines)


def as_program(attempt: Attempt, constants: dict[str, object]) -> str:
    return source(attempt, constants) + "\nprint(json.dumps(result))\n"


def as_plugin(attempt: Attempt, constants: dict[str, object]) -> str:
    body = textwrap.indent(source(attempt, constants), "    ")
    return f"def run(inputs, host):\n{body}\n    return result\n"
