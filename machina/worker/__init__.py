"""machina-worker: claims jobs from the queue and runs each in a pre-started job child through the goal
engine, settling it with the queue.

Modules, outside in: :mod:`.main` (the command line), :mod:`.service` (lifecycle: take over the worker
id, start the children, READY, watchdog, stop with a grace period), :mod:`.slot` (claim, run, settle),
:mod:`.pool` and :mod:`.children` (the job children and their replacement), :mod:`.protocol` (what the
worker and a child say over their pipe, and what a child starts with), :mod:`.child` (the child's side:
one engine, one toolhost client), :mod:`.results` (what each attempt records and what the queue is told),
:mod:`.orphans` (processes a killed child leaves behind).
"""
