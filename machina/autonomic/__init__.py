"""``machina-autonomic``: self-improvement levels under gates that fail closed.

* :mod:`~machina.autonomic.timings`   every interval, per profile (normal and DEV explore), named
* :mod:`~machina.autonomic.state`     ``state/autonomic_state.json``: written atomically, restored at start
* :mod:`~machina.autonomic.schedule`  which level is due now (by idle time and rate)
* :mod:`~machina.autonomic.reflect`   L1 Reflect: tool success statistics -> a ``tool_stats`` insight
* :mod:`~machina.autonomic.trust`     trust scores and pruning into the archive (never into nothing)
* :mod:`~machina.autonomic.reward`    the reward tracker: success rate per 100-experience window
* :mod:`~machina.autonomic.logcaps`   per-file and total caps on generated streams, halving by streaming
* :mod:`~machina.autonomic.gate`      the regression gate: a change that is not proven no worse is rejected
* :mod:`~machina.autonomic.engine`    the heartbeat that runs due levels and records what they did
* :mod:`~machina.autonomic.service`   the daemon's lifecycle (pid file, state saved on every stop)
"""
