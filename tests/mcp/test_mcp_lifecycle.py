"""MCP methods that reach a server run the call lifecycle /v1 runs: admitted, tagged, traced, settled, recorded once."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.mcp.servers import get_server, update_server

from ..conftest import rows_when, wait_for
from ..ops.test_tracing import Receiver, attrs, spans
from .conftest import SECRET, open_session, rpc


@pytest.fixture
def otel(monkeypatch):
    """An OTLP receiver the gateway exports to (the variables are set before the app is made)."""
    receiver = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    yield receiver
    receiver.stop()


@pytest.fixture
def app(otel, app):
    """The app, traced."""
    return app


class Stages:
    """Counts, per request id, the stages a call went through."""

    def __init__(self, lifecycle):
        self.seen: dict[str, Counter] = {}
        lifecycle.add("on_start", lambda call, body: self.note("on_start", call))
        lifecycle.add("around_attempt", self.attempt)
        lifecycle.add("on_settled", lambda call, answer: self.note("on_settled", call))
        lifecycle.add("on_recorded", lambda call: self.note("on_recorded", call))

    def note(self, stage: str, call) -> None:
        self.seen.setdefault(call.request_id, Counter())[stage] += 1

    @contextmanager
    def attempt(self, call, target, endpoint, request):
        self.note(f"attempt {endpoint} {target.name}", call)
        yield


@pytest.fixture
def stages(app) -> Stages:
    return Stages(app.extensions["promptproxy"].lifecycle)


def call_tool(live, key, session, name="tools__add", headers=None):
    return rpc(live, key, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                           "params": {"name": name, "arguments": {"a": 2, "b": 3}}}, session, headers)


def tagged_key(app) -> str:
    """A key of ann's with default tags."""
    with app.app_context():
        _, raw = manage.create_key("t", manage.get_user("ann"), tags=["team-mcp"])
        db.session.commit()
    return raw


def test_a_tool_call_is_tagged_from_the_key_and_the_header(app, live, mcp_seed, tools, stages):
    key = tagged_key(app)
    session = open_session(live, key)
    resp = call_tool(live, key, session, headers={"x-promptproxy-tags": "feature:search, run-7"})
    assert resp.status_code == 200 and resp.json()["result"]["structuredContent"] == {"result": 5}
    (row,) = rows_when(app, 1)
    assert (row.endpoint, row.model, row.status, row.tags) == ("mcp/tools/call", "tools__add", 200,
                                                               "team-mcp,feature:search,run-7")
    assert stages.seen[row.request_id] == Counter({"on_start": 1, "attempt tools/call tools": 1, "on_settled": 1,
                                                   "on_recorded": 1})


def test_malformed_tags_refuse_the_tool_call_before_it_reaches_the_server(app, live, mcp_seed, tools):
    session = open_session(live, mcp_seed.ann)
    before = len(tools.headers)
    resp = call_tool(live, mcp_seed.ann, session, headers={"x-promptproxy-tags": "bad tag!"})
    error = resp.json()["error"]
    assert resp.status_code == 200 and error["code"] == -32602
    assert error["message"].startswith("The tag `bad tag!` is not valid") and error["data"]["status"] == 400
    assert len(tools.headers) == before
    (row,) = rows_when(app, 1)
    assert (row.endpoint, row.status, row.error_type, row.tags) == ("mcp/tools/call", 400, "invalid_tags", None)


def test_a_list_is_one_call_with_one_attempt_per_page_and_tags(app, live, mcp_seed, tools, stages):
    session = open_session(live, mcp_seed.ann)
    resp = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, session,
               {"x-promptproxy-tags": "listing"})
    assert len(resp.json()["result"]["tools"]) == 4
    (row,) = rows_when(app, 1)
    assert (row.endpoint, row.status, row.tags) == ("mcp/tools/list", 200, "listing")
    assert stages.seen[row.request_id] == Counter({"on_start": 1, "attempt tools/list tools": 1, "on_settled": 1,
                                                   "on_recorded": 1})


def test_a_refused_call_is_settled_and_recorded_once_and_reaches_nothing(app, live, mcp_seed, tools, stages):
    with app.app_context():
        manage.update_user("t", manage.get_user("ann"), rpm=1)
        db.session.commit()
    session = open_session(live, mcp_seed.ann)
    assert call_tool(live, mcp_seed.ann, session).json()["result"]["structuredContent"] == {"result": 5}
    refused = call_tool(live, mcp_seed.ann, session).json()["error"]
    assert refused["code"] == -32001 and refused["data"]["status"] == 429
    rows = rows_when(app, 2)
    assert [(r.status, r.error_type) for r in rows] == [(200, None), (429, "rate_limit_exceeded")]
    assert stages.seen[rows[1].request_id] == Counter({"on_start": 1, "on_settled": 1, "on_recorded": 1})


def test_a_tool_call_is_a_server_span_with_a_client_span_to_the_mcp_server(app, live, mcp_seed, tools, otel):
    session = open_session(live, mcp_seed.ann)
    call_tool(live, mcp_seed.ann, session, headers={"x-promptproxy-tags": "team-a"})
    (row,) = rows_when(app, 1)
    server, client = sorted(spans(app, otel, 2), key=lambda s: s.kind != Span.SPAN_KIND_SERVER)
    assert (server.kind, client.kind) == (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
    assert client.parent_span_id == server.span_id and client.trace_id == server.trace_id
    assert (server.name, client.name) == ("mcp/tools/call", "tools/call tools")
    a, c = attrs(server), attrs(client)
    assert (a["promptproxy.request_id"], a["promptproxy.tags"], a["promptproxy.user"], a["gen_ai.request.model"],
            a["http.response.status_code"]) == (row.request_id, ["team-a"], "ann", "tools__add", 200)
    assert (c["mcp.method.name"], c["gen_ai.operation.name"], c["gen_ai.tool.name"], c["promptproxy.mcp_server"],
            c["server.address"]) == ("tools/call", "execute_tool", "tools__add", "tools", "127.0.0.1")
    assert server.status.code != Status.STATUS_CODE_ERROR and client.status.code != Status.STATUS_CODE_ERROR


def test_a_failing_mcp_server_is_an_error_span(app, live, mcp_seed, tools, otel):
    with app.app_context():
        update_server("t", get_server("tools"), url="http://127.0.0.1:9/mcp", api_key=SECRET)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    session = open_session(live, mcp_seed.ann)
    error = call_tool(live, mcp_seed.ann, session).json()["error"]
    assert error["code"] == -32002
    (row,) = rows_when(app, 1)
    found = spans(app, otel, 2)
    server_span = next(s for s in found if s.kind == Span.SPAN_KIND_SERVER)
    client_span = next(s for s in found if s.kind == Span.SPAN_KIND_CLIENT)
    assert client_span.status.code == Status.STATUS_CODE_ERROR and server_span.status.code == Status.STATUS_CODE_ERROR
    assert attrs(server_span)["error.type"] == row.error_type and row.status == 502


def test_a_stored_prompt_reaches_no_server_and_is_neither_traced_nor_recorded(app, live, mcp_seed, tools, otel):
    session = open_session(live, mcp_seed.ann)
    resp = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": 4, "method": "prompts/get",
                                    "params": {"name": "greeter", "arguments": {"name": "Ada"}}}, session)
    assert "Greet Ada warmly" in resp.json()["result"]["messages"][0]["content"]["text"]
    tracer = app.extensions["promptproxy"].tracer
    assert wait_for(lambda: tracer.flush()) and otel.spans == []
    app.extensions["promptproxy"].logs.flush()
    assert rows_when(app, 0) == []
