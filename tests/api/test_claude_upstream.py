"""The official openai SDK against a Claude-backed model: translated to the Messages API and back."""
from __future__ import annotations

import json

import openai
import pytest

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import Provider

from ..anthropic_upstream import fixture_json, fixture_sse
from .conftest import CLAUDE_SECRET, settled_rows

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.fixture
def sdk(live, seeded, claude_model):
    """The official OpenAI client pointed at the gateway."""
    return openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)


def test_create_translates_request_and_answer(sdk, claude, app, seeded):
    resp = sdk.chat.completions.create(
        model="claude:translator", temperature=0, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Good morning"},
                  {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Again"}])
    assert resp.choices[0].message.content == "Hi! My name is Claude."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "claude"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2095, 503)
    sent = claude.last
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == CLAUDE_SECRET
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent["headers"] and seeded.key not in json.dumps(sent["headers"])
    body = sent["body"]
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["system"] == [{"type": "text", "text": "Translate the user's words into French."},
                              {"type": "text", "text": "Be brief."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == app.config["DEFAULT_MAX_TOKENS"]
    assert (body["temperature"], body["stop_sequences"]) == (0, ["END"])


def test_tools_images_and_tool_results(sdk, claude):
    resp = sdk.chat.completions.create(
        model="claude", tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=300,
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Weather where these were taken?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather",
                                                                   "arguments": '{"location": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        ])
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name) == ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    body = claude.last["body"]
    assert body["max_tokens"] == 300
    assert body["tools"] == [{"name": "get_weather", "description": "Current weather",
                              "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    images = [b["source"] for b in body["messages"][0]["content"] if b["type"] == "image"]
    assert images == [{"type": "url", "url": "https://example.com/a.png"},
                      {"type": "base64", "media_type": "image/png", "data": PIXEL}]
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"location": "Paris"}}]
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]


def test_stream_text_with_usage_at_the_end(sdk, claude, app):
    stream = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (25, 15)
    assert {c.model for c in chunks} == {"claude"}
    assert claude.last["body"]["stream"] is True
    assert "stream_options" not in claude.last["body"]
    [row] = settled_rows(app)
    assert (row.stream, row.status, row.input_tokens, row.output_tokens) == (True, 200, 25, 15)
    assert not row.usage_estimated and row.inbound_format == "openai"


def test_stream_without_include_usage_sends_no_usage_chunk(sdk):
    chunks = list(sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                              stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_stream_tool_call_arguments_arrive_in_pieces(sdk):
    chunks = list(sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "weather?"}],
                                              tools=[WEATHER_TOOL], stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and calls[0].id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {
        "location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_cache_tokens_logged_and_priced_separately(sdk, app):
    resp = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "weather?"}],
                                       tools=[WEATHER_TOOL])
    # The fixture: 50 fresh input tokens, 1800 read from cache, 248 written to it, 90 output.
    assert resp.usage.prompt_tokens == 2098
    assert resp.usage.prompt_tokens_details.cached_tokens == 1800
    [row] = settled_rows(app)
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens, row.output_tokens) == (2098, 1800, 248, 90)
    assert row.cost == pytest.approx((50 * 3.0 + 1800 * 0.3 + 248 * 3.75 + 90 * 15.0) / 1e6)
    assert round(row.cost * 1000, 2) == 2.97  # $0.00297, to a thousandth of a cent


def test_overloaded_529_is_503_overloaded(sdk, claude, app):
    claude.handler = lambda req: (529, {"Content-Type": "application/json"},
                                  json.dumps(fixture_json("anthropic_error_529.json")))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert info.value.body == {"message": "Overloaded", "type": "overloaded_error", "param": None,
                               "code": "overloaded"}
    [row] = settled_rows(app)
    assert (row.status, row.error_type, row.cost) == (503, "overloaded", None)


def test_upstream_400_passes_through_in_openai_envelope(sdk, claude):
    claude.handler = lambda req: (400, {"Content-Type": "application/json"}, json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too large"}}))
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["message"] == "max_tokens: too large"
    assert info.value.body["type"] == "invalid_request_error"


def test_upstream_rejecting_our_key_is_502(sdk, claude):
    claude.handler = lambda req: (401, {"Content-Type": "application/json"}, json.dumps(
        {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502 and info.value.body["code"] == "upstream_auth_failed"


def test_error_event_mid_stream_reaches_the_client(sdk, claude, app):
    claude.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                  iter(fixture_sse("anthropic_stream_error.sse")))
    stream = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(stream)
    [row] = settled_rows(app)
    assert (row.status, row.error_type) == (503, "overloaded")


def test_stream_cut_before_message_stop_is_an_error(sdk, claude, app):
    claude.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                  iter(fixture_sse("anthropic_stream_text.sse")[:4]))
    with pytest.raises(openai.APIError, match="ended the stream before it was complete"):
        list(sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True))
    [row] = settled_rows(app)
    assert (row.status, row.error_type) == (502, "upstream_disconnect")


def test_untranslatable_request_is_400_with_param_and_no_upstream_call(sdk, claude):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], n=2)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert info.value.body["param"] == "messages[0].content[0].type"
    assert claude.requests == []


def test_version_base_url_and_default_max_tokens_are_configurable(sdk, claude, app):
    with app.app_context():
        provider = db.session.query(Provider).filter_by(name="anthropic").one()
        manage.update_provider("t", provider, base_url=claude.url + "/v1/", anthropic_version="2024-01-01",
                               default_max_tokens=1234)
        db.session.commit()
    sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert claude.last["path"] == "/v1/messages"
    assert claude.last["headers"]["anthropic-version"] == "2024-01-01"
    assert claude.last["body"]["max_tokens"] == 1234


def test_completion_model_on_anthropic_provider_is_refused(live, seeded, claude_model, claude, app):
    with app.app_context():
        provider = db.session.query(Provider).filter_by(name="anthropic").one()
        manage.create_model("t", "claude-text", provider, "claude-x", kind="completion")
        db.session.commit()
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model="claude-text", prompt="hi")
    assert info.value.body["param"] == "model" and "cannot serve this endpoint" in info.value.body["message"]
    assert claude.requests == []
