"""Issue 25, items 4, 8 and 9: an MCP server's credential never comes back; every upstream method is limited and
logged; the server's timeout is a total deadline on its answers."""
from __future__ import annotations

import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from pydantic import Field

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.mcp.servers import create_server
from promptproxy.models import BudgetUsage
from promptproxy.ratelimit.limiter import period_start

from ..conftest import free_port, rows_when
from .conftest import SECRET, with_session
from .tool_server import ToolServer

HEADER_SECRET = "hdr-7Kq2xZ9wLm4Rt8Vb-token"
PART = SECRET[7:19]  # 12 characters from the middle of the key: "tream-secret"


def leaked(text: str, url: str) -> list[str]:
    """The 8-character runs of the server's key or header value (any letter case), or its URL, found in text."""
    low = text.lower()
    runs = [s.lower()[i:i + 8] for s in (SECRET, HEADER_SECRET) for i in range(len(s) - 7)]
    return [run for run in runs if run in low] + ([url] if url.lower() in low else [])


def _leaky(mcp) -> None:
    """Tools and prompts that hand back the credentials the server was called with, in every shape."""

    @mcp.tool()
    def whoami(form: str, ctx: Context) -> str:
        """Reports the credentials it received."""
        headers = ctx.request_context.request.headers
        auth, token = headers.get("authorization"), headers.get("x-api-token")
        key = auth.removeprefix("Bearer ")
        shown = {"header": f"Authorization: {auth}", "upper": key.upper(), "lower": key.lower(),
                 "part": f"key part <{key[7:19]}> ok", "other-header": token.swapcase(),
                 "url": str(ctx.request_context.request.url).upper()}[form]
        return f"called with {shown}"

    @mcp.tool(description=f"Deploys with key {SECRET.upper()}.")
    def deploy(target: str = Field(description=f"where; auth {PART}"), key_9f8e7d6c: str = "") -> str:
        return target

    @mcp.prompt(description=f"Signed with {HEADER_SECRET.lower()}")
    def signed(topic: str) -> str:
        return f"Use the token {SECRET} for {topic}."

    @mcp.prompt()
    def broken() -> str:
        """Fails with a JSON-RPC error carrying its key (re-cased, cut) in the message and the data."""
        raise MCPError(-32000, f"cannot sign with {SECRET.upper()[3:]}", {"token": HEADER_SECRET, SECRET: "key"})


@pytest.fixture
def leaky(app, mcp_seed):
    """Server `leaky` with a key and a secret header, whose tools and prompts report them."""
    server = ToolServer(extra=_leaky).start()
    with app.app_context():
        create_server("t", "leaky", server.url, api_key=SECRET, headers={"X-Api-Token": HEADER_SECRET})
        db.session.commit()
    yield server
    server.stop()


# -- item 4: credentials never come back ----------------------------------------------------------------------
@pytest.mark.parametrize("form", ["header", "upper", "lower", "part", "other-header", "url"])
def test_a_tool_result_never_carries_the_servers_credential(live, mcp_seed, leaky, form):
    result = with_session(live, mcp_seed.ann, lambda s: s.call_tool("leaky__whoami", {"form": form}))
    assert not result.is_error
    text, structured = result.content[0].text, orjson.dumps(result.structured_content).decode()
    assert text.startswith("called with ") and "[redacted]" in text
    assert leaked(text, leaky.url) == [] and leaked(structured, leaky.url) == []


def test_tool_and_prompt_listings_and_prompts_never_carry_the_credential(live, mcp_seed, leaky):
    async def run(s):
        return await s.list_tools(), await s.list_prompts(), await s.get_prompt("leaky__signed", {"topic": "x"})

    tools, prompts, prompt = with_session(live, mcp_seed.ann, run)
    deploy = next(t for t in tools.tools if t.name == "leaky__deploy")
    assert deploy.description == "Deploys with key [redacted]."
    assert deploy.input_schema["properties"]["target"]["description"] == "where; auth [redacted]"
    assert "key_[redacted]" in deploy.input_schema["properties"]  # a key of the JSON is text too
    signed = next(p for p in prompts.prompts if p.name == "leaky__signed")
    assert signed.description == "Signed with [redacted]"
    assert prompt.messages[0].content.text == "Use the token [redacted] for x."
    everything = " ".join(orjson.dumps(x.model_dump(mode="json")).decode() for x in (tools, prompts, prompt))
    assert leaked(everything, leaky.url) == []


