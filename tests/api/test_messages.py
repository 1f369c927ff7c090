"""The official anthropic SDK against /v1/messages: any model, stored prompts, streams, errors, usage."""
from __future__ import annotations

import json

import anthropic
import pytest
import requests

from ..anthropic_upstream import fixture_json, fixture_sse, sse_events
from ..upstream import chat_response
from .conftest import CLAUDE_SECRET, settled_rows

WEATHER = {"name": "get_weather", "description": "Current weather",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}


@pytest.fixture
def sdk(live, seeded, claude_model):
    """The official Anthropic client pointed at the gateway (key in x-api-key)."""
    return anthropic.Anthropic(base_url=live, api_key=seeded.key, max_retries=0)


def events_of(resp: requests.Response) -> list[tuple[str, dict]]:
    """(event, data) pairs of a raw SSE response, checking every data line has its event line."""
    out = []
    for block in resp.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(lines) == {"event", "data"}
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        out.append((lines["event"], data))
    return out


# -- OpenAI-compatible upstream: translated both ways ----------------------------------------------------------
def test_create_on_openai_model_without_prompt(sdk, upstream, app, seeded):
    msg = sdk.messages.create(model="gpt-4o-mini", max_tokens=100, system="Be brief.",
                              messages=[{"role": "user", "content": "Good morning"}])
    assert msg.content[0].text == "Bonjour!"
    assert (msg.role, msg.model, msg.stop_reason) == ("assistant", "gpt-4o-mini", "end_turn")
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 7)
    sent = upstream.last
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret-1234"
    assert sent["body"]["model"] == "real-model-name:latest"
    assert sent["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Good morning"}]
    assert sent["body"]["max_tokens"] == 100
    [row] = settled_rows(app)
    assert (row.inbound_format, row.endpoint, row.status, row.model) == ("anthropic", "/v1/messages", 200,
                                                                         "gpt-4o-mini")
    assert (row.input_tokens, row.output_tokens, row.user_id) == (11, 7, seeded.user_id)
    assert row.cost == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)


def test_create_with_stored_prompt_and_bearer_key(live, seeded, upstream, app):
    sdk = anthropic.Anthropic(base_url=live, auth_token=seeded.key, max_retries=0)
    msg = sdk.messages.create(model="gpt-4o-mini:translator@1", max_tokens=50, system="Be brief.",
                              messages=[{"role": "user", "content": "Good morning"}])
    assert msg.content[0].text == "Bonjour!"
    assert upstream.last["body"]["messages"][:2] == [
        {"role": "system", "content": "Translate the user's words into French."},
        {"role": "system", "content": "Be brief."}]
    [row] = settled_rows(app)
    assert (row.prompt, row.prompt_version, row.inbound_format) == ("translator", 1, "anthropic")


