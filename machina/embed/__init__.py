"""machina-embed: text embeddings and similarity-based tool selection (the GPU_CENTROID selector).

Modules, each with one job:

* :mod:`~machina.embed.hashing`   the ``hash`` provider (feature hashing; stable across processes)
* :mod:`~machina.embed.providers` the ``cmd`` provider (run by machina.proc): protocol checks, counters, breaker
* :mod:`~machina.embed.arrays`    the one numpy/cupy switch
* :mod:`~machina.embed.ranking`   centroid matrix and deterministic top-k
* :mod:`~machina.embed.history`   goal texts of successful runs, persisted under ``state/``
* :mod:`~machina.embed.engine`    centroids, caches and selection in one process
* :mod:`~machina.embed.service`   the Unix-socket service and its JSON protocol (documented there)
* :mod:`~machina.embed.client`    :class:`EmbedClient` for the worker, tools and CLI
* :mod:`~machina.embed.selector`  :class:`CentroidSelector`, what the goal engine plugs in
* :mod:`~machina.embed.wiring`    building the engine from the configuration; ``main`` the executable
"""
