"""Where each process's time goes under load: py-spy on machina-enqueued, the workers, their job children,
the toolhost and its executors, all at once, on a temporary root on loopback.

    python bench/profile_load.py [--seconds S] [--clients N] [--workers N] [--fsync 0|1] [--rate HZ]
                                 [--goal noop|error_scan] [--out DIR]

Starts ``bin/machina-toolhost``, ``bin/machina-enqueued`` (token auth) and ``bin/machina-worker`` x N on a
fresh root (as ``bench_enqueued.py`` and ``bench_worker.py`` do), then puts ``wrk`` on ``POST /enqueue``
(keep-alive, N clients) while the workers drain what it queues.  During the load window every process of the
suite is sampled by ``py-spy record --format raw --nonblocking`` (idle threads left out, so a sample is a
thread that was running or in a system call that is not a wait).  Then, for each process, written to
``DIR/<process>.txt`` (default ``bench/out/profile/``) and printed:

* its CPU time over the window from /proc (user + sys, ms per job done in the window);
* the functions with the most **self** samples (the leaf frame: where the time is spent), and
* the functions with the most **inclusive** samples (the frame anywhere on the stack).

The raw collapsed stacks stay next to each summary (``<process>.raw``) for a flame graph
(``flamegraph.pl`` or speedscope.app read them).  py-spy attaches by pid (root, or ptrace allowed); where it
cannot, set ``MACHINA_BENCH_PROFILE=cprofile``: the script then reports only the /proc CPU split and says so.
Everything it starts is stopped by pid and the root is removed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from machina.proctree import descendant_pids  # noqa: E402
from machina.root import init_root  # noqa: E402

TOKEN = "bench-token-" + "0123456789abcdef"
GOALS = {
    "noop": '{"goal_id":"goal.NOOP.v1"}',
    "error_scan": '{"goal_id":"goal.ERROR_SCAN.v1","inputs":{"input_path":"data/app.log"}}',
}
_TICK = os.sysconf("SC_CLK_TCK")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def cpu_s(pid: int) -> float | None:
    """utime + stime + cutime + cstime of ``pid`` (the children it collected included) in seconds; None if
    gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / _TICK