def test_tool_calls_from_openai_model_become_tool_use(sdk, upstream):
    answer = chat_response("m", content=None)
    answer["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Oslo"}'}}]
    answer["choices"][0]["finish_reason"] = "tool_calls"
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"}, json.dumps(answer))
    msg = sdk.messages.create(model="gpt-4o-mini", max_tokens=100, tools=[WEATHER],
                              tool_choice={"type": "tool", "name": "get_weather"},
                              messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert (block.type, block.id, block.name, block.input) == ("tool_use", "call_1", "get_weather",
                                                               {"location": "Oslo"})
    body = upstream.last["body"]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather", "parameters": WEATHER["input_schema"]}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_stream_on_openai_model_with_sdk(sdk, upstream, app):
    with sdk.messages.stream(model="gpt-4o-mini:translator", max_tokens=50,
                             messages=[{"role": "user", "content": "Good morning"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Bonjour!"
    assert final.usage.output_tokens == 3 and final.stop_reason == "end_turn"
    assert upstream.last["body"]["messages"][0]["role"] == "system"
    assert upstream.last["body"]["stream_options"] == {"include_usage": True}
    [row] = settled_rows(app)
    assert (row.stream, row.inbound_format, row.input_tokens, row.output_tokens) == (True, "anthropic", 11, 3)


def test_stream_event_sequence_on_the_wire(live, seeded, upstream):
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key}, timeout=10, json={
        "model": "gpt-4o-mini", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["request-id"].startswith("req_")
    names = [name for name, _ in events_of(resp)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]


def test_upstream_error_on_openai_model_in_anthropic_envelope(sdk, upstream):
    upstream.handler = lambda req: (503, {"Content-Type": "application/json"},
                                    json.dumps({"error": {"message": "busy", "type": "server_error"}}))
    with pytest.raises(anthropic.InternalServerError) as info:
        sdk.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


def test_count_tokens_on_openai_model_is_an_estimate(sdk, upstream):
    count = sdk.messages.count_tokens(model="gpt-4o-mini:translator",
                                      messages=[{"role": "user", "content": "Good morning"}])
    plain = sdk.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "Good morning"}])
    assert 0 < plain.input_tokens < count.input_tokens  # the stored prompt is counted too
    assert upstream.requests == []


# -- Anthropic upstream: passed through ---------------------------------------------------------------------------
def test_create_on_claude_passes_through_with_stored_prompt_first(sdk, claude, app):
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    msg = sdk.messages.create(model="claude:translator", max_tokens=1024, system=system,
                              thinking={"type": "enabled", "budget_tokens": 512}, extra_body={"top_k": 5},
                              messages=[{"role": "user", "content": "Good morning"}])
    assert msg.model == "claude"
    assert msg.content[0].text == "Hi! My name is Claude."
    assert msg.id == fixture_json("anthropic_response_text.json")["id"]
    sent = claude.last
    assert sent["headers"]["x-api-key"] == CLAUDE_SECRET
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    body = sent["body"]
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["system"] == [{"type": "text", "text": "Translate the user's words into French."}, *system]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 512} and body["top_k"] == 5
    assert body["messages"] == [{"role": "user", "content": "Good morning"}]
    [row] = settled_rows(app)
    assert (row.inbound_format, row.model, row.upstream_model, row.prompt) == (
        "anthropic", "claude", "claude-sonnet-4-5-20250929", "translator")
    assert (row.input_tokens, row.output_tokens) == (2095, 503)
    assert row.cost == pytest.approx((2095 * 3.0 + 503 * 15.0) / 1e6)


def test_unsigned_thinking_from_a_chat_model_is_not_sent_to_claude(sdk, claude):
    """A session that moves from a chat model (our thinking blocks have no signature) to Claude still works."""
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": ""},
                                                 {"type": "thinking", "thinking": "signed", "signature": "sig-1"},
                                                 {"type": "text", "text": "Hello"}]},
               {"role": "user", "content": "Again"}]
    sdk.messages.create(model="claude", max_tokens=64, messages=history)
    assert claude.last["body"]["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "sig-1"}, {"type": "text", "text": "Hello"}]


def test_claude_without_max_tokens_gets_the_default(live, seeded, claude_model, claude, app):
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key}, timeout=10,
                         json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200
    assert claude.last["body"]["max_tokens"] == app.config["DEFAULT_MAX_TOKENS"]
    assert "system" not in claude.last["body"]


def test_cache_tokens_on_claude_priced_separately(sdk, app):
    msg = sdk.messages.create(model="claude", max_tokens=1024, tools=[WEATHER],
                              messages=[{"role": "user", "content": "Weather?"}])
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (1800, 248)
    assert msg.content[1].input == {"location": "San Francisco, CA", "unit": "celsius"}
    [row] = settled_rows(app)
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens, row.output_tokens) == (2098, 1800, 248, 90)
    assert round(row.cost, 5) == 0.00297


def test_stream_on_claude_is_relayed_event_for_event(live, seeded, claude_model, claude, app):
    resp = requests.post(live + "/v1/messages", headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10,
                         json={"model": "claude:translator", "max_tokens": 20, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]})
    expected = sse_events("anthropic_stream_text.sse")
    expected[0][1]["message"]["model"] = "claude"
    assert events_of(resp) == expected
    assert claude.last["body"]["system"][0]["text"] == "Translate the user's words into French."
    [row] = settled_rows(app)
    assert (row.stream, row.status, row.input_tokens, row.output_tokens) == (True, 200, 25, 15)


