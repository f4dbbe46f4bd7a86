"""machina-toolhost: the one place tools run.

Every tool call of every component (worker, ``machina run``, chat, Telegram, autonomic) arrives here over a
Unix socket, through :class:`machina.toolhost.client.ToolhostClient`, and takes one path
(:mod:`machina.toolhost.calls`): manifest check, idempotency, permission mode, lease, sandboxed run.

Modules: ``protocol`` (the wire format, documented there and in machina-toolhost(8)), ``service`` (lifecycle,
peers), ``calls`` (one call), ``catalog`` (built-ins and pinned plugins), ``permissions``, ``leases``,
``idempotency``, ``runners`` (which tool takes which sandbox path), ``pool`` (Python executors, fresh or
pre-started), ``broker`` and ``confine`` (what a sandboxed tool may ask of the root), ``enqueue``,
``client``, ``main``.
"""
