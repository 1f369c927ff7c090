"""The official MCP client through the gateway's /mcp to a real MCP server: tools, prompts, access, the log."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from mcp.shared.exceptions import MCPError

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import ApiKey, RequestLog

from ..conftest import rows_when
from .conftest import SECRET, rpc, with_session


def test_tools_of_the_server_are_listed_prefixed_and_called_with_the_servers_own_credentials(live, mcp_seed, tools):
    async def run(s):
        return await s.list_tools(), await s.call_tool("tools__add", {"a": 2, "b": 3})

    listed, result = with_session(live, mcp_seed.ann, run)
    by_name = {t.name: t for t in listed.tools}
    assert sorted(by_name) == ["tools__add", "tools__echo", "tools__fail", "tools__leak"]
    assert by_name["tools__add"].input_schema["required"] == ["a", "b"]
    assert by_name["tools__add"].description == "Add two numbers."
    assert not result.is_error and result.structured_content == {"result": 5}
    assert result.content[0].text == "5"
    # The upstream saw its own key and header, never the caller's key.
    assert tools.headers and all(h.get("authorization") == f"Bearer {SECRET}" for h in tools.headers)
    assert all(h.get("x-team") == "blue" for h in tools.headers)
    assert not any(mcp_seed.ann in value for h in tools.headers for value in h.values())


def test_each_tool_call_is_a_request_log_row(app, live, mcp_seed):
    async def run(s):
        await s.call_tool("tools__add", {"a": 1, "b": 1})
        return await s.call_tool("tools__fail", {"reason": "nope"})

    failed = with_session(live, mcp_seed.ann, run)
    assert failed.is_error and "failed: nope" in failed.content[0].text
    rows = rows_when(app, 3)
    # The SDK lists the tools after a first successful call (to check its output schema): a row too (issue 25).
    assert [(r.endpoint, r.model, r.status, r.error_type) for r in rows] == [
        ("mcp/tools/call", "tools__add", 200, None), ("mcp/tools/list", None, 200, None),
        ("mcp/tools/call", "tools__fail", 200, "tool_error")]
    with app.app_context():
        key = db.session.scalar(sa.select(ApiKey).where(ApiKey.prefix == mcp_seed.ann[:7]))
        assert {(r.user_id, r.key_id, r.inbound_format) for r in rows} == {(key.user_id, key.id, "mcp")}
    assert all(r.latency_ms > 0 for r in rows)


def test_a_key_without_mcp_access_is_refused_at_connect_with_403(app, live, mcp_seed, tools):
    with pytest.raises(Exception) as caught:  # the SDK surfaces the HTTP 403 as a failed connect
        with_session(live, mcp_seed.ned, lambda s: s.list_tools())
    assert caught.value is not None
    resp = rpc(live, mcp_seed.ned, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert resp.status_code == 403
    body = resp.json()
    assert body["id"] == 1 and body["error"]["data"] == {"type": "mcp_access_denied"}
    assert "no MCP access" in body["error"]["message"] and "--allow-mcp" in body["error"]["message"]
    assert "Mcp-Session-Id" not in resp.headers
    assert tools.headers == []  # nothing reached the upstream
    assert [(r.endpoint, r.status) for r in rows_when(app, 2)][-1] == ("mcp/initialize", 403)


def test_a_per_tool_grant_lists_and_calls_only_that_tool(app, live, mcp_seed, tools):
    async def run(s):
        listed = await s.list_tools()
        ok = await s.call_tool("tools__add", {"a": 4, "b": 5})
        with pytest.raises(MCPError) as refused:
            await s.call_tool("tools__echo", {"text": "hi"})
        return listed, ok, refused.value

    listed, ok, refused = with_session(live, mcp_seed.tia, run)
    assert [t.name for t in listed.tools] == ["tools__add"]
    assert ok.structured_content == {"result": 9}
    assert "Unknown tool: tools__echo" in str(refused)
    rows = rows_when(app, 3)
    assert [(r.model, r.status, r.error_type) for r in rows] == [(None, 200, None), ("tools__add", 200, None),
                                                                 ("tools__echo", 404, "tool_not_found")]


def _narrow(app, raw: str, grants):
    with app.app_context():
        key = db.session.scalar(sa.select(ApiKey).where(ApiKey.prefix == raw[:7]))
        key.allowed_mcp = grants
        db.session.commit()


def test_a_key_narrows_its_users_grants_and_never_widens_them(app, live, mcp_seed):
    _narrow(app, mcp_seed.ann, ["tools/echo"])
    listed = with_session(live, mcp_seed.ann, lambda s: s.list_tools())
    assert [t.name for t in listed.tools] == ["tools__echo"]
    _narrow(app, mcp_seed.tia, ["tools"])  # the whole server on the key; the user has only tools/add
    listed = with_session(live, mcp_seed.tia, lambda s: s.list_tools())
    assert [t.name for t in listed.tools] == ["tools__add"]


def test_a_key_narrowed_to_no_server_gets_no_tools_capability_and_a_clear_error(app, live, mcp_seed):
    _narrow(app, mcp_seed.ann, [])  # ann still has stored prompts, so she may connect for them

    async def run(s):
        caps = s.initialize_result.capabilities
        with pytest.raises(MCPError) as refused:
            await s.list_tools()
        return caps, refused.value, await s.list_prompts()

    caps, refused, prompts = with_session(live, mcp_seed.ann, run)
    assert caps.tools is None and caps.prompts is not None
    assert "may use no MCP server" in str(refused)
    assert [p.name for p in prompts.prompts] == ["greeter"]


def test_stored_prompts_are_listed_and_filled_literally_and_upstream_prompts_prefixed(live, mcp_seed):
    async def run(s):
        listed = await s.list_prompts()
        filled = await s.get_prompt("greeter", {"name": "{{lang}} <b>Zoë</b>"})
        with pytest.raises(MCPError) as missing:
            await s.get_prompt("greeter", {})
        upstream = await s.get_prompt("tools__review", {"code": "x = 1"})
        return listed, filled, missing.value, upstream

    listed, filled, missing, upstream = with_session(live, mcp_seed.ann, run)
    by_name = {p.name: p for p in listed.prompts}
    assert sorted(by_name) == ["greeter", "tools__review"]
    assert by_name["greeter"].description == "A greeting"
    assert [(a.name, a.required) for a in by_name["greeter"].arguments] == [("name", True), ("lang", False)]
    assert filled.messages[0].role == "user"
    assert filled.messages[0].content.text == "Greet {{lang}} <b>Zoë</b> warmly in English."
    assert "Missing prompt variable(s): name" in str(missing)
    assert upstream.messages[0].content.text == "Please review: x = 1"


def test_prompts_the_key_may_not_use_are_neither_listed_nor_filled(app, live, mcp_seed):
    with app.app_context():
        manage.create_prompt("t", "secret-plan", "Top secret.", mcp=True)  # published: only access keeps it away
        manage.update_user("t", manage.get_user("tia"), allow_prompts=["greeter"])
        db.session.commit()

    async def run(s):
        listed = await s.list_prompts()
        with pytest.raises(MCPError) as refused:
            await s.get_prompt("secret-plan", {})
        return listed, refused.value

    listed, refused = with_session(live, mcp_seed.tia, run)
    assert [p.name for p in listed.prompts] == ["greeter"]  # upstream prompts need a grant for that name
    assert "Unknown prompt: secret-plan" in str(refused) and "Top secret" not in str(refused)


def test_an_upstream_error_is_passed_back_with_the_servers_secret_scrubbed(app, live, mcp_seed):
    result = with_session(live, mcp_seed.ann, lambda s: s.call_tool("tools__leak", {}))
    assert result.is_error
    text = result.content[0].text
    assert SECRET not in text and "bad credentials [redacted]" in text


def test_an_unreachable_server_is_a_json_rpc_error_and_a_502_row(app, live, mcp_seed, tools):
    async def run(s):
        await s.list_tools()
        tools.stop()
        with pytest.raises(MCPError) as down:
            await s.call_tool("tools__add", {"a": 1, "b": 2})
        return down.value

    down = with_session(live, mcp_seed.ann, run)
    assert "MCP server `tools` could not be reached." in str(down)
    assert tools.url not in str(down) and SECRET not in str(down)
    row = rows_when(app, 1)[-1]
    assert (row.model, row.status, row.error_type) == ("tools__add", 502, "upstream_unavailable")


def test_tool_calls_count_against_the_callers_rate_limit(app, live, mcp_seed, tools):
    with app.app_context():
        manage.update_user("t", manage.get_user("tia"), rpm=2)  # the SDK's own tools/list after a call counts
        db.session.commit()

    async def run(s):
        first = await s.call_tool("tools__add", {"a": 1, "b": 2})
        with pytest.raises(MCPError) as limited:
            await s.call_tool("tools__add", {"a": 1, "b": 2})
        return first, limited.value

    first, limited = with_session(live, mcp_seed.tia, run)
    assert first.structured_content == {"result": 3}
    assert "Rate limit reached for your user on requests per min (RPM): Limit 2" in str(limited)
    assert limited.error.data["status"] == 429
    calls = [h for h in tools.headers if h.get("content-length") and h.get("mcp-session-id")]
    assert calls  # the first call went upstream
    rows = rows_when(app, 3)
    assert [(r.endpoint, r.status, r.error_type) for r in rows] == [
        ("mcp/tools/call", 200, None), ("mcp/tools/list", 200, None), ("mcp/tools/call", 429, "rate_limit_exceeded")]


def test_log_json_shows_tool_calls(app, live, mcp_seed):
    from promptproxy.cli import cli

    with_session(live, mcp_seed.ann, lambda s: s.call_tool("tools__echo", {"text": "hello"}))
    assert len(rows_when(app, 2)) == 2  # the call, then the SDK's tools/list
    out = app.test_cli_runner().invoke(cli, ["log", "--json"])
    assert out.exit_code == 0, out.output
    assert '"endpoint":"mcp/tools/call"' in out.output and '"model":"tools__echo"' in out.output
    assert '"endpoint":"mcp/tools/list"' in out.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RequestLog)) == 2


def test_a_group_grant_gives_its_members_mcp_tools_and_a_key_still_narrows(app, live, mcp_seed):
    """The union rule for MCP as for models: ned has no MCP grant of his own; his group's grant lets him in."""
    from promptproxy import groups

    with app.app_context():
        groups.create_group("t", "toolsmiths", allow_mcp=["tools/echo", "tools/add"])
        groups.set_memberships("t", manage.get_user("ned"), add=["toolsmiths"])
        db.session.commit()
    listed = with_session(live, mcp_seed.ned, lambda s: s.list_tools())
    assert sorted(t.name for t in listed.tools) == ["tools__add", "tools__echo"]
    _narrow(app, mcp_seed.ned, ["tools/echo"])
    listed = with_session(live, mcp_seed.ned, lambda s: s.list_tools())
    assert [t.name for t in listed.tools] == ["tools__echo"]
    with app.app_context():
        groups.set_memberships("t", manage.get_user("ned"), remove=["toolsmiths"])
        db.session.commit()
    assert rpc(live, mcp_seed.ned, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).status_code == 403
