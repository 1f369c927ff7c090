"""OpenTelemetry traces: spans received by a real OTLP/HTTP receiver, decoded with opentelemetry-proto, following
the GenAI semantic conventions; the caller's trace continued and sent upstream; nothing imported when unset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import openai
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from promptproxy import create_app

from ..conftest import base_config, log_rows, rows_when, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
HI = [{"role": "user", "content": "a secret question"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """A small OTLP/HTTP collector: keeps every span POSTed to /v1/traces."""

    def __init__(self):
        self.spans: list[Span] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.paths.append(self.path)
                export = ExportTraceServiceRequest.FromString(body)
                for resource_spans in export.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        outer.spans.extend(scope_spans.spans)
                    outer.resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otel(monkeypatch):
    """A receiver, and the standard variables pointing the gateway at it (set before the app is made)."""
    receiver = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    yield receiver
    receiver.stop()


@pytest.fixture
def app(otel, app):
    """The app, made once the OTLP variables are set."""
    return app


def spans(app, otel, count: int) -> list[Span]:
    """The spans once `count` have been exported (the batch processor is flushed first)."""
    tracer = app.extensions["promptproxy"].tracer
    wait_for(lambda: tracer.flush() and len(otel.spans) >= count)
    return list(otel.spans)


def attrs(span: Span) -> dict:
    """A span's attributes as plain Python values."""
    out = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        value = getattr(a.value, kind)
        out[a.key] = [v.string_value for v in value.values] if kind == "array_value" else value
    return out


def test_chat_call_is_a_genai_server_span_with_an_upstream_child_continuing_the_callers_trace(
        otel, live, seeded, upstream, app):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    sdk.chat.completions.create(model="gpt-4o-mini:translator", messages=HI, extra_headers={
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "x-promptproxy-tags": "team-a"})
    (row,) = log_rows(app)
    server, client = sorted(spans(app, otel, 2), key=lambda s: s.kind != Span.SPAN_KIND_SERVER)
    assert otel.paths[0] == "/v1/traces" and otel.resource["service.name"] == "promptproxy"
    assert (server.kind, client.kind) == (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
    assert server.trace_id.hex() == client.trace_id.hex() == TRACE_ID  # the caller's trace, continued
    assert server.parent_span_id.hex() == PARENT_ID and client.parent_span_id == server.span_id
    assert server.name == "chat gpt-4o-mini" and client.name == "chat real-model-name:latest"
    a = attrs(server)
    assert {k: a[k] for k in ("gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
                              "gen_ai.provider.name", "gen_ai.system", "gen_ai.usage.input_tokens",
                              "gen_ai.usage.output_tokens", "http.response.status_code")} == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "real-model-name:latest", "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
        "gen_ai.usage.input_tokens": row.input_tokens, "gen_ai.usage.output_tokens": row.output_tokens,
        "http.response.status_code": 200}
    assert (a["promptproxy.user"], a["promptproxy.key_id"], a["promptproxy.prompt"], a["promptproxy.prompt_version"],
            a["promptproxy.deployment"], a["promptproxy.request_id"], a["promptproxy.tags"]) == (
        "alice", row.key_id, "translator", 1, "local", row.request_id, ["team-a"])
    assert a["promptproxy.cost_usd"] == pytest.approx(row.cost) and row.cost > 0
    c = attrs(client)
    assert (c["gen_ai.request.model"], c["gen_ai.provider.name"], c["server.address"], c["server.port"]) == (
        "real-model-name:latest", "openai", "127.0.0.1", upstream.port)
    assert c["gen_ai.usage.input_tokens"] == row.input_tokens
    # the upstream got the child span's context
    sent = upstream.requests[0]["headers"]
    assert {k.lower(): v for k, v in sent.items()}["traceparent"] == f"00-{TRACE_ID}-{client.span_id.hex()}-01"
    assert server.start_time_unix_nano < client.start_time_unix_nano <= client.end_time_unix_nano \
        <= server.end_time_unix_nano
    # bodies are not attributes unless LOG_BODIES is on
    everything = json.dumps([attrs(s) for s in (server, client)])
    assert "secret question" not in everything and "body" not in everything


