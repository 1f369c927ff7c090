"""Issue 14, request-path items: upstream errors, deadlines, the circuit breaker, scrubbing, SSE names, budgets."""
from __future__ import annotations

import json
import threading

import pytest
import requests
import sqlalchemy as sa

from promptproxy import config, manage
from promptproxy.core.catalog import ProviderInfo
from promptproxy.extensions import db
from promptproxy.proxy.send import scrub
from promptproxy.routing.breakers import Breakers
from promptproxy.routing.resilience import RetryPolicy

from ..anthropic_upstream import fixture_sse
from ..conftest import log_rows, rows_when
from ..upstream import chat_response

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def post(live, key, body, path="/v1/chat/completions", headers=None, **kw) -> requests.Response:
    """POST as a client would."""
    return requests.post(live + path, json=body, headers={"Authorization": f"Bearer {key}", **(headers or {})},
                         timeout=30, **kw)


def json_answer(status: int, body, headers=None):
    """A handler answering one JSON body."""
    return lambda req: (status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body))


@pytest.fixture
def gw(app):
    """The gateway object, no retries (each request is one upstream call)."""
    gateway = app.extensions["promptproxy"]
    gateway.retry = RetryPolicy(max_retries=0)
    return gateway


# -- item 4: the circuit breaker ---------------------------------------------------------------------
def boom_or_ok(req):
    """500 for requests saying "boom" (one caller's poison request), a normal answer otherwise."""
    body = req["body"] or {}
    if "boom" in json.dumps(body.get("messages")):
        return 500, {"Content-Type": "application/json"}, json.dumps({"error": {"message": "internal"}})
    return 200, {"Content-Type": "application/json"}, json.dumps(chat_response(body.get("model", "?")))


def boom(text="boom"):
    return {**CHAT, "messages": [{"role": "user", "content": text}]}


def test_six_500s_from_one_key_do_not_pause_the_provider_for_others(live, seeded, upstream, gw):
    gw.breakers = Breakers.from_config(config.DEFAULTS, gw.state)  # the shipped defaults, breakers on
    upstream.handler = boom_or_ok
    assert [post(live, seeded.key, boom()).status_code for _ in range(6)] == [500] * 6
    resp = post(live, seeded.other_key, CHAT)
    assert resp.status_code == 200, resp.text
    assert len(upstream.requests) == 7
    [state] = gw.breakers.states().values()
    assert state["state"] == "closed"


def test_client_400s_never_count(live, seeded, upstream, gw):
    gw.breakers = Breakers(2, 30.0, state=gw.state)
    upstream.handler = json_answer(400, {"error": {"message": "bad field", "type": "invalid_request_error"}})
    assert [post(live, seeded.key, CHAT).status_code for _ in range(5)] == [400] * 5
    upstream.handler = upstream.default
    assert post(live, seeded.other_key, CHAT).status_code == 200
    [state] = gw.breakers.states().values()
    assert (state["state"], state["failures"]) == ("closed", 0)


def test_the_rate_rule_opens_the_breaker_across_callers(live, seeded, upstream, gw):
    gw.breakers = Breakers(10, 30.0, failure_rate=0.5, window=30.0, clock=lambda: 1000.0, state=gw.state)
    upstream.handler = boom_or_ok
    for _ in range(5):
        assert post(live, seeded.other_key, CHAT).status_code == 200
    for key in [seeded.key, seeded.other_key] * 2:  # failures from two keys (one key's alone never open it)
        assert post(live, key, boom()).status_code == 500
    assert post(live, seeded.other_key, CHAT).status_code == 200  # 9 answers: under the volume, still closed
    assert post(live, seeded.key, boom()).status_code == 500  # 11 answers, 5 failed: under 50 %
    assert post(live, seeded.key, boom()).status_code == 500  # 12 answers, 6 failed: 50 %, open
    calls = len(upstream.requests)
    resp = post(live, seeded.other_key, CHAT)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "upstream_unavailable"
    assert resp.headers["Retry-After"] == "30"
    assert len(upstream.requests) == calls


def test_half_open_lets_one_probe_through_and_its_success_closes(live, seeded, upstream, gw):
    clock = [1000.0]
    gw.breakers = Breakers(2, 30.0, clock=lambda: clock[0], state=gw.state)
    upstream.handler = json_answer(503, {"error": {"message": "down"}})
    assert [post(live, key, CHAT).status_code for key in (seeded.key, seeded.other_key)] == [503, 503]
    assert post(live, seeded.key, CHAT).json()["error"]["code"] == "upstream_unavailable"
    assert len(upstream.requests) == 2

    clock[0] += 30  # cool-down over: one probe at a time goes through
    entered, release = threading.Event(), threading.Event()

    def slow_ok(req):
        entered.set()
        release.wait(10)
        return upstream.default(req)

    upstream.handler = slow_ok
    probe: list = []
    thread = threading.Thread(target=lambda: probe.append(post(live, seeded.key, CHAT)))
    thread.start()
    assert entered.wait(10)
    other = post(live, seeded.other_key, CHAT)  # while the probe is out, others are still refused
    assert other.status_code == 503 and other.json()["error"]["code"] == "upstream_unavailable"
    release.set()
    thread.join(10)
    assert probe[0].status_code == 200
    assert len(upstream.requests) == 3
    assert post(live, seeded.other_key, CHAT).status_code == 200  # the probe's success closed it
    assert gw.breakers.states()[1]["state"] == "closed"


