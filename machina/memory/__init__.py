"""Memory streams under ``MACHINA_ROOT/memory/`` and their search index.

* :mod:`~machina.memory.streams`  stream names, the line format, locked durable appends, reading lines
* :mod:`~machina.memory.schemas`  one JSON Schema per typed stream (the record inside each line)
* :mod:`~machina.memory.index`    a rebuildable SQLite FTS5 index with BM25, recency and MMR
* :mod:`~machina.memory.verify`   ``reindex --verify``: JSON, schemas, duplicates, index in step

The typed streams (experiences, insights, skills, knowledge, entities, relations) are written only by the
agent components through :func:`machina.memory.streams.append`; a job's ``AID.MEMORY.APPEND.v1`` may write
free streams only.
"""
