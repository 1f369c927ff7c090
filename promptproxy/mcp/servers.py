"""Create and change MCP servers (CLI, dashboard and `apply` share these); secrets encrypted, URLs guarded."""
from __future__ import annotations

import re

import orjson
from flask import current_app

from ..crypto import hint
from ..extensions import db
from ..manage import ManageError, _check_url, _lookup, _unique, audit
from ..models import McpServer
from ..netguard import drop_secrets_on_host_change

# Tool names reach clients as SERVER__TOOL, so a server name holds no "__" (the split must be unambiguous).
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,47}$")
HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Each secret of a server and the columns holding it (netguard.drop_secrets_on_host_change).
SECRETS = {"api_key": ("api_key_encrypted", "api_key_hint"), "headers": ("headers_encrypted", "header_names")}


def check_name(name: str) -> str:
    """A server name: 1-48 letters, digits, '-' or single '_', starting with a letter or digit."""
    if not NAME_RE.match(name or "") or name.endswith("_"):
        raise ManageError("MCP server name must be 1-48 letters, digits, '-' or '_' (no '__', no leading or "
                          "trailing '_')")
    return name


def get_server(ref: str) -> McpServer:
    """An MCP server by name or id."""
    return _lookup(McpServer, McpServer.name, ref, "MCP server")


def _set_secrets(server: McpServer, api_key: str | None, headers: dict | None) -> None:
    box = current_app.extensions["promptproxy"].box
    if api_key is not None:
        server.api_key_encrypted = box.encrypt(api_key) if api_key else None
        server.api_key_hint = hint(api_key) if api_key else None
    if headers is not None:
        for name, value in headers.items():
            if not HEADER_RE.match(name) or any(c in str(value) for c in "\r\n\0"):
                raise ManageError(f"header `{name}` has an invalid name or value")
        server.headers_encrypted = box.encrypt(orjson.dumps(headers).decode()) if headers else None
        server.header_names = sorted(headers) or None


def _options(server: McpServer, description: str | None, timeout: float | None, enabled: bool | None) -> dict:
    changed = {}
    if description is not None:
        server.description = changed["description"] = description[:2000]
    if timeout is not None:
        if timeout <= 0:
            raise ManageError("timeout must be positive")
        server.timeout = changed["timeout"] = timeout
    if enabled is not None:
        server.enabled = changed["enabled"] = enabled
    return changed


def create_server(actor: str, name: str, url: str, api_key: str | None = None, headers: dict | None = None,
                  description: str | None = None, timeout: float | None = None,
                  enabled: bool | None = None) -> McpServer:
    """A new MCP server; its URL passes the address guard, its secrets are encrypted before they are stored."""
    name = check_name(name)
    _unique(McpServer, McpServer.name, name, "MCP server")
    server = McpServer(name=name, url=_check_url(url), description="", enabled=True)
    _set_secrets(server, api_key, headers)
    _options(server, description, timeout, enabled)
    db.session.add(server)
    db.session.flush()
    audit(actor, "create", "mcp_server", name, {"url": server.url, "headers": server.header_names})
    return server


def update_server(actor: str, server: McpServer, url: str | None = None, api_key: str | None = None,
                  headers: dict | None = None, description: str | None = None, timeout: float | None = None,
                  enabled: bool | None = None, name: str | None = None) -> dict:
    """Change a server; a new host without new credentials drops the old ones (never sent to another host)."""
    changed = _options(server, description, timeout, enabled)
    if name is not None and name != server.name:
        _unique(McpServer, McpServer.name, check_name(name), "MCP server", server.id)
        server.name = changed["name"] = name
    if url is not None:
        url = _check_url(url)
        changed.update(drop_secrets_on_host_change(server, server.url, url, SECRETS,
                                                   {"api_key": api_key, "headers": headers}))
        server.url = changed["url"] = url
    if api_key is not None:
        changed["api_key"] = "replaced" if api_key else "cleared"
    if headers is not None:
        changed["headers"] = sorted(headers)
    _set_secrets(server, api_key, headers)
    audit(actor, "update", "mcp_server", server.name, changed)
    return changed


def delete_server(actor: str, server: McpServer) -> None:
    """Delete a server (grants naming it stop matching anything)."""
    db.session.delete(server)
    audit(actor, "delete", "mcp_server", server.name)


def server_dict(s: McpServer) -> dict:
    """A server as shown: the key only as a hint, header names without values."""
    return {"id": s.id, "name": s.name, "url": s.url, "description": s.description,
            "api_key": s.api_key_hint if s.api_key_encrypted else None, "headers": s.header_names or [],
            "timeout": s.timeout, "enabled": s.enabled}
