"""Token-bucket rate limits (MACHINA_API_RPM, MACHINA_API_ENQUEUE_RPM), one bucket per client.

A bucket holds at most ``rpm`` tokens and refills at ``rpm / 60`` tokens a second, so a client may send a
minute's allowance in a burst and then ``rpm`` a minute on average.  A refused request learns how many
seconds until its next token (``Retry-After``).

**Keyed on the client's address**: the peer IP address of the TCP connection (never a client-supplied
header such as X-Forwarded-For, which anyone can forge); IPv6 peers by their /64 prefix, since one host
usually owns a whole /64.  Clients on the Unix socket share one bucket.  Behind a reverse proxy every
client is the proxy: limit there instead.  The table of buckets is bounded (least recently seen evicted).

Used only from the event loop thread, so no lock.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

from machina.clock import Clock

MAX_BUCKETS = 10_000


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate_per_s
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Spend a token: 0.0 when there was one, else the seconds until there will be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """``rpm`` requests a minute per client; ``rpm == 0`` turns it off."""

    def __init__(self, rpm: int, clock: Clock, max_buckets: int = MAX_BUCKETS) -> None:
        self.rpm = rpm
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rpm > 0

    def retry_after(self, key: str) -> int | None:
        """None when the request may go ahead; else whole seconds to wait (at least 1)."""
        if not self.enabled:
            return None
        now = self.clock.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rpm, self.rpm / 60, now)
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        wait = bucket.take(now)
        return None if wait == 0.0 else max(1, math.ceil(wait))


def client_key(client: tuple[str, int] | None) -> str:
    """The bucket key for an ASGI ``scope["client"]``."""
    if not client:
        return "unix"
    host = client[0]
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))
