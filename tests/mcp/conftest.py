"""Fixtures: a real MCP tool server, a live gateway with it registered, and the official `mcp` client."""
from __future__ import annotations

import asyncio

import pytest

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.mcp.servers import create_server

from ..conftest import shared_server
from .tool_server import SECRET, ToolServer

tools_servers = shared_server(lambda: ToolServer().start())


@pytest.fixture
def tools(tools_servers):
    """A real MCP server on 127.0.0.1, with nothing recorded yet."""
    return tools_servers.take()


class Keys:
    """Raw keys of the seeded users."""


@pytest.fixture
def mcp_seed(app, tools) -> Keys:
    """Server `tools` (with its own secret); users: `ann` all MCP, `ned` no access, `tia` only tools/add."""
    keys = Keys()
    with app.app_context():
        create_server("t", "tools", tools.url, api_key=SECRET, headers={"X-Team": "blue"})
        manage.create_prompt("t", "greeter", "Greet {{name}} warmly in {{lang}}.", description="A greeting",
                             variables={"lang": "English"}, mcp=True)
        ann = manage.create_user("t", "ann", all_mcp=True, all_prompts=True)
        _, keys.ann = manage.create_key("t", ann)
        ned = manage.create_user("t", "ned", all_models=True)
        _, keys.ned = manage.create_key("t", ned)
        tia = manage.create_user("t", "tia", allow_mcp=["tools/add"])
        _, keys.tia = manage.create_key("t", tia)
        db.session.commit()
    return keys


async def _session(url: str, key: str | None, fn):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await fn(session)


def with_session(live: str, key: str | None, fn):
    """Connect the official MCP client to the gateway's /mcp with a key, run `fn(session)`, return its result."""
    return asyncio.run(_session(f"{live}/mcp", key, fn))




def rpc(live: str, key: str | None, message, session: str | None = None, headers: dict | None = None,
        method: str = "POST"):
    """One raw HTTP exchange with /mcp (for what the SDK would never send)."""
    import orjson
    import requests

    sent = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    if session:
        sent["Mcp-Session-Id"] = session
    data = message if isinstance(message, bytes) else orjson.dumps(message)
    return requests.request(method, f"{live}/mcp", data=data, headers=sent, timeout=30)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def open_session(live: str, key: str) -> str:
    """Initialize over raw HTTP; returns the session id."""
    resp = rpc(live, key, INIT)
    assert resp.status_code == 200, resp.text
    return resp.headers["Mcp-Session-Id"]
