"""The MCP gateway: tool servers behind /mcp with the gateway's keys, access lists, limits and request log."""