def sys_s(pid: int) -> float:
    """stime + cstime of ``pid`` in seconds (0 if gone): the kernel's share."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[12]) + int(fields[14])) / _TICK


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """(CPU, of which kernel) of ``pid`` and every live descendant, each with what it collected: a descendant
    that exits inside a window moves from its own figure to its parent's cutime, so differences hold."""
    pids = (pid, *descendant_pids(pid))
    return sum(cpu_s(p) or 0.0 for p in pids), sum(sys_s(p) for p in pids)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class Suite:
    """The daemons on one root: toolhost, enqueued, workers.  Stopped by pid, each in its own session."""

    def __init__(self, root: Path, fsync: bool, workers: int) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.notify: list[socket.socket] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MACHINA_", "NOTIFY_", "WATCHDOG_"))}
        env.update(MACHINA_ROOT=str(root), MACHINA_ENV_FILE="/dev/null", MACHINA_API_TOKEN=TOKEN,
                   MACHINA_WAL_FSYNC="1" if fsync else "0", MACHINA_LOG_LEVEL="warning",
                   MACHINA_DEDUP_TTL_MS="0")  # fmt: skip
        self.env = env
        self.log = open(root / "suite.log", "ab")  # noqa: SIM115 - closed in stop()
        self._start("toolhost", ["machina-toolhost"], env)
        sock = root / "run" / "toolhost.sock"
        self._wait(lambda: sock.exists(), "toolhost")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._start("enqueued", ["machina-enqueued", "--port", str(self.port)], env)
        self._wait(self._listening, "enqueued")
        for n in range(1, workers + 1):
            path = str(root / "run" / f"notify-{n}.sock")
            note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            note.bind(path)
            note.settimeout(60)
            self.notify.append(note)
            self._start(f"worker{n}", ["machina-worker", "--id", str(n)], dict(env, NOTIFY_SOCKET=path))
        for note in self.notify:
            while not note.recv(4096).startswith(b"READY=1"):
                pass

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        argv = [str(CHECKOUT / "bin" / argv[0]), *argv[1:]]
        self.procs[name] = subprocess.Popen(argv, env=env, cwd=CHECKOUT, stdout=subprocess.DEVNULL,
                                            stderr=self.log, start_new_session=True)  # fmt: skip

    def _wait(self, ready: object, name: str) -> None:
        deadline = time.monotonic() + 30
        while not ready():  # type: ignore[operator]
            if time.monotonic() > deadline or self.procs[name].poll() is not None:
                raise SystemExit(f"{name} did not start; see {self.root / 'suite.log'}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def processes(self) -> dict[str, int]:
        """name -> pid for every process of the suite now: daemons, job children, toolhost executors."""
        found: dict[str, int] = {}
        for name, proc in self.procs.items():
            found[name] = proc.pid
            for i, pid in enumerate(descendant_pids(proc.pid), 1):
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if "python" not in os.path.basename(exe):  # bwrap and other wrappers: nothing to read there
                    continue
                kind = "child" if name.startswith("worker") else "executor"
                found[f"{name}-{kind}{i}"] = pid
        return found

    def done(self) -> int:
        return len(os.listdir(self.root / "queue" / "done"))

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for note in self.notify:
            note.close()
        self.log.close()


#: Leaf frames where a thread blocks waiting for work (a socket, a pipe, inotify, a condition, the event
#: loop's selector).  py-spy cannot tell idle threads apart in --nonblocking mode here (all of them are
#: sampled), so these are counted as "waiting" and left out of the self-time table; a wake-up's own CPU
#: (taking the GIL back) is in the /proc figures, not in the table.
WAITS = frozenset(
    {
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Channel._read (machina/worker/protocol.py)",
        "Channel.poll (machina/worker/protocol.py)",
        "SocketIO.readinto (socket.py)",
        "recv_fds (socket.py)",
        "socket.accept (socket.py)",
        "_Watcher.run (machina/queue/inbox.py)",
        "Inotify.read_events (machina/queue/inotify.py)",
        "_recv_exact (machina/sandbox/channel.py)",
        "Runner.run (asyncio/runners.py)",
        "_worker (concurrent/futures/thread.py)",
        "select (selectors.py)",
        "Popen._try_wait (subprocess.py)",
    }
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def summarize(raws: list[Path], top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, [(function, self samples)], [(function, inclusive samples)]) from py-spy's raw output."""
    selfs: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    lines = [line for raw in raws if raw.exists() for line in raw.read_text(errors="replace").splitlines()]
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        selfs["(waiting: " + frames[-1] + ")" if frames[-1] in WAITS else frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    waiting = sum(n for f, n in selfs.items() if f.startswith("(waiting"))
    busy = [(f, n) for f, n in selfs.most_common() if not f.startswith("(waiting")][:top]
    return total, [("(all waits together)", waiting), *busy], incl.most_common(top)


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    if "machina/" in path:
        path = path[path.rfind("machina/") :]
    elif "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    else:
        path = re.sub(r"^.*/lib/python3[.\d]*/", "", path)
    return f"{match.group('func')} ({path})"


#: Kernel entry points whose inclusive share says which physical cost a process pays (perf --children).
KERNEL_COSTS = {
    "__ext4_new_inode": "new file (inode allocation)",
    "ext4_sync_file": "fsync / fdatasync",
    "do_renameat2": "rename",
    "do_unlinkat": "unlink",
    "__x64_sys_futex": "futex (GIL, locks, conditions)",
    "unix_stream_sendmsg": "unix socket send",
    "unix_stream_recvmsg": "unix socket receive",
    "tcp_sendmsg": "tcp send",
    "tcp_recvmsg": "tcp receive",
    "do_syscall_64": "all system calls",
}


def _start_perf(data: Path, procs: dict[str, int], window: int) -> subprocess.Popen[bytes] | None:
    if shutil.which("perf") is None:
        print("perf is not installed: no kernel-side attribution")
        return None
    pids = ",".join(str(pid) for pid in procs.values())
    argv = ["perf", "record", "-q", "-F", "199", "-g", "-p", pids, "-o", str(data), "--", "sleep", str(window)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kernel_costs(data: Path, procs: dict[str, int], out: Path) -> None:
    """Per role, the share of its perf samples under each kernel entry point of KERNEL_COSTS."""
    if not data.exists():
        print("perf recorded nothing (perf_event_paranoid?): no kernel-side attribution")
        return
    report = subprocess.run(["perf", "report", "-i", str(data), "--children", "--sort", "pid,sym", "--stdio",
                             "-g", "none"], capture_output=True, text=True, check=False).stdout  # fmt: skip
    role_of = {}
    for name, pid in procs.items():  # perf's "pid" is the thread's id
        role_of[pid] = _role(name)
        with contextlib.suppress(OSError):
            role_of.update((int(tid), _role(name)) for tid in os.listdir(f"/proc/{pid}/task"))
    share: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    # with --children each line: children% self% pid:comm [k] symbol
    line_re = re.compile(r"^\s*([\d.]+)%\s+([\d.]+)%\s+(\d+):\S*\s+\[(.)\]\s+(\S+)")
    for line in report.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        role = role_of.get(int(m.group(3)))
        if role is None:
            continue
        totals[role] += float(m.group(2))  # self shares add up to the role's share of all samples
        if m.group(5) in KERNEL_COSTS:
            share[role][m.group(5)] += float(m.group(1))
    lines = ["kernel-side (perf, share of each role's own samples, inclusive):",
             f"{'role':<10} " + " ".join(f"{KERNEL_COSTS[k][:14]:>14}" for k in KERNEL_COSTS)]  # fmt: skip
    for role, total in totals.items():
        if total <= 0:
            continue
        cells = " ".join(f"{share[role][k] / total * 100:>13.0f}%" for k in KERNEL_COSTS)
        lines.append(f"{role:<10} {cells}")
    text = "\n".join(lines)
    (out / "kernel.txt").write_text(text + "\n")
    print("\n" + text)


def _role(name: str) -> str:
    return re.sub(r"\d+", "", name.split("-")[-1]) if "-" in name else re.sub(r"\d+$", "", name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load and sampling window (default 10)")
    parser.add_argument("--clients", type=int, default=4, help="wrk connections on POST /enqueue (default 4)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fsync", type=int, choices=(0, 1), default=1)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--goal", choices=sorted(GOALS), default="noop")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--gil", action="store_true", help="py-spy --gil: only samples holding the GIL (Python CPU)")
    parser.add_argument("--no-perf", dest="perf", action="store_false",
                        help="skip perf (kernel-side attribution: new inodes, fsync, rename, sockets)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=CHECKOUT / "bench" / "out" / "profile")
    args = parser.parse_args()
    spy = py_spy()
    mode = os.environ.get("MACHINA_BENCH_PROFILE", "py-spy")
    if spy is None or mode != "py-spy":
        print("py-spy not used (not installed, or MACHINA_BENCH_PROFILE set): CPU split from /proc only")
        spy = None
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="profile-load-"))
    suite: Suite | None = None
    spies: dict[str, subprocess.Popen[bytes]] = {}
    try:
        root = tmp / "root"
        init_root(str(root))
        shutil.copytree(CHECKOUT / "examples" / "data", root / "data")
        suite = Suite(root, bool(args.fsync), args.workers)
        lua = tmp / "post.lua"
        lua.write_text(f"wrk.method = \"POST\"\nwrk.body = '{GOALS[args.goal]}'\n"
                       'wrk.headers["Content-Type"] = "application/json"\n'
                       f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')  # fmt: skip
        url = f"http://127.0.0.1:{suite.port}/enqueue"
        # a short warm-up so the job children have imported what they import lazily
        subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", str(lua), url], capture_output=True, check=True)
        time.sleep(1.0)
        procs = suite.processes()
        window = max(1, int(args.seconds))
        if spy:
            for name, pid in procs.items():
                argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking", "--rate",
                        str(args.rate), "--duration", str(window), "-o", str(args.out / f"{name}.raw"),
                        *(["--gil"] if args.gil else [])]  # fmt: skip
                spies[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)  # attached
        perf = _start_perf(args.out / "perf.data", procs, window) if args.perf else None
        cpu_before = {name: cpu_s(pid) for name, pid in procs.items()}
        tree_before = {name: tree_cpu_s(proc.pid) for name, proc in suite.procs.items()}
        done_before = suite.done()
        started = time.monotonic()
        load = subprocess.run(["wrk", "-t1", f"-c{args.clients}", f"-d{window}s", "-s", str(lua), url],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        elapsed = time.monotonic() - started
        cpu_after = {name: cpu_s(pid) for name, pid in procs.items()}
        tree_after = {name: tree_cpu_s(proc.pid) for name, proc in suite.procs.items()}
        jobs = max(1, suite.done() - done_before)
        for name, proc in spies.items():
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate()
            if proc.returncode:
                print(f"py-spy on {name} exited {proc.returncode}: {err.decode(errors='replace')[-300:]}")
        rps = re.search(r"Requests/sec:\s+([\d.]+)", load)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; goal {args.goal}, fsync "
              f"{'on' if args.fsync else 'off'}, {args.workers} workers, {args.clients} clients; "
              f"{elapsed:.1f} s window: POST /enqueue {rps.group(1) if rps else '?'} req/s, "
              f"{jobs} jobs done ({jobs / elapsed:.0f}/s)")  # fmt: skip
        trees = {name: tree_after[name][0] - tree_before[name][0] for name in tree_before}
        kernel = {name: tree_after[name][1] - tree_before[name][1] for name in tree_before}
        total_cpu = sum(trees.values())
        print(f"\n{'daemon + descendants':<22} {'CPU s':>7} {'CPU ms/job':>11} {'kernel %':>9}")
        for name, used in trees.items():
            print(f"{name:<22} {used:>7.2f} {used / jobs * 1000:>11.3f} {kernel[name] / max(used, 1e-9) * 100:>8.0f}%")
        workers_cpu = total_cpu - trees["enqueued"]
        print(f"{'all':<22} {total_cpu:>7.2f} {total_cpu / jobs * 1000:>11.3f}")
        print(f"{'all but enqueued':<22} {workers_cpu:>7.2f} {workers_cpu / jobs * 1000:>11.3f}"
              "  (the issue's 'CPU per no-op job': workers, job children, toolhost, executors)")  # fmt: skip
        table = []
        print(f"\n{'process':<20} {'pid':>7} {'CPU s':>7} {'CPU ms/job':>11}  command")
        for name, pid in procs.items():
            before, after = cpu_before[name], cpu_after[name]
            if before is None or after is None:
                print(f"{name:<20} {pid:>7} {'exited':>7} {'':>11}  (counted in its parent's figure above)")
                continue
            used = after - before
            table.append((name, pid, used))
            print(f"{name:<20} {pid:>7} {used:>7.2f} {used / jobs * 1000:>11.3f}  {cmdline(pid)[:70]}")
        # one summary per role: the job children of all workers together, the executors together
        roles: dict[str, list[str]] = collections.defaultdict(list)
        for name in procs:
            roles[_role(name)].append(name)
        for role, names in roles.items():
            samples, selfs, incl = summarize([args.out / f"{n}.raw" for n in names], args.top)
            used = sum(u for n, _, u in table if n in names)
            lines = [f"# {role}: {', '.join(names)}",
                     f"# {samples} samples at {args.rate} Hz over {window} s (idle threads left out); CPU of "
                     f"these processes {used:.2f} s, {used / jobs * 1000:.3f} ms per job ({jobs} jobs)", "",
                     "self samples   %   function (leaf frame)"]  # fmt: skip
            lines += [f"{n:>12} {n / max(samples, 1) * 100:5.1f}  {f}" for f, n in selfs]
            lines += ["", "inclusive      %   function (anywhere on the stack)"]
            lines += [f"{n:>12} {n / max(samples, 1) * 100:5.1f}  {f}" for f, n in incl]
            (args.out / f"{role}.txt").write_text("\n".join(lines) + "\n")
            if samples:
                print("\n" + "\n".join(lines[:2] + lines[3 : 4 + min(args.top, 12)]))
        if perf is not None:
            perf.wait(60)
            kernel_costs(args.out / "perf.data", procs, args.out)
        (args.out / "summary.json").write_text(json.dumps(
            {"jobs": jobs, "seconds": elapsed, "tree_cpu_s": trees, "cpu_s": {n: u for n, _, u in table}},
            indent=1))  # fmt: skip
        print(f"\nper-process summaries and raw stacks: {args.out}/")
    finally:
        for proc in spies.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
        if suite is not None:
            suite.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