def test_a_429_only_makes_the_provider_honour_retry_after(live, seeded, upstream, gw):
    clock = [1000.0]
    gw.breakers = Breakers(2, 30.0, clock=lambda: clock[0], state=gw.state)
    gw.deployments.clock = gw.breakers.clock  # the 429 pauses the deployment (issue 27), on the same clock
    upstream.handler = json_answer(429, {"error": {"message": "slow down", "type": "requests"}},
                                   {"Retry-After": "5"})
    assert post(live, seeded.key, CHAT).status_code == 429
    upstream.handler = upstream.default
    resp = post(live, seeded.other_key, CHAT)  # inside the upstream's Retry-After: not sent
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "rate_limit_exceeded"
    assert resp.headers["Retry-After"] == "5"
    assert len(upstream.requests) == 1
    clock[0] += 5
    assert post(live, seeded.other_key, CHAT).status_code == 200
    assert gw.breakers.states()[1]["state"] == "closed"


# -- item 3: whole bodies honour total_timeout ------------------------------------------------------
def tune(app, name: str = "local", **options) -> None:
    """Change a provider's settings through manage, as the CLI does."""
    with app.app_context():
        manage.update_provider("t", manage.get_provider(name), **options)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()


def trickle(req):
    """Headers at once, then the body one byte every 0.2 s (each read well inside the idle timeout)."""
    body = json.dumps(chat_response("m")).encode()
    parts = []
    for i in range(len(body)):
        parts += [0.2, body[i:i + 1]]
    return 200, {"Content-Type": "application/json"}, iter(parts)


def test_a_trickling_whole_body_is_cut_at_the_total_timeout(app, live, seeded, upstream, gw):
    tune(app, total_timeout=1.0, idle_timeout=5, first_byte_timeout=5)
    upstream.handler = trickle
    resp = post(live, seeded.key, CHAT)
    assert resp.status_code == 504, resp.text
    assert resp.json()["error"]["code"] == "upstream_timeout"
    [row] = log_rows(app)
    assert (row.status, row.error_type) == (504, "upstream_timeout")


# -- item 2: vLLM, llama.cpp and FastChat error shapes ----------------------------------------------
VLLM = {"object": "error", "message": "This model's maximum context length is 4096 tokens.",
        "type": "BadRequestError", "param": None, "code": 400}
LLAMA_CPP = {"error": {"code": 400, "message": "the request exceeds the available context size",
                       "type": "exceed_context_size_error"}}
FASTCHAT = {"object": "error", "message": "Only gpt-4o-mini allowed now, your model real-model-name",
            "code": 40301}


@pytest.mark.parametrize("body", [VLLM, LLAMA_CPP, FASTCHAT], ids=["vllm", "llama.cpp", "fastchat"])
def test_integer_codes_and_fastchat_errors_pass_status_and_message_through(app, live, seeded, upstream, gw, body):
    upstream.handler = json_answer(400, body)
    resp = post(live, seeded.key, CHAT)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    message = body.get("message") or body["error"]["message"]
    assert error["message"] == message
    assert isinstance(error["code"], str) and error["code"] == str(body.get("code") or body["error"]["code"])
    [row] = log_rows(app)
    assert row.status == 400 and row.error_message == message


def test_integer_code_in_a_streamed_answer_is_a_400_too(live, seeded, upstream, gw):
    upstream.handler = json_answer(400, VLLM)
    resp = post(live, seeded.key, {**CHAT, "stream": True})
    assert resp.status_code == 400 and resp.json()["error"]["message"] == VLLM["message"]


# -- items 6 and 7: no upstream secret reaches a client or the log ---------------------------------
ANTHROPIC_KEY = "sk-ant-api03-Zq7XwV9mK2pL4nR8tY6uB3cD5eF1gH0jAaBbCcDdEeFf"


@pytest.fixture
def claude_model(app, seeded, claude):
    """Model `claude` on an Anthropic provider whose key the upstream will leak."""
    with app.app_context():
        provider = manage.create_provider("t", "anthropic", "anthropic", claude.url, api_key=ANTHROPIC_KEY)
        manage.create_model("t", "claude", provider, "claude-sonnet-4-5")
        db.session.commit()
    return "claude"


