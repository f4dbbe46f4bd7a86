"""Plugins: Python files in ``$MACHINA_ROOT/plugins/``, each pinned by SHA-256 in ``plugins/pins.json``.

A plugin file declares itself in a literal dictionary and defines ``run``::

    MACHINA_PLUGIN = {
        "aid": "AID.PLUGIN.WORD_COUNT.v1",      # an example plugin (aid-refs: ignore)
        "name": "word_count",
        "description": "Count the words of a file under the root.",
        "tags": ["tag.text"],
        "capabilities": ["FILE_READ"],          # omitted: every capability (and so refused by default)
        "inputs_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }

    def run(inputs, host):
        return {"words": len(host.read_file(inputs["path"]).split())}

The toolhost never executes plugin code itself.  It reads the file once, compares its SHA-256 with the pin
in constant time (:mod:`machina.plugins.pins`), reads the declaration with ``ast`` (no execution), refuses
capabilities beyond ``MACHINA_PLUGIN_ALLOWED_CAPS`` (:mod:`machina.plugins.loader`), and sends exactly the
bytes it checked to a fresh sandboxed executor for every call.  There the capabilities are enforced by
the sandbox, not by trust (:mod:`machina.plugins.caps`): without NETWORK no network namespace, without
SHELL no execve, without FILE_*/MEMORY the toolhost refuses those requests.
"""