def test_streamed_anthropic_call_settles_its_span_in_the_stream(otel, live, seeded, upstream, app):
    client = anthropic.Anthropic(base_url=live, api_key=seeded.key, max_retries=0)
    with client.messages.stream(model="gpt-4o-mini", max_tokens=20, messages=HI) as stream:
        assert stream.get_final_text() == "Bonjour!"
    (row,) = rows_when(app, 1)
    server = next(s for s in spans(app, otel, 2) if s.kind == Span.SPAN_KIND_SERVER)
    a = attrs(server)
    assert a["gen_ai.operation.name"] == "chat" and a["promptproxy.stream"] is True
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (row.input_tokens, row.output_tokens)
    assert server.trace_id.hex() != TRACE_ID and not server.parent_span_id  # no traceparent: a new trace


def test_a_retried_attempt_is_its_own_failed_child_span(otel, live, seeded, upstream, app):
    answers = iter([(503, {"Content-Type": "application/json", "Retry-After": "0"},
                     json.dumps({"error": {"message": "overloaded", "type": "server_error"}}))])
    upstream.handler = lambda req: next(answers, None) or upstream.default(req)
    resp = requests.post(live + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10)
    assert resp.status_code == 200
    found = spans(app, otel, 3)
    server = next(s for s in found if s.kind == Span.SPAN_KIND_SERVER)
    failed, ok = sorted((s for s in found if s.kind == Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano)
    assert failed.parent_span_id == ok.parent_span_id == server.span_id
    assert failed.status.code == Status.STATUS_CODE_ERROR and attrs(failed)["http.response.status_code"] == 503
    assert ok.status.code != Status.STATUS_CODE_ERROR and server.status.code != Status.STATUS_CODE_ERROR
    sent = [{k.lower(): v for k, v in r["headers"].items()}["traceparent"].split("-")[:3] for r in upstream.requests]
    assert sent == [["00", failed.trace_id.hex(), failed.span_id.hex()], ["00", ok.trace_id.hex(), ok.span_id.hex()]]


def test_upstream_failure_and_refused_key_are_error_spans(otel, live, seeded, upstream, app):
    upstream.handler = lambda req: (400, {"Content-Type": "application/json"},
                                    json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}}))
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
    resp = requests.post(live + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI},
                         headers={"Authorization": "Bearer pp-wrong", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                         timeout=10)
    assert resp.status_code == 401
    found = spans(app, otel, 3)
    servers = sorted((s for s in found if s.kind == Span.SPAN_KIND_SERVER), key=lambda s: s.start_time_unix_nano)
    (child,) = [s for s in found if s.kind == Span.SPAN_KIND_CLIENT]
    assert attrs(child)["http.response.status_code"] == 400 and child.status.code == Status.STATUS_CODE_ERROR
    assert attrs(servers[0])["error.type"] == log_rows(app)[0].error_type == "upstream_error"
    refused = attrs(servers[1])
    assert (refused["http.response.status_code"], refused["error.type"]) == (401, "invalid_api_key")
    assert servers[1].trace_id.hex() == TRACE_ID and "promptproxy.user" not in refused


def test_bodies_become_attributes_only_with_log_bodies(otel, seeded, upstream, db_url, tmp_path):
    app = create_app({**base_config(db_url, tmp_path), "LOG_BODIES": True})
    try:
        resp = app.test_client().post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI},
                                      headers={"Authorization": f"Bearer {seeded.key}"})
        assert resp.status_code == 200
        app.extensions["promptproxy"].logs.flush()
        server = next(s for s in spans(app, otel, 2) if s.kind == Span.SPAN_KIND_SERVER)
        a = attrs(server)
        assert "a secret question" in a["promptproxy.request.body"] and "Bonjour" in a["promptproxy.response.body"]
    finally:
        app.extensions["promptproxy"].close()


SCRIPT = """
import json, sys
from promptproxy import create_app
app = create_app(json.loads(sys.argv[1]))
resp = app.test_client().post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
    {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer " + sys.argv[2]})
assert resp.status_code == 200, resp.get_data()
app.extensions["promptproxy"].close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")))
"""


@pytest.mark.parametrize("endpoint", [None, "set"])
def test_nothing_from_opentelemetry_is_imported_unless_the_endpoint_is_set(otel, seeded, upstream, db_url, tmp_path,
                                                                           endpoint):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMPTPROXY_"))}
    if endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otel.url
    config = {k: v for k, v in base_config(db_url, tmp_path).items() if k != "TESTING"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(config), seeded.key], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    sent = {k.lower() for k in upstream.requests[-1]["headers"]}
    if endpoint:
        assert "opentelemetry.sdk.trace" in imported and "traceparent" in sent  # the check can see an import
    else:
        assert imported == [] and "traceparent" not in sent
