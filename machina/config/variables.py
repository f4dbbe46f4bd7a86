"""Every configuration variable Machina reads, declared once: name, kind, default, unit and one line of doc.

This table is the contract of OPERATIONS.md.  Nothing else in Machina reads ``os.environ`` for a
``MACHINA_*`` value: code asks the loaded :class:`machina.config.Config`.  ``machina config show`` and
``etc/machina/machina.env`` are generated from this table, so a variable added here is documented there.

Units live in the names where the manual put them (``_MS``, ``_SEC``, ``_MB``); byte sizes without a unit
suffix are bytes.  Where the earlier C++ runtime had a default, we keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machina.config.kinds import Bool, Choice, Command, Float, Int, Kind, List, Path, QueueUrl, Text, Uids

MS_MAX = 7 * 24 * 3600 * 1000  # one week: no timeout or interval is sensibly longer
KIB = 1024
MIB = 1024 * 1024

HOST_PATTERN = r"\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?"
AID_PATTERN = r"AID\.[A-Z0-9_]+(\.[A-Z0-9_]+)*(\.v[0-9]+)?\*?|AID\.[A-Z0-9_.]*\*|\*"
EXE_PATTERN = r"[A-Za-z0-9._+-]+"
# A base URL of an LLM server: no credentials, query or fragment in it (keys go in headers, and URLs get logged).
URL_PATTERN = r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?"
URL_TEXT = "an http:// or https:// URL without credentials, query or fragment"
MODEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*"
MODEL_TEXT = "a model name (letters, digits and . _ : / @ + -)"


@dataclass(frozen=True)
class Var:
    name: str
    kind: Kind
    default: Any
    doc: str
    section: str
    secret: bool = False

    def expects(self) -> str:
        return self.kind.expects()


_VARS: list[Var] = []
_section = ""


def _section_start(name: str) -> None:
    global _section
    _section = name


def _var(name: str, kind: Kind, default: Any, doc: str, *, secret: bool = False) -> None:
    _VARS.append(Var(name, kind, default, doc, _section, secret))


def _rlimits(prefix: str, what: str, cpu: int, as_mb: int, fsize_mb: int, nofile: int, nproc: int) -> None:
    """The five rlimit knobs the manual names ``<PREFIX>_RLIMIT_*``; 0 means unlimited."""
    _var(f"{prefix}_RLIMIT_CPU_SEC", Int(0, 86400, "seconds"), cpu, f"CPU-time limit of {what} (0 = none)")
    _var(f"{prefix}_RLIMIT_AS_MB", Int(0, 1 << 20, "MiB"), as_mb, f"address-space limit of {what} (0 = none)")
    _var(
        f"{prefix}_RLIMIT_FSIZE_MB",
        Int(0, 1 << 20, "MiB"),
        fsize_mb,
        f"largest file {what} may write (0 = none)",
    )
    _var(f"{prefix}_RLIMIT_NOFILE", Int(0, 1 << 20), nofile, f"open-file limit of {what} (0 = none)")
    _var(
        f"{prefix}_RLIMIT_NPROC",
        Int(0, 1 << 20),
        nproc,
        f"task limit of {what} (threads count): the tasks of its uid in its own sandbox, or of the tool uid"
        " (0 = none; left out without bubblewrap for a non-root daemon, whose own tasks it would count)",
    )


# --- suite-wide ------------------------------------------------------------------------------------------
_section_start("suite")
_var(
    "MACHINA_PROFILE",
    Choice(("dev", "prod")),
    "dev",
    "profile whose table of defaults applies (see Profile system)",
)
_var("MACHINA_ROOT", Path(), None, "working root holding the queue, logs, memory, packs and state; must exist")
_var(
    "MACHINA_ENV_FILE",
    Path(),
    "/etc/machina/machina.env",
    "optional KEY=VALUE file read between the defaults and the environment (ignored when missing)",
)
_var(
    "MACHINA_LOG_LEVEL",
    Choice(("debug", "info", "warning", "error")),
    "info",
    "lowest level logged to stderr",
)
_var(
    "MACHINA_RUNTIME_DIR",
    Path(),
    None,
    "directory for sockets and pid files (default: $RUNTIME_DIRECTORY under systemd, else $MACHINA_ROOT/run)",
)
_var(
    "MACHINA_IPC_MAX_CONNECTIONS_PER_UID",
    Int(1, 65536),
    64,
    "connections one peer uid may hold open to a socket service (toolhost, embed); more are refused busy",
)
_var(
    "MACHINA_IPC_MAX_CONNECTIONS",
    Int(1, 65536),
    1024,
    "connections (one thread each) a socket service (toolhost, embed) holds open in all",
)
_var(
    "MACHINA_IPC_IDLE_TIMEOUT_MS",
    Int(1000, MS_MAX, "ms"),
    600000,
    "a socket service closes a connection idle this long between requests (clients reconnect)",
)

# --- serve / HTTP ingress --------------------------------------------------------------------------------
_section_start("serve")
_var(
    "MACHINA_API_HOST",
    Text(r"[A-Za-z0-9.:\[\]-]+", "a host name or IP address"),
    "127.0.0.1",
    "address machina-enqueued listens on",
)
_var("MACHINA_API_PORT", Int(1, 65535), 8080, "TCP port machina-enqueued listens on")
_var("MACHINA_API_TOKEN", Text(), None, "bearer token for the HTTP API", secret=True)
_var(
    "MACHINA_API_HMAC_SECRET",
    Text(),
    None,
    "HMAC-SHA256 request-signing secret for the HTTP API",
    secret=True,
)
_var("MACHINA_API_HMAC_TTL_SEC", Int(1, 3600, "seconds"), 60, "largest accepted |now - X-Machina-Ts|")
_var("MACHINA_API_MAX_BODY_BYTES", Int(1, 256 * MIB, "bytes"), 2 * MIB, "largest accepted request body")
_var(
    "MACHINA_API_RPM",
    Int(0, 10**9, "requests per minute"),
    0,
    "token-bucket rate limit on all authenticated requests (0 = off)",
)
_var(
    "MACHINA_API_ENQUEUE_RPM",
    Int(0, 10**9, "requests per minute"),
    0,
    "token-bucket rate limit on POST /enqueue (0 = off)",
)
_var("MACHINA_METRICS_PUBLIC", Bool(), False, "serve GET /metrics without auth")
_var(
    "MACHINA_API_SOCKET",
    Path(),
    None,
    "Unix socket machina-enqueued listens on instead of MACHINA_API_HOST:MACHINA_API_PORT",
)
_var(
    "MACHINA_API_HEADER_TIMEOUT_MS",
    Int(100, 600000, "ms"),
    10000,
    "a request line and headers must arrive within this time (slow clients are cut off with 408)",
)
_var(
    "MACHINA_API_BODY_TIMEOUT_MS",
    Int(100, 600000, "ms"),
    30000,
    "a request body must arrive within this time after its headers (else 408)",
)
_var(
    "MACHINA_API_KEEPALIVE_TIMEOUT_MS",
    Int(100, 600000, "ms"),
    5000,
    "an idle keep-alive connection is closed after this time",
)
_var(
    "MACHINA_API_MAX_HEADER_BYTES",
    Int(1024, 1 * MIB, "bytes"),
    64 * KIB,
    "largest accepted request line plus headers (else 431)",
)
_var(
    "MACHINA_API_MAX_CONNECTIONS",
    Int(1, 100000),
    1000,
    "open connections (or requests in flight) beyond which new requests are answered 503",
)
_var(
    "MACHINA_API_THREADS",
    Int(1, 512),
    32,
    "machina-enqueued's threads for blocking queue calls: stats, job lookups, and writing jobs on a backend that "
    "cannot commit a batch together (PostgreSQL); the file queue's jobs are written in batches by two threads",
)
_var(
    "MACHINA_API_SHUTDOWN_TIMEOUT_MS",
    Int(0, 600000, "ms"),
    20000,
    "on SIGTERM, how long requests in flight may take to finish",
)
_var(
    "MACHINA_WORKERS",
    Int(1, 64),
    2,
    "worker processes started by `machina up` / `machina serve` (capped at 64)",
)

# --- queue and durability --------------------------------------------------------------------------------
_section_start("queue")
_var(
    "MACHINA_QUEUE_URL",
    QueueUrl(),
    None,
    "where the queue lives: unset or file: = files under $MACHINA_ROOT/queue (one machine); a postgresql:// "
    "URL (libpq, no password in it) = a PostgreSQL database shared by hosts (docs/SCALING.md)",
)
_var(
    "MACHINA_QUEUE_PASSWORD",
    Text(),
    None,
    "password for the MACHINA_QUEUE_URL database (else PGPASSFILE or ~/.pgpass; never put it in the URL)",
    secret=True,
)
_var(
    "MACHINA_QUEUE_POOL_SIZE",
    Int(1, 64, "connections"),
    4,
    "most database connections one process's queue holds for its transactions (PostgreSQL queue only)",
)
_var("MACHINA_WAL_ENABLE", Bool(), True, "keep the write-ahead log and checkpoint for fast restart and dedup")
_var("MACHINA_WAL_CHECKPOINT_MS", Int(1, MS_MAX, "ms"), 5000, "interval between WAL checkpoints")
_var("MACHINA_WAL_FSYNC", Bool(), False, "fsync files and directories before a queue change is reported")
_var("MACHINA_WAL_CRC32", Bool(), False, "add a CRC32 checksum to every WAL record")
_var("MACHINA_SERVE_SCAN_MS", Int(1, MS_MAX, "ms"), 150, "fallback rescan interval of idle workers")
_var("MACHINA_RETRY_MIN_MS", Int(0, MS_MAX, "ms"), 1000, "first retry delay (exponential backoff with jitter)")
_var("MACHINA_RETRY_MAX_MS", Int(0, MS_MAX, "ms"), 60000, "cap of the retry delay")
_var("MACHINA_MAX_ATTEMPTS", Int(1, 1000), 5, "attempts before a job goes to dlq/")
_var("MACHINA_DEDUP_TTL_MS", Int(0, 30 * 24 * 3600 * 1000, "ms"), 300000, "request_id idempotency window")
_var(
    "MACHINA_CLAIM_TIMEOUT_MS",
    Int(1000, MS_MAX, "ms"),
    600000,
    "a claimed job whose owner has not been seen for this long is recovered to the inbox",
)
_var(
    "MACHINA_JOB_TIMEOUT_MS",
    Int(100, MS_MAX, "ms"),
    300000,
    "wall-clock limit of one job attempt in a worker",
)
_var(
    "MACHINA_WORKER_CONCURRENCY",
    Int(1, 16, "jobs"),
    4,
    "jobs one machina-worker runs at once, each in its own pre-started job child (one more child waits spare)",
)
_var(
    "MACHINA_WORKER_CHILD_MAX_JOBS",
    Int(0, 10**9, "jobs"),
    10000,  # a start costs 125-200 ms of CPU; a child's RSS stays flat over 10,000 jobs (docs/SPEED.md)
    "a job child is replaced by a fresh one after this many jobs (0 = only when it dies or misbehaves)",
)
_var(
    "MACHINA_WORKER_STOP_GRACE_MS",
    Int(0, MS_MAX, "ms"),
    30000,
    "on SIGTERM a worker lets running jobs finish this long, then gives them back to the inbox",
)

# --- chat ------------------------------------------------------------------------------------------------
_section_start("chat")
_var("MACHINA_CHAT_CMD", Command(), None, "chat driver command (argv, no shell)")
_var(
    "MACHINA_CHAT_BACKEND",
    Choice(("oai_compat", "anthropic", "ollama")),
    "oai_compat",
    "LLM wire protocol of the chat driver (docs/LLM_BACKENDS.md)",
)
_var(
    "MACHINA_CHAT_TIMEOUT_MS",
    Int(1, MS_MAX, "ms"),
    60000,
    "chat driver timeout, and the limit of one model call (less when the Pulse budget has less left)",
)
_var("MACHINA_CHAT_TEMPERATURE", Float(0.0, 2.0), 0.7, "sampling temperature of model calls")
_var("MACHINA_CHAT_MAX_TOKENS", Int(1, 1_000_000, "tokens"), 4096, "most tokens one model answer may have")
_var(
    "MACHINA_CHAT_TOOL_MODE",
    Choice(("native", "json")),
    "native",
    "native: the protocol's tool calling; json: a JSON action object, for models without tool support",
)
_var(
    "OAI_COMPAT_BASE_URL",
    Text(URL_PATTERN, URL_TEXT),
    "http://127.0.0.1:11434",
    "base URL of the OpenAI-compatible server (a base already ending in /v1 also works)",
)
_var("OAI_COMPAT_MODEL", Text(MODEL_PATTERN, MODEL_TEXT), None, "model name sent to the OpenAI-compatible server")
_var(
    "OAI_COMPAT_API_KEY", Text(), None, "bearer key of the OpenAI-compatible server (none sent when unset)", secret=True
)
_var(
    "OAI_COMPAT_TIMEOUT_SEC",
    Int(1, 86400, "seconds"),
    None,
    "limit of one oai_compat call, replacing MACHINA_CHAT_TIMEOUT_MS for that backend (earlier setting)",
)
_var(
    "ANTHROPIC_BASE_URL",
    Text(URL_PATTERN, URL_TEXT),
    "https://api.anthropic.com",
    "base URL of the Anthropic Messages API",
)
_var("ANTHROPIC_API_KEY", Text(), None, "Anthropic API key (sent as x-api-key)", secret=True)
_var("ANTHROPIC_MODEL", Text(MODEL_PATTERN, MODEL_TEXT), None, "Anthropic model name")
_var(
    "ANTHROPIC_MAX_TOKENS",
    Int(1, 1_000_000, "tokens"),
    None,
    "max_tokens of Anthropic calls (default: MACHINA_CHAT_MAX_TOKENS)",
)
_var("OLLAMA_HOST", Text(URL_PATTERN, URL_TEXT), "http://127.0.0.1:11434", "base URL of the Ollama server")
_var("OLLAMA_MODEL", Text(MODEL_PATTERN, MODEL_TEXT), None, "Ollama model name")
_var(
    "MACHINA_AUTO_ROUTE_BACKEND",
    Choice(("oai_compat", "anthropic", "ollama")),
    None,
    "second backend that complex requests go to in a Telegram chat with /auto_route on (unset: no routing)",
)
_var(
    "MACHINA_AUTO_ROUTE_MODEL",
    Text(MODEL_PATTERN, MODEL_TEXT),
    None,
    "model of MACHINA_AUTO_ROUTE_BACKEND (default: that backend's own model variable)",
)
_var("MACHINA_MAX_CYCLES", Int(1, 100000), 100, "Pulse Loop cycle budget per conversation")
_var("MACHINA_PULSE_BUDGET_S", Int(1, 86400, "seconds"), 3600, "Pulse Loop wall-clock budget per conversation")
_var(
    "MACHINA_PERMISSION_TIMEOUT_S",
    Int(1, 86400, "seconds"),
    180,
    "how long a chat waits for a human's answer to an approval request; no answer in time means no",
)

# --- shell tool ------------------------------------------------------------------------------------------
_section_start("shell")
_var("MACHINA_SHELL_TIMEOUT_MS", Int(1, MS_MAX, "ms"), 30000, "AID.SHELL.EXEC.v1 wall-clock limit")
_var("MACHINA_SHELL_STDOUT_MAX", Int(0, 64 * MIB, "bytes"), 128 * KIB, "AID.SHELL.EXEC.v1 stdout cap")
_var("MACHINA_SHELL_STDERR_MAX", Int(0, 64 * MIB, "bytes"), 64 * KIB, "AID.SHELL.EXEC.v1 stderr cap")
_var(
    "MACHINA_SHELL_ALLOWED_EXE",
    List(EXE_PATTERN, "a comma-separated list of executable basenames"),
    ("cat", "date", "echo", "grep", "head", "ls", "sort", "tail", "true", "uniq", "wc"),
    "executables AID.SHELL.EXEC.v1 may run, matched on the canonical (symlink-resolved) path's basename",
)
_rlimits("MACHINA_SHELL", "shell tool processes", cpu=3, as_mb=1024, fsize_mb=16, nofile=64, nproc=32)

# --- HTTP tool -------------------------------------------------------------------------------------------
_section_start("http")
_var(
    "MACHINA_HTTP_ALLOWED_HOSTS",
    List(HOST_PATTERN, "a comma-separated list of host names (*.example.com allowed)"),
    (),
    "hosts AID.NET.HTTP_GET.v1 may fetch from (empty = any public host unless default-deny)",
)
_var("MACHINA_HTTP_DEFAULT_DENY", Bool(), False, "refuse every host when MACHINA_HTTP_ALLOWED_HOSTS is empty")
_var("MACHINA_HTTP_TIMEOUT_MS", Int(1, MS_MAX, "ms"), 3000, "AID.NET.HTTP_GET.v1 wall-clock limit")
_var("MACHINA_HTTP_STDOUT_MAX", Int(0, 64 * MIB, "bytes"), 128 * KIB, "AID.NET.HTTP_GET.v1 body cap")
_rlimits("MACHINA_HTTP", "HTTP tool processes", cpu=2, as_mb=512, fsize_mb=1, nofile=32, nproc=16)
_var(
    "MACHINA_SEARCH_URL",
    Text(URL_PATTERN, URL_TEXT),
    None,
    "base URL of a SearXNG-compatible JSON search endpoint for AID.NET.WEB_SEARCH.v1 (unset: no web search)",
)

# --- MCP bridge ------------------------------------------------------------------------------------------
_section_start("mcp")
_var(
    "MACHINA_MCP_CONFIG",
    Path(),
    "/etc/machina/mcp_servers.json",
    'the operator\'s mcp_servers.json ({"mcpServers": {...}}; secrets only as ${ENV_VAR}); missing = no MCP servers',
)
_var(
    "MACHINA_MCP_TOOL_TIMEOUT_MS",
    Int(1, MS_MAX, "ms"),
    180000,
    "wall-clock limit of one AID.MCP.* tool call (the server's listing is re-checked first)",
)
_var(
    "MACHINA_MCP_CONNECT_TIMEOUT_MS",
    Int(1, MS_MAX, "ms"),
    30000,
    "limit for starting an MCP server and completing its handshake and tool listing",
)
_var(
    "MACHINA_MCP_RESULT_MAX_BYTES",
    Int(1024, 64 * MIB, "bytes"),
    256 * KIB,
    "most bytes of text an AID.MCP.* result returns (the rest is cut and the result marked truncated)",
)
_var(
    "MACHINA_MCP_ALLOWED_COMMANDS",
    List(EXE_PATTERN, "a comma-separated list of executable basenames"),
    (),
    "commands a stdio MCP server may be started with, matched on the canonical (symlink-resolved) path's "
    "basename (empty = no stdio server starts)",
)

# --- policy driver ---------------------------------------------------------------------------------------
_section_start("policy")
_var("MACHINA_POLICY_CMD", Command(), None, "external policy selector command (argv, no shell)")
_var("MACHINA_POLICY_TIMEOUT_MS", Int(1, MS_MAX, "ms"), 60000, "policy driver wall-clock limit")
_var("MACHINA_POLICY_STDOUT_MAX", Int(1, 64 * MIB, "bytes"), 64 * KIB, "policy driver stdout cap")
_var(
    "MACHINA_POLICY_ALLOWED_EXE",
    List(EXE_PATTERN, "a comma-separated list of executable basenames"),
    ("python3", "python", "bash", "sh", "node"),
    "executables the policy command may start",
)
_var(
    "MACHINA_POLICY_ALLOWED_SCRIPT_ROOT",
    Path(),
    "/etc/machina/policies",
    "directory the policy script must live under; never under MACHINA_ROOT's data/, reports/ or work/,"
    " which jobs may write",
)
_rlimits("MACHINA_POLICY", "the policy driver", cpu=2, as_mb=768, fsize_mb=10, nofile=64, nproc=32)
_var(
    "MACHINA_POLICY_BREAKER_FAILURES",
    Int(1, 1000),
    3,
    "consecutive policy failures that open the circuit breaker",
)
_var(
    "MACHINA_POLICY_BREAKER_COOLDOWN_MS",
    Int(0, MS_MAX, "ms"),
    30000,
    "how long an open breaker skips the policy",
)

# --- embeddings and selection ----------------------------------------------------------------------------
_section_start("embed")
_var("MACHINA_EMBED_PROVIDER", Choice(("hash", "cmd")), "hash", "embedding provider")
_var("MACHINA_EMBED_CMD", Command(), None, "embedding command (argv, no shell), used when the provider is cmd")
_var(
    "MACHINA_EMBED_TIMEOUT_MS",
    Int(1, MS_MAX, "ms"),
    5000,
    "embedding command timeout (raise it for a first model load)",
)
_var("MACHINA_EMBED_CPU_MS", Int(0, MS_MAX, "ms"), 4000, "CPU-time limit of the embedding command (0 = none)")
_var(
    "MACHINA_EMBED_AS_MB",
    Int(0, 1 << 20, "MiB"),
    0,
    "address-space limit of the embedding command (0 = none)",
)
_var("MACHINA_EMBED_NPROC", Int(0, 1 << 20), 0, "process limit of the embedding command (0 = none)")
_var("MACHINA_GPU_DIM", Int(2, 8192), 128, "embedding vector dimension")
_var("MACHINA_SELECTOR", Choice(("HEURISTIC", "GPU_CENTROID")), "HEURISTIC", "tool selector of the goal engine")
_var(
    "MACHINA_EMBED_NOFILE",
    Int(0, 1 << 20),
    256,
    "open-file limit of the embedding command (0 = none)",
)
_var(
    "MACHINA_EMBED_MIN_SCORE",
    Float(-1.0, 1.0),
    0.1,
    "similarity floor: below it GPU_CENTROID picks nothing and the engine falls back to HEURISTIC",
)
_var(
    "MACHINA_EMBED_BATCH_MAX",
    Int(1, 100000),
    256,
    "most texts sent to the embedding command in one run (larger requests are split)",
)
_var(
    "MACHINA_EMBED_MAX_TEXTS",
    Int(1, 1000000),
    20000,
    "most texts (or menu items) machina-embed accepts in one request",
)
_var(
    "MACHINA_EMBED_MAX_CHARS",
    Int(16, 1 << 20, "characters"),
    4096,
    "texts are cut to this many characters before they are embedded",
)
_var(
    "MACHINA_EMBED_HISTORY",
    Int(0, 100000),
    256,
    "goal texts of successful runs kept per tool for its centroid (oldest dropped first)",
)
_var(
    "MACHINA_EMBED_CACHE_ENTRIES",
    Int(0, 10**7),
    50000,
    "tool centroids machina-embed keeps in memory (least recently used dropped first)",
)
_var(
    "MACHINA_EMBED_BREAKER_FAILURES",
    Int(0, 1000),
    3,
    "consecutive embedding-command failures after which hash answers alone for a cooldown (0 = never)",
)
_var(
    "MACHINA_EMBED_BREAKER_COOLDOWN_MS",
    Int(0, MS_MAX, "ms"),
    30000,
    "how long an open breaker skips the embedding command before trying it again",
)
_var(
    "MACHINA_EMBED_ALLOWED_UIDS",
    Uids(),
    (),
    "uids allowed to call machina-embed besides its own uid and root (never 65534; under the unit's"
    " PrivateUsers=yes only root and machina are seen as themselves)",
)

# --- sandbox ---------------------------------------------------------------------------------------------
_section_start("sandbox")
_var("MACHINA_SECCOMP_ENABLE", Bool(), False, "apply the seccomp-BPF filter to tool processes")
_var(
    "MACHINA_SECCOMP_PROFILE",
    Choice(("strict", "net")),
    "strict",
    "seccomp profile: strict blocks network syscalls",
)
_var("MACHINA_SECCOMP_ALLOW_NET", Bool(), False, "legacy toggle: same as MACHINA_SECCOMP_PROFILE=net")
_var("MACHINA_BWRAP_REQUIRED", Bool(), False, "fail instead of running a tool when bubblewrap is missing")
_var(
    "MACHINA_TOOLHOST_ISOLATE",
    Bool(),
    False,
    "never let two tool calls share an executor: each pre-started one is retired after a single call",
)
_var("MACHINA_TOOLHOST_TIMEOUT", Int(1, 86400, "seconds"), 90, "client-side limit of one toolhost call")
_var(
    "MACHINA_TOOL_UID",
    Int(1, 2**32 - 2),
    65534,
    "unprivileged uid tool processes run as when the toolhost is root",
)
_var(
    "MACHINA_TOOL_GID",
    Int(1, 2**32 - 2),
    65534,
    "unprivileged gid tool processes run as when the toolhost is root",
)
_var("MACHINA_CODE_TIMEOUT", Int(1, 86400, "seconds"), 60, "code execution tool limit")
_var(
    "MACHINA_TOOLHOST_POOL_SIZE",
    Int(0, 16),
    2,
    "pre-started built-in tool executors per sandbox profile, idle or busy (0 = a fresh sandbox every call)",
)
_var(
    "MACHINA_TOOLHOST_POOL_RECYCLE",
    Int(1, 1_000_000),
    5000,  # a start costs 60-90 ms of CPU; an executor's RSS stays flat over 5,000 calls (docs/SPEED.md)
    "calls after which a pre-started executor is replaced (it is replaced at once after any failure)",
)
_var("MACHINA_SANDBOX_TMP_MB", Int(1, 1 << 20, "MiB"), 64, "size of each sandbox's private /tmp (a tmpfs)")
_var(
    "MACHINA_TOOL_TIMEOUT_MS",
    Int(1, MS_MAX, "ms"),
    30000,
    "wall-clock limit of one built-in tool or plugin call (the shell and HTTP tools have their own)",
)
_rlimits("MACHINA_TOOL", "built-in tool executors and plugins", cpu=10, as_mb=1024, fsize_mb=64, nofile=64, nproc=16)
_var(
    "MACHINA_FILE_READ_MAX_BYTES",
    Int(0, 16 * MIB, "bytes"),
    MIB,
    "most bytes AID.FILE.READ.v1 returns (a caller's max_bytes can only lower it)",
)
_var(
    "MACHINA_MEMORY_QUERY_MAX_RECORDS",
    Int(1, 1_000_000),
    5000,
    "newest records of a stream AID.MEMORY.QUERY.v1 ranks",
)

# --- permissions and leases ------------------------------------------------------------------------------
_section_start("permissions")
_var("MACHINA_LEASE_ENFORCE", Bool(), False, "tier > 0 tools need a single-use lease token")
_var(
    "MACHINA_PERMISSION_MODE",
    Choice(("open", "standard", "locked", "supervised")),
    "standard",
    "permission mode deciding allow / ask / deny per tier",
)
_var(
    "MACHINA_TOOLHOST_ALLOWED_UIDS",
    Uids(),
    (),
    "uids allowed to call the toolhost besides its own uid and root (never 65534; under the unit's"
    " PrivateUsers=yes only root and machina are seen as themselves)",
)
_var(
    "MACHINA_TOOLHOST_ADMIN_UIDS",
    Uids(),
    (),
    "uids allowed to issue and collect leases besides root (never 65534)",
)
_var(
    "MACHINA_PLUGIN_ALLOWED_CAPS",
    List(
        r"FILE_READ|FILE_WRITE|SHELL|NETWORK|MEMORY|GENESIS|GPU",
        "a comma-separated list of plugin capabilities",
    ),
    ("FILE_READ", "MEMORY"),
    "largest capability set a plugin may declare",
)
_var(
    "MACHINA_PERMISSION_OVERRIDES",
    List(
        r"(AID\.[A-Za-z0-9_.]+\*?|\*)=(allow|ask|deny)",
        "a comma-separated list of AID=allow|ask|deny (AID exact, ending in *, or *)",
    ),
    (),
    "per-tool answers replacing the mode's; when several match, deny beats ask beats allow",
)
_var("MACHINA_LEASE_MAX_TTL_MS", Int(1000, 30 * 24 * 3600 * 1000, "ms"), 3600000, "longest lease a peer may ask for")
_var(
    "MACHINA_TOOLHOST_IDEMPOTENCY_TTL_MS",
    Int(0, MS_MAX, "ms"),
    600000,
    "how long a tool call's reply is kept for a repeated idempotency_key (0 = not kept)",
)

# --- audit -----------------------------------------------------------------------------------------------
_section_start("audit")
_var(
    "MACHINA_AUDIT_KEY",
    Text(),
    None,
    "key of the HMAC hash chain of run logs (plain SHA-256 when unset)",
    secret=True,
)

# --- autonomic and self-improvement ----------------------------------------------------------------------
_section_start("autonomic")
_var("MACHINA_GENESIS_ENABLE", Bool(), True, "allow Genesis (self-written tools)")
_var("MACHINA_GENESIS_GUARD", Bool(), False, "run Genesis output through the safety guard")
_var("MACHINA_GENESIS_PROD_MODE", Bool(), False, "Genesis production restrictions")
_var("MACHINA_SELF_EVOLVE", Bool(), False, "allow autonomous source patching under the safety gates")
_var("MACHINA_DEV_EXPLORE", Bool(), False, "aggressive self-improvement timings for development")
_var("MACHINA_AUTONOMIC_APPROVE_ALL_ASK", Bool(), False, "self-improvement loops auto-accept ASK tools")
_var(
    "MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS",
    List(AID_PATTERN, "a comma-separated list of AIDs"),
    (),
    "low-risk ASK tools the autonomic engine may approve by itself",
)
_var(
    "MACHINA_AUTONOMIC_UIDS",
    List(r"[0-9]+", "a comma-separated list of uids"),
    (),
    "uids the toolhost treats as the autonomic engine (the only peers the two settings above apply to; "
    "never 0: give the engine a uid of its own)",
)
_var(
    "MACHINA_REGRESSION_CMD",
    Command(),
    None,
    "test command of the regression gate (argv, no shell); unset, every self-made change is rejected",
)
_var(
    "MACHINA_REGRESSION_TIMEOUT_S",
    Int(1, 86400, "seconds"),
    600,
    "longest run of the regression gate's command; past it the change is rejected",
)
_var(
    "MACHINA_AUTONOMIC_LOG_FILE_CAP_BYTES",
    Int(1024, 1 << 50, "bytes"),
    2 * 1024 * MIB,
    "a memory stream larger than this is halved to its newest 50 % (the older half archived)",
)
_var(
    "MACHINA_AUTONOMIC_LOG_TOTAL_CAP_BYTES",
    Int(1024, 1 << 50, "bytes"),
    10 * 1024 * MIB,
    "while all memory streams together exceed this, the largest is halved",
)

# --- telegram --------------------------------------------------------------------------------------------
_section_start("telegram")
_var(
    "TELEGRAM_BOT_TOKEN",
    Text(),
    None,
    "Telegram bot token (from @BotFather); machina-telegram starts in `machina up` only when it is set",
    secret=True,
)
_var(
    "TELEGRAM_CHAT_ID",
    List(r"-?[0-9]{1,20}", "a chat id or comma-separated chat ids"),
    (),
    "chats allowed to drive the bot; machina-telegram refuses to start without it (exit 78)",
)
_var(
    "TELEGRAM_ALLOWED_USER_IDS",
    List(r"[0-9]{1,20}", "a comma-separated list of Telegram user ids"),
    (),
    "users allowed inside the allowed chats (empty: anyone in an allowed chat)",
)
_var(
    "TELEGRAM_ADMIN_USER_IDS",
    List(r"[0-9]{1,20}", "a comma-separated list of Telegram user ids"),
    (),
    "allowed users who may also run the commands that change the system (/use, /mcp_*, /dev_mode); empty: none",
)
_var(
    "MACHINA_TELEGRAM_API_URL",
    Text(URL_PATTERN, URL_TEXT),
    "https://api.telegram.org/bot",
    "Bot API base URL; the token and the method are appended (a local Bot API server, or a test server)",
)


VARIABLES: dict[str, Var] = {v.name: v for v in _VARS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(v.section for v in _VARS))