def test_stream_on_claude_with_sdk_tools(sdk):
    with sdk.messages.stream(model="claude", max_tokens=100, tools=[WEATHER],
                             messages=[{"role": "user", "content": "Weather?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.model == "claude"
    assert final.content[1].input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert final.usage.output_tokens == 89


def test_overloaded_claude_gives_overloaded_error(sdk, claude, app):
    claude.handler = lambda req: (529, {"Content-Type": "application/json"},
                                  json.dumps(fixture_json("anthropic_error_529.json")))
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert info.value.response.headers["request-id"].startswith("req_")
    [row] = settled_rows(app)
    assert (row.status, row.error_type, row.inbound_format) == (info.value.status_code, "overloaded", "anthropic")


def test_error_event_mid_stream_on_claude(sdk, claude, app):
    claude.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                  iter(fixture_sse("anthropic_stream_error.sse")))
    with pytest.raises(anthropic.APIStatusError) as info:
        with sdk.messages.stream(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as s:
            list(s.text_stream)
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    [row] = settled_rows(app)
    assert (row.status, row.error_type) == (503, "overloaded")


def test_count_tokens_on_claude_is_forwarded_with_stored_prompt(sdk, claude):
    count = sdk.messages.count_tokens(model="claude:translator", messages=[{"role": "user", "content": "hi"}],
                                      tools=[WEATHER])
    assert count.input_tokens == 42
    sent = claude.last
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["headers"]["x-api-key"] == CLAUDE_SECRET
    assert sent["body"] == {"model": "claude-sonnet-4-5-20250929", "tools": [WEATHER],
                            "system": [{"type": "text", "text": "Translate the user's words into French."}],
                            "messages": [{"role": "user", "content": "hi"}]}


# -- errors in Anthropic's envelope -------------------------------------------------------------------------------
def test_bad_key_is_authentication_error(live, seeded, upstream, app):
    sdk = anthropic.Anthropic(base_url=live, api_key="pp-not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        sdk.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "Incorrect API key provided."}}
    assert info.value.response.headers["request-id"].startswith("req_")
    assert upstream.requests == []
    [row] = settled_rows(app)
    assert (row.status, row.inbound_format) == (401, "anthropic")


def test_missing_key_is_authentication_error(live):
    resp = requests.post(live + "/v1/messages", json={"model": "x"}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_unknown_model_and_prompt_are_not_found_error(sdk, upstream):
    for model in ("nope", "gpt-4o-mini:nope"):
        with pytest.raises(anthropic.NotFoundError) as info:
            sdk.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "not_found_error"
        assert "does not exist or you do not have access to it" in info.value.body["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("body, message", [
    ({"model": "gpt-4o-mini", "max_tokens": 5, "messages": []}, "`messages` must be a non-empty array."),
    ({"model": "gpt-4o-mini", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]},
     "`max_tokens` must be a positive integer."),
    ({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "tool", "content": "hi"}]},
     "Message role must be user, assistant or system."),
    ({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
      "metadata": {"api_base": "http://evil"}}, "Unsupported parameter: `metadata.api_base` cannot be set by clients."),
])
def test_invalid_requests_are_invalid_request_error(live, seeded, upstream, body, message):
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key}, json=body, timeout=10)
    assert resp.status_code == 400
    assert resp.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    assert upstream.requests == []


def test_invalid_json_is_invalid_request_error(live, seeded):
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key,
                                                         "Content-Type": "application/json"}, data=b"{", timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_connection_lost_mid_stream_ends_with_an_error_event(live, seeded, upstream, app):
    def handler(req):
        first = {"id": "c", "object": "chat.completion.chunk", "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "Bon"}, "finish_reason": None}]}
        return 200, {"Content-Type": "text/event-stream"}, iter([f"data: {json.dumps(first)}\n\n", None])

    upstream.handler = handler
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key}, timeout=10, json={
        "model": "gpt-4o-mini", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    events = events_of(resp)
    assert [name for name, _ in events][:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "The upstream connection failed in the middle of the stream."}})
    [row] = settled_rows(app)
    assert (row.status, row.error_type, row.inbound_format) == (502, "upstream_disconnect", "anthropic")


