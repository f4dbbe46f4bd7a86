"""The MCP bridge: the toolhost's connections to the operator's MCP servers (mcp_servers.json).

Each server's tools are served as ``AID.MCP.<SERVER>.<TOOL>.v1`` through the toolhost like every other tool
(manifest check, permission mode, leases, one log line per call).  Modules, one responsibility each:

    names        AIDs from server and tool names; the digest an operator pins
    pins         the approved digests, under the root's state (state/mcp/pins.json)
    launch       which stdio server may start, and its sandboxed launch (allow-list, minimal environment)
    transport    stdio to a sandboxed server process, as the SDK's read/write streams
    connection   one owner thread (and event loop) per server: connect, list, call, close
    results      an MCP tool result as a capped tool output
    bridge       all servers together: the toolhost's view (resolve, listing, call, status, pin, reload)

The SDK (the optional ``mcp`` extra) is imported only by transport, connection and the test servers.
"""
