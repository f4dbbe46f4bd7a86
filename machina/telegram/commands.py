"""The 18 commands of OPERATIONS.md ("Telegram bot integration"), their descriptions for setMyCommands, and
which of them change the system (refused to users not in TELEGRAM_ADMIN_USER_IDS)."""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "start": "Introduction: backend, model, profile, tools, commands",
    "clear": "Forget this chat's conversation",
    "status": "Backend, profile, autonomic state, history, tools, root",
    "gpu": "Run the GPU smoke test",
    "models": "List the backend's models",
    "use": "Switch backend or model for this chat: /use <n or name>",
    "auto_status": "Autonomic engine: levels, burst, curiosity",
    "auto_route": "Route complex requests to a second backend: on, off, status",
    "stop": "Cancel the running turn",
    "mcp_status": "MCP servers and their state",
    "mcp_reload": "Reload the MCP servers",
    "mcp_enable": "Enable an MCP server: /mcp_enable <server>",
    "mcp_disable": "Disable an MCP server: /mcp_disable <server>",
    "mcp_add": "Add an MCP server from the operator's allow-list",
    "mcp_remove": "Remove an MCP server: /mcp_remove <server>",
    "dev_mode": "Autonomic DEV explore timings: on or off",
    "tools": "The tools the model can use, grouped",
    "graph_status": "Graph memory statistics, or one entity: /graph_status [entity]",
}

#: Commands that change the system: only TELEGRAM_ADMIN_USER_IDS may run them.
ADMIN_ONLY = frozenset({"use", "mcp_reload", "mcp_enable", "mcp_disable", "mcp_add", "mcp_remove", "dev_mode"})