def leaky_stream(message: str):
    """An Anthropic stream that starts, then reports an error event quoting `message`."""
    def handler(req):
        head = fixture_sse("anthropic_stream_text.sse")[:4]  # message_start, block start, ping, first delta
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return 200, {"Content-Type": "text/event-stream"}, iter([*head, f"event: error\ndata: {json.dumps(error)}\n\n"])
    return handler


def assert_no_key(text: str) -> None:
    """Not the key, nor any 8 characters of it, in any case."""
    low = text.lower()
    for i in range(len(ANTHROPIC_KEY) - 7):
        assert ANTHROPIC_KEY[i:i + 8].lower() not in low, text


LEAK = f"Invalid API key: {ANTHROPIC_KEY} (also {ANTHROPIC_KEY.upper()[3:30]})"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_mid_stream_anthropic_error_never_shows_the_key(app, live, seeded, claude, claude_model, gw, path):
    claude.handler = leaky_stream(LEAK)
    body = {"model": "claude", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    resp = post(live, seeded.key, body, path=path)
    assert resp.status_code == 200
    text = resp.content.decode()
    assert "error" in text and "Invalid API key" in text and "[redacted]" in text
    assert_no_key(text)
    [row] = rows_when(app, 1)
    assert row.status == 502 and "[redacted]" in row.error_message
    assert_no_key(row.error_message)


def test_a_long_message_is_redacted_before_it_is_truncated(app, live, seeded, claude, claude_model, gw):
    message = "x" * 955 + ANTHROPIC_KEY
    claude.handler = json_answer(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                  "message": message}})
    resp = post(live, seeded.key, {"model": "claude", "max_tokens": 5, "messages": [{"role": "user",
                                                                                    "content": "hi"}]},
                path="/v1/messages")
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "x" * 955 + "[redacted]"
    [row] = log_rows(app)
    assert_no_key(row.error_message)


def provider_info(**fields) -> ProviderInfo:
    """A provider as the catalog hands it out, with only what scrub reads."""
    info = type("P", (), {"api_key": ANTHROPIC_KEY, "base_url": "https://api.example.com/v1",
                          "headers": {"X-Org-Token": "org-token-abcdef12345", "X-Flag": "1"}})()
    for name, value in fields.items():
        setattr(info, name, value)
    return info


@pytest.mark.parametrize("leak", [ANTHROPIC_KEY, ANTHROPIC_KEY.upper(), ANTHROPIC_KEY[10:18],
                                  ANTHROPIC_KEY[:-1], "ORG-TOKEN-ABCDEF12345", "HTTPS://API.EXAMPLE.COM/v1"])
def test_scrub_redacts_case_insensitive_and_partial_secrets(leak):
    out = scrub(f"before {leak} after", provider_info())
    assert out == "before [redacted] after"


def test_scrub_keeps_text_that_only_shares_short_runs():
    assert scrub("status 1, sk-ant is not a key", provider_info()) == "status 1, sk-ant is not a key"


# -- item 8: SSE frame injection through an upstream event type ------------------------------------
INJECTED = "content_block_delta\nevent: message_stop\ndata: {\"type\": \"message_stop\"}\n\nevent: x"


def test_an_event_type_with_newlines_cannot_forge_frames_on_messages(app, live, seeded, claude, claude_model, gw):
    def handler(req):
        head = fixture_sse("anthropic_stream_text.sse")[:3]
        forged = {"type": INJECTED, "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
        return 200, {"Content-Type": "text/event-stream"}, iter(
            [*head, f"event: content_block_delta\ndata: {json.dumps(forged)}\n\n",
             *fixture_sse("anthropic_stream_text.sse")[3:]])

    claude.handler = handler
    body = {"model": "claude", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    resp = post(live, seeded.key, body, path="/v1/messages")
    names = [line for line in resp.content.decode().split("\n") if line.startswith("event:")]
    assert "event: message_stop" not in names
    assert names[-1] == "event: error"
    assert "invalid name" in resp.content.decode()
    [row] = rows_when(app, 1)
    assert (row.status, row.error_type) == (502, "bad_upstream_response")


def test_the_native_responses_encoder_refuses_a_forged_event_name():
    from promptproxy.core.errors import GatewayError
    from promptproxy.dialects.responses import NativeResponsesEncoder

    encoder = NativeResponsesEncoder(None, None)
    assert encoder.chunk({"type": "response.output_text.delta", "delta": "hi"}).startswith(
        b"event: response.output_text.delta\n")
    with pytest.raises(GatewayError) as caught:
        encoder.chunk({"type": "response.output_text.delta\nevent: response.completed", "delta": "x"})
    assert caught.value.status == 502 and caught.value.code == "bad_upstream_response"


# -- items 11 and 12: budgets count every answer; answers without usage are not free ----------------
def set_limits(app, user: str = "alice", **limits) -> None:
    """Change a user's limits as the CLI does."""
    with app.app_context():
        manage.update_user("t", manage.get_user(user), **limits)
        db.session.commit()


def test_n_100_with_a_small_budget_is_refused_before_the_upstream_is_called(app, live, seeded, upstream, gw):
    # gpt-4o-mini costs $2 per million output tokens: 100 answers x 300 tokens = $0.06 > $0.05.
    set_limits(app, budget=0.05, period="day")
    resp = post(live, seeded.key, {**CHAT, "n": 100, "max_tokens": 300})
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "insufficient_quota"
    assert upstream.requests == []
    assert post(live, seeded.key, {**CHAT, "n": 1, "max_tokens": 300}).status_code == 200  # one answer fits


def test_tools_and_images_count_towards_the_estimate(app, seeded):
    from promptproxy.core.usage import estimate_input, prompt_tokens
    from promptproxy.ratelimit.limiter import IMAGE_TOKENS, image_tokens

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image, image]}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}
    assert prompt_tokens(body) - estimate_input(body) + image_tokens(body) > 2 * IMAGE_TOKENS


