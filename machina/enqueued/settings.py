"""machina-enqueued's knobs, read once from the loaded configuration (the ``serve`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from machina.config import Config

#: Below this length a token or HMAC secret is guessable; the daemon says so at start.
WEAK_SECRET_CHARS = 16


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"  #: MACHINA_API_HOST
    port: int = 8080  #: MACHINA_API_PORT
    socket_path: str | None = None  #: MACHINA_API_SOCKET: listen here instead of host:port
    token: str | None = None  #: MACHINA_API_TOKEN
    hmac_secret: str | None = None  #: MACHINA_API_HMAC_SECRET
    hmac_ttl_s: int = 60  #: MACHINA_API_HMAC_TTL_SEC
    max_body_bytes: int = 2 * 1024 * 1024  #: MACHINA_API_MAX_BODY_BYTES
    rpm: int = 0  #: MACHINA_API_RPM (0: off)
    enqueue_rpm: int = 0  #: MACHINA_API_ENQUEUE_RPM (0: off)
    metrics_public: bool = False  #: MACHINA_METRICS_PUBLIC
    header_timeout_s: float = 10.0  #: MACHINA_API_HEADER_TIMEOUT_MS
    body_timeout_s: float = 30.0  #: MACHINA_API_BODY_TIMEOUT_MS
    keepalive_timeout_s: float = 5.0  #: MACHINA_API_KEEPALIVE_TIMEOUT_MS
    max_header_bytes: int = 64 * 1024  #: MACHINA_API_MAX_HEADER_BYTES
    max_connections: int = 1000  #: MACHINA_API_MAX_CONNECTIONS
    threads: int = 32  #: MACHINA_API_THREADS
    shutdown_timeout_s: float = 20.0  #: MACHINA_API_SHUTDOWN_TIMEOUT_MS

    @classmethod
    def from_config(cls, cfg: Config) -> ServerSettings:
        return cls(
            host=cfg["MACHINA_API_HOST"],
            port=cfg["MACHINA_API_PORT"],
            socket_path=cfg["MACHINA_API_SOCKET"],
            token=cfg["MACHINA_API_TOKEN"] or None,
            hmac_secret=cfg["MACHINA_API_HMAC_SECRET"] or None,
            hmac_ttl_s=cfg["MACHINA_API_HMAC_TTL_SEC"],
            max_body_bytes=cfg["MACHINA_API_MAX_BODY_BYTES"],
            rpm=cfg["MACHINA_API_RPM"],
            enqueue_rpm=cfg["MACHINA_API_ENQUEUE_RPM"],
            metrics_public=cfg["MACHINA_METRICS_PUBLIC"],
            header_timeout_s=cfg["MACHINA_API_HEADER_TIMEOUT_MS"] / 1000,
            body_timeout_s=cfg["MACHINA_API_BODY_TIMEOUT_MS"] / 1000,
            keepalive_timeout_s=cfg["MACHINA_API_KEEPALIVE_TIMEOUT_MS"] / 1000,
            max_header_bytes=cfg["MACHINA_API_MAX_HEADER_BYTES"],
            max_connections=cfg["MACHINA_API_MAX_CONNECTIONS"],
            threads=cfg["MACHINA_API_THREADS"],
            shutdown_timeout_s=cfg["MACHINA_API_SHUTDOWN_TIMEOUT_MS"] / 1000,
        )

    def weak_secrets(self) -> list[str]:
        """Names of the configured credentials that are too short to resist guessing."""
        named = (("MACHINA_API_TOKEN", self.token), ("MACHINA_API_HMAC_SECRET", self.hmac_secret))
        return [name for name, value in named if value is not None and len(value) < WEAK_SECRET_CHARS]