def test_an_upstream_json_rpc_error_never_carries_the_credential(live, mcp_seed, leaky):
    async def run(s):
        with pytest.raises(MCPError) as failed:
            await s.get_prompt("leaky__broken", {})
        return failed.value

    failed = with_session(live, mcp_seed.ann, run)
    assert (failed.error.code, failed.error.message) == (-32000, "cannot sign with [redacted]")
    assert failed.error.data == {"token": "[redacted]", "[redacted]": "key"}
    assert leaked(str(failed), leaky.url) == [] and leaked(orjson.dumps(failed.error.data).decode(), leaky.url) == []


# -- item 8: every upstream method is admitted and recorded --------------------------------------------------
def _limit(app, **limits) -> None:
    with app.app_context():
        manage.update_user("t", manage.get_user("ann"), **limits)
        db.session.commit()


def _posts(server: ToolServer) -> int:
    """Requests the upstream received (their headers are recorded, not their bodies)."""
    return len(server.headers)


def test_listing_tools_counts_against_the_rate_limit(app, live, mcp_seed, tools):
    _limit(app, rpm=2)

    async def run(s):
        await s.list_tools()
        await s.list_tools()
        before = _posts(tools)
        with pytest.raises(MCPError) as limited:
            await s.list_tools()
        return before, _posts(tools), limited.value

    before, after, limited = with_session(live, mcp_seed.ann, run)
    assert limited.error.code == -32001 and limited.error.data["status"] == 429
    assert "Rate limit reached for your user on requests per min (RPM): Limit 2" in limited.error.message
    assert after == before  # the refused list reached no server
    rows = rows_when(app, 3)
    assert [(r.endpoint, r.model, r.status, r.error_type) for r in rows] == [
        ("mcp/tools/list", None, 200, None), ("mcp/tools/list", None, 200, None),
        ("mcp/tools/list", None, 429, "rate_limit_exceeded")]
    # Admitted rows cost nothing and use no tokens; the refusal is recorded as /v1 records one (nothing used).
    assert [(r.input_tokens, r.output_tokens, r.cost) for r in rows] == [(0, 0, 0.0), (0, 0, 0.0), (None, None, None)]
    assert {r.inbound_format for r in rows} == {"mcp"}


def test_a_list_is_one_request_however_many_servers_it_reaches(app, live, mcp_seed, tools, leaky):
    _limit(app, rpm=2)

    async def run(s):
        first, second = await s.list_tools(), await s.list_tools()
        with pytest.raises(MCPError) as limited:
            await s.list_tools()
        return first, second, limited.value

    first, second, limited = with_session(live, mcp_seed.ann, run)
    assert {t.name.split("__")[0] for t in first.tools} == {"tools", "leaky"} and first == second
    assert limited.error.data["status"] == 429
    assert [(r.endpoint, r.status) for r in rows_when(app, 3)] == [
        ("mcp/tools/list", 200), ("mcp/tools/list", 200), ("mcp/tools/list", 429)]


def test_prompts_list_and_upstream_prompts_get_count_and_are_recorded(app, live, mcp_seed, tools):
    _limit(app, rpm=2)

    async def run(s):
        listed = await s.list_prompts()
        fetched = await s.get_prompt("tools__review", {"code": "x"})
        stored = await s.get_prompt("greeter", {"name": "Ann"})  # a stored prompt reaches no server: not counted
        with pytest.raises(MCPError) as limited:
            await s.get_prompt("tools__review", {"code": "y"})
        return listed, fetched, stored, limited.value

    listed, fetched, stored, limited = with_session(live, mcp_seed.ann, run)
    assert "tools__review" in [p.name for p in listed.prompts]
    assert fetched.messages[0].content.text == "Please review: x"
    assert stored.messages[0].content.text == "Greet Ann warmly in English."
    assert limited.error.code == -32001 and limited.error.data["status"] == 429
    assert [(r.endpoint, r.model, r.status) for r in rows_when(app, 3)] == [
        ("mcp/prompts/list", None, 200), ("mcp/prompts/get", "tools__review", 200),
        ("mcp/prompts/get", "tools__review", 429)]