def test_stored_tools_params_and_variables_on_claude(live, seeded, claude_model, claude, app):
    from promptproxy import manage
    from promptproxy.extensions import db

    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    with app.app_context():
        manage.create_prompt("t", "helper", "You help {{team}}.", tools=[tool], variables={"team": "ops"},
                             params={"temperature": {"value": 0.1, "locked": True}, "stop": {"value": "END"},
                                     "seed": {"value": 7}})
        db.session.commit()
    sdk = anthropic.Anthropic(base_url=live, api_key=seeded.key, max_retries=0)
    sdk.messages.create(model="claude:helper", max_tokens=10, tools=[WEATHER],
                        messages=[{"role": "user", "content": "hi"}],
                        extra_body={"prompt_variables": {"team": "dev"}, "temperature": 0.9})
    body = claude.last["body"]
    assert body["system"] == [{"type": "text", "text": "You help dev."}]
    assert [t["name"] for t in body["tools"]] == ["lookup", "get_weather"]
    assert body["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    assert (body["temperature"], body["stop_sequences"]) == (0.1, ["END"])
    assert "seed" not in body and "prompt_variables" not in body
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk.messages.create(model="claude:helper", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                            tools=[{**WEATHER, "name": "lookup"}])
    assert info.value.body["error"] == {"type": "invalid_request_error",
                                        "message": "Tool(s) already defined by the stored prompt: lookup"}


def test_prompt_variables_without_a_prompt_is_invalid(sdk, upstream):
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk.messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
                            extra_body={"prompt_variables": {"a": "b"}})
    assert "needs a stored prompt" in info.value.body["error"]["message"]
    assert upstream.requests == []


def test_count_tokens_needs_a_key(live):
    resp = requests.post(live + "/v1/messages/count_tokens", timeout=10, headers={"x-api-key": "bad"},
                         json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 401
    assert resp.json() == {"type": "error", "error": {"type": "authentication_error",
                                                      "message": "Incorrect API key provided."}}


def test_claude_only_features_pass_through_untranslated(live, seeded, claude_model, claude):
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}
    shot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages = [
        {"role": "user", "content": [doc, {"type": "text", "text": "Sum up", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "...", "signature": "sig"},
                                          {"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [shot]}]},
    ]
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key}, timeout=10, json={
        "model": "claude", "max_tokens": 50, "messages": messages, "tools": tools, "service_tier": "auto"})
    assert resp.status_code == 200
    body = claude.last["body"]
    assert (body["messages"], body["tools"], body["service_tier"]) == (messages, tools, "auto")


def test_claude_only_features_are_refused_for_openai_models(live, seeded, upstream):
    resp = requests.post(live + "/v1/messages", headers={"x-api-key": seeded.key}, timeout=10, json={
        "model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert resp.status_code == 400
    assert resp.json()["error"] == {"type": "invalid_request_error",
                                    "message": "Tool type 'web_search_20250305' is an Anthropic server tool, "
                                               "not available on this model."}
    assert upstream.requests == []


def test_client_beta_flags_reach_anthropic_upstream_merged_with_the_providers(live, seeded, claude_model, claude,
                                                                              app):
    from promptproxy import manage
    from promptproxy.extensions import db
    from promptproxy.models import Provider

    with app.app_context():
        provider = db.session.query(Provider).filter_by(name="anthropic").one()
        manage.update_provider("t", provider, headers={"anthropic-beta": "admin-flag-1"})
        db.session.commit()
    # `x` is well-formed but not on the ANTHROPIC_BETA_ALLOW list: dropped.
    headers = {"x-api-key": seeded.key, "anthropic-beta": "interleaved-thinking-2025-05-14, bad flag;=,x"}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        resp = requests.post(live + path, headers=headers, timeout=10, json={
            "model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200
        assert claude.last["headers"]["anthropic-beta"] == "admin-flag-1,interleaved-thinking-2025-05-14"
        assert "_anthropic_beta" not in claude.last["body"]
