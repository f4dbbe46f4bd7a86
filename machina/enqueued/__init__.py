"""machina-enqueued: the HTTP ingress daemon (DESIGN.md section 4).

Modules: :mod:`~machina.enqueued.main` (command line), :mod:`~machina.enqueued.settings` (its knobs),
:mod:`~machina.enqueued.server` (lifecycle), :mod:`~machina.enqueued.listen` (sockets),
:mod:`~machina.enqueued.protocol` (uvicorn's HTTP protocol with header/body deadlines),
:mod:`~machina.enqueued.app` (the ASGI application), :mod:`~machina.enqueued.auth` and
:mod:`~machina.enqueued.nonces` (token and HMAC), :mod:`~machina.enqueued.ratelimit`,
:mod:`~machina.enqueued.metrics`.  Request validation is the queue's (:func:`machina.queue.load_request`).
"""
