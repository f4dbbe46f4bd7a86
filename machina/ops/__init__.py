"""Maintenance that cron and systemd timers run (the ``scripts/`` of the operations manual).

Every command is safe by default: one that changes anything does so only with ``--apply`` and otherwise
prints what it would do.  Exit codes are for cron and ``OnFailure=``: 0 all good, 1 problems found, 69 a
service is down or nothing runs, 73 a file could not be written, 78 bad configuration (see machina(7)).

- :mod:`aidrefs`: ``validate_aid_refs`` / ``validate_docs_refs`` (AID strings match the tool manifests)
- :mod:`secrets`: ``security_guardrails`` (no plain-text keys in config files)
- :mod:`memory`: ``work_memory_maintenance`` (archive, then keep the tail) and ``reindex --verify``
- :mod:`stack`: ``ops_detect``, ``ops_kill``, ``ops_start``, ``ops_restart``, ``ops_healthcheck``
"""