def test_an_exhausted_budget_refuses_listing_tools(app, live, mcp_seed, tools):
    _limit(app, budget=0.5, period="day")
    limiter = app.extensions["promptproxy"].limiter
    limiter.now = lambda: datetime(2026, 3, 4, 18, 0)
    with app.app_context():
        user = manage.get_user("ann")
        db.session.add(BudgetUsage(subject=f"user:{user.id}", period_start=period_start("day", limiter.now()),
                                   spent=0.6, reserved=0.0))
        db.session.commit()

    async def run(s):
        with pytest.raises(MCPError) as refused:
            await s.list_tools()
        return refused.value

    refused = with_session(live, mcp_seed.ann, run)
    assert refused.error.code == -32001 and refused.error.data["status"] == 429
    assert "The budget of $0.50 per day for your user is used up" in refused.error.message
    assert _posts(tools) == 0  # the gateway never even opened its session with the server
    [row] = rows_when(app, 1)
    assert (row.endpoint, row.status, row.error_type) == ("mcp/tools/list", 429, "insufficient_quota")


# -- item 9: the server's timeout is a total deadline --------------------------------------------------------
class SlowServer:
    """An MCP server that answers the handshake at once, then `tools/call` slowly: `sse` keeps an event stream
    alive with a comment every 0.2 s, `json` trickles its JSON answer a byte every 0.2 s. Either gives up after
    about 10 s (so the code without a total deadline ends too, with another error)."""

    def __init__(self, mode: str):
        self.mode, self.stop = mode, threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                message = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "id" not in message:
                    self.send_response(202)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif message["method"] == "initialize":
                    self._json({"jsonrpc": "2.0", "id": message["id"], "result": {
                        "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "slow", "version": "1"}}})
                else:
                    outer.answer_slowly(self, message["id"])

            def _json(self, body: dict) -> None:
                data = orjson.dumps(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True

    def answer_slowly(self, handler, rid) -> None:
        """Keep-alives (or single bytes) every 0.2 s, for at most 50 of them."""
        answer = orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text",
                                                                                   "text": "too late"}]}})
        handler.send_response(200)
        if self.mode == "sse":
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Connection", "close")
            handler.end_headers()
            pieces = [b": keep-alive\n\n"] * 50
        else:
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(answer)))
            handler.end_headers()
            pieces = [answer[i:i + 1] for i in range(len(answer))][:50]
        try:
            for piece in pieces:
                handler.wfile.write(piece)
                handler.wfile.flush()
                if self.stop.wait(0.2):  # the server's pace, not a test's sleep
                    return
        except OSError:  # the gateway hung up at its deadline
            pass

    def start(self) -> SlowServer:
        """Serve in a thread until close()."""
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop answering and serving."""
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("mode", ["sse", "json"])
def test_a_slow_answer_is_cut_at_the_servers_timeout(app, live, mcp_seed, mode):
    slow = SlowServer(mode).start()
    try:
        with app.app_context():
            create_server("t", "slow", slow.url, timeout=1)
            db.session.commit()

        async def run(s):
            with pytest.raises(MCPError) as late:
                await s.call_tool("slow__wait", {})
            return late.value

        late = with_session(live, mcp_seed.ann, run)
    finally:
        slow.close()
    assert late.error.code == -32002
    assert late.error.message == "MCP server `slow` did not answer within its time limit (1 s)."
    [row] = rows_when(app, 1)
    assert (row.endpoint, row.model, row.status, row.error_type) == (
        "mcp/tools/call", "slow__wait", 504, "upstream_timeout")
