"""Machina as the uid its units run as: secrets, the policy driver's threads, the toolhost's peers and tools."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

from machina.root import init_root

from .conftest import PEER, PYTHON, UID, as_uid, base_env, daemon_pid, own, run_as, started_as

SECRET = "tok-unprivileged-3f9c1a"

# A request over the JSON-lines socket, as any client of that uid would send it; prints the reply line.
RAW_CLIENT = textwrap.dedent("""
    import socket, sys
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(sys.argv[1])
        try:
            sock.sendall(sys.argv[2].encode() + b"\\n")
        except BrokenPipeError:
            pass  # a refused peer is told why, then the connection is closed: the answer is still there
        print(sock.makefile("rb").readline().decode().strip() or '{"closed": true}')
""")


def make_root(scratch: Path) -> Path:
    root = scratch / "root"
    init_root(str(root))
    own(root)
    return root


def request(socket_path: Path, message: dict, uid: int = UID) -> dict:
    done = run_as([PYTHON, "-I", "-c", RAW_CLIENT, str(socket_path), json.dumps(message)], env=base_env(), uid=uid)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_d2_a_process_of_the_daemons_uid_cannot_read_its_secrets(scratch: Path) -> None:
    root = make_root(scratch)
    api = scratch / "api.sock"
    env = base_env(MACHINA_ROOT=str(root), MACHINA_API_TOKEN=SECRET)
    with started_as(["machina-enqueued", "--socket", str(api)], env, api, scratch / "enqueued.log") as proc:
        pid = daemon_pid(proc)
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{UID}\t" in status and "machina" in Path(f"/proc/{pid}/cmdline").read_text()
        reader = textwrap.dedent(f"""
            try:
                print(open("/proc/{pid}/environ", "rb").read())
            except OSError as exc:
                print(type(exc).__name__)
        """)
        seen = run_as([PYTHON, "-I", "-c", reader], env=base_env())
    assert seen.returncode == 0, seen.stderr
    assert SECRET not in seen.stdout
    assert seen.stdout.strip() == "PermissionError", "the daemon is not dumpable: its environ is root's alone"


def test_d2_the_daemons_children_inherit_no_secret(scratch: Path) -> None:
    """The hardening a daemon applies at start, in a process of that uid that then starts a child."""
    program = textwrap.dedent(f"""
        import os, subprocess, prctl
        from machina.cli.common import bootstrap
        bootstrap("machina-test", daemon=True)
        child = subprocess.run(["/bin/sh", "-c", "env; cat /proc/$PPID/environ"], capture_output=True, text=True)
        print(prctl.get_dumpable(), "{SECRET}" in child.stdout, child.stderr.strip()[-80:])
    """)
    done = run_as([PYTHON, "-I", "-c", program], env=base_env(MACHINA_AUDIT_KEY=SECRET))
    assert done.returncode == 0, done.stderr
    dumpable, leaked, error = done.stdout.split(" ", 2)
    assert (dumpable, leaked) == ("False", "False")
    assert "Permission denied" in error


def test_d4_a_policy_driver_of_a_busy_uid_can_start_threads(scratch: Path) -> None:
    """RLIMIT_NPROC (32 by default) must not count the worker's own threads against the driver."""
    root = make_root(scratch)
    scripts = scratch / "policies"
    scripts.mkdir()
    (scripts / "threads.py").write_text(
        "import threading\n"
        "workers = [threading.Thread(target=lambda: None) for _ in range(8)]\n"
        "[w.start() for w in workers]\n[w.join() for w in workers]\n"
        "print('<NOOP><END>')\n"
    )
    own(scripts)
    busy = (  # the worker's threads, say: 40 tasks of the uid, more than the driver's NPROC of 32
        "import threading, time\n"
        "[threading.Thread(target=time.sleep, args=(120,), daemon=True).start() for _ in range(40)]\n"
        "print('busy', flush=True)\ntime.sleep(120)\n"
    )
    driver = textwrap.dedent(f"""
        from machina import config
        from machina.engine.selectors.driver import DriverSettings, PolicyDriver
        cfg = config.load(environ={{
            "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": "{root}",
            "MACHINA_POLICY_CMD": "{PYTHON} {scripts}/threads.py", "MACHINA_POLICY_ALLOWED_SCRIPT_ROOT": "{scripts}",
        }})
        print(PolicyDriver(DriverSettings.from_config(cfg, "{root}")).run({{"menu": []}}).strip())
    """)
    holder = subprocess.Popen(as_uid([PYTHON, "-I", "-c", busy]), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "busy"
        done = run_as([PYTHON, "-I", "-c", driver], env=base_env())
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0 and done.stdout.strip() == "<NOOP><END>", done.stdout + done.stderr


def test_d5_the_toolhost_as_the_units_uid_serves_its_peers_and_refuses_others(scratch: Path) -> None:
    root = make_root(scratch)
    os.chmod(scratch, 0o711)  # the second uid reaches the socket (its mode is not what refuses it)
    sock = scratch / "toolhost.sock"
    env = base_env(MACHINA_ROOT=str(root))
    write = {"aid": "AID.FILE.WRITE.v1", "inputs": {"path": "data/note.txt", "content": "hi", "mkdirs": True}}
    with started_as(["machina-toolhost", "--socket", str(sock)], env, sock, scratch / "toolhost.log"):
        os.chmod(sock, 0o666)
        written = request(sock, write)
        assert written["status"] == "ok", written
        assert (root / "data" / "note.txt").stat().st_uid == UID
        metrics = request(sock, {"aid": "AID.PROC.SELF_METRICS.v1", "inputs": {}})  # its own /proc, not dumpable
        assert metrics["status"] == "ok" and metrics["output"]["toolhost"]["open_fds"] > 0, metrics
        refused = request(sock, {"aid": "AID.NOOP.v1", "inputs": {}}, uid=PEER)
        assert refused["status"] == "forbidden" and f"peer uid {PEER} is not allowed" in refused["error"]
    allowed_env = {**env, "MACHINA_TOOLHOST_ALLOWED_UIDS": str(PEER), "MACHINA_TOOLHOST_ADMIN_UIDS": str(UID)}
    sock = scratch / "toolhost-allowing.sock"
    with started_as(["machina-toolhost", "--socket", str(sock)], allowed_env, sock, scratch / "toolhost2.log"):
        os.chmod(sock, 0o666)
        assert request(sock, {"aid": "AID.NOOP.v1", "inputs": {}}, uid=PEER)["status"] == "ok"
        issue = {"op": "_lease.issue", "aid": "AID.SHELL.EXEC.v1", "tier": 3, "ttl_ms": 60000}
        assert request(sock, issue, uid=PEER)["status"] == "forbidden", "a peer is not an administrator"
        assert request(sock, issue)["status"] == "ok", "a configured administrator is"


def test_a_root_process_counts_as_alive_for_the_units_uid() -> None:
    """kill(0) on another uid's process answers EPERM: it exists.  Claims, pid files and owned directories
    of a live process must never look abandoned to the units' uid (machina.proctree.pid_alive)."""
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        probe = "import sys; from machina.proctree import pid_alive; print(pid_alive(int(sys.argv[1])))"
        done = run_as([PYTHON, "-I", "-c", probe, str(sleeper.pid)], env=base_env())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
