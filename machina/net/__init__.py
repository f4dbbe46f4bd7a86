"""Network access for tools: the SSRF defence and the pinned fetch behind AID.NET.HTTP_GET.v1.

- ``machina.net.addresses``: which IP addresses may be reached (the table of refused ranges).
- ``machina.net.ssrf``: URL parsing, the host allowlist, one DNS resolution, ``check_url`` → ``Target``.
- ``machina.net.fetch``: ``http_get`` (check, then GET from the pinned address with requests).

Nothing here reads configuration: the toolhost passes ``MACHINA_HTTP_*`` values in.
"""
