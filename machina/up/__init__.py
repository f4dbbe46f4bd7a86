"""``machina up``: the suite as plain child processes, for machines without systemd.

The same executables, arguments and environment as the units in ``systemd/`` (``machina.target``): a
supervisor starts them, learns their readiness and watchdog pings over a notify socket exactly as systemd
would (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``), restarts a crashed or hung child with backoff, and stops them
all (TERM, wait, KILL) on Ctrl-C or SIGTERM, leaving no process behind.  Pid files and a state file under the
runtime directory let ``machina status`` and the ops scripts find what is running without matching names.

Modules: :mod:`components` (what to run), :mod:`notifysock`, :mod:`pidfiles`,
:mod:`supervisor` (the loop), :mod:`health` (probes shared with ``machina status`` and ``ops_healthcheck``).
"""