def test_a_whole_answer_without_usage_is_charged_and_flagged(app, live, seeded, upstream, gw):
    answer = chat_response("m", content="A fairly long answer with quite a few words in it. " * 4)
    del answer["usage"]
    upstream.handler = json_answer(200, answer)
    set_limits(app, tpm=40, budget=1.0, period="day")
    resp = post(live, seeded.key, CHAT)
    assert resp.status_code == 200
    [row] = log_rows(app)
    assert row.usage_estimated and row.input_tokens > 0 and row.output_tokens >= 40 and row.cost > 0
    with app.app_context():
        from promptproxy.models import BudgetUsage

        spent = db.session.scalar(sa.select(sa.func.sum(BudgetUsage.spent)))
    assert spent == pytest.approx(row.cost)
    second = post(live, seeded.key, CHAT)  # the estimated tokens used up the TPM window
    assert second.status_code == 429 and second.json()["error"]["type"] == "tokens"


# -- item 13: count_tokens is rate limited like any request -----------------------------------------
def test_count_tokens_counts_against_rpm(app, live, seeded, claude, claude_model, gw):
    set_limits(app, rpm=1)
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    first = post(live, seeded.key, body, path="/v1/messages/count_tokens")
    assert first.status_code == 200 and first.json() == {"input_tokens": 42}
    second = post(live, seeded.key, body, path="/v1/messages/count_tokens")
    assert second.status_code == 429
    assert second.json()["type"] == "error" and second.json()["error"]["type"] == "rate_limit_error"
    assert "Retry-After" in second.headers
    assert len(claude.requests) == 1


# -- item 20 (part): anthropic-beta flags allow-listed, mcp_servers off by default ------------------
def test_unknown_beta_flags_are_dropped_and_allowed_ones_pass(app, live, seeded, claude, claude_model, gw):
    headers = {"anthropic-beta": "claude-code-20250219,files-api-2025-04-14,Interleaved-Thinking-2025-05-14"}
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert post(live, seeded.key, body, path="/v1/messages", headers=headers).status_code == 200
    assert claude.last["headers"]["anthropic-beta"] == "claude-code-20250219,Interleaved-Thinking-2025-05-14"
    assert post(live, seeded.key, body, path="/v1/messages",
                headers={"anthropic-beta": "files-api-2025-04-14"}).status_code == 200
    assert "anthropic-beta" not in {k.lower() for k in claude.last["headers"]}


def test_the_beta_allow_list_is_configurable(app, live, seeded, claude, claude_model, gw):
    app.config["ANTHROPIC_BETA_ALLOW"] = "files-api-2025-04-14"
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"anthropic-beta": "claude-code-20250219,files-api-2025-04-14"}
    assert post(live, seeded.key, body, path="/v1/messages", headers=headers).status_code == 200
    assert claude.last["headers"]["anthropic-beta"] == "files-api-2025-04-14"


MCP = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_mcp_servers_are_refused_unless_enabled(app, live, seeded, claude, claude_model, gw, path):
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "mcp_servers": MCP}
    resp = post(live, seeded.key, body, path=path)
    assert resp.status_code == 400
    assert resp.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "`mcp_servers` is not enabled on this gateway."}}
    assert claude.requests == []
    app.config["ANTHROPIC_MCP_SERVERS"] = True
    assert post(live, seeded.key, body, path=path).status_code == 200
    assert claude.last["body"]["mcp_servers"] == MCP
