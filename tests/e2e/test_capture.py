"""The capture server answers as the official SDKs expect, and the committed captures hold no secrets."""
from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest
import requests

from .capture import REPLY, USAGE_IN, USAGE_OUT, CaptureServer, redact

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "agents"


def lower(headers: dict) -> dict:
    """Headers by lower-case name (clients differ in case)."""
    return {k.lower(): v for k, v in headers.items()}


@pytest.fixture
def capture():
    """A capture server that answers a first turn offering tools with a get_weather call."""
    server = CaptureServer(tool_first=("get_weather", {"city": "Paris"})).start()
    yield server
    server.stop()


def test_openai_sdk_reads_whole_and_streamed_responses(capture):
    client = openai.OpenAI(base_url=capture.url + "/v1", api_key="sk-secret-value", max_retries=0)
    whole = client.responses.create(model="m", input="hi")
    with client.responses.stream(model="m", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert whole.output_text == final.output_text == "".join(deltas) == REPLY
    assert (final.usage.input_tokens, final.usage.output_tokens) == (USAGE_IN, USAGE_OUT)
    assert [r["path"] for r in capture.requests] == ["/v1/responses"] * 2
    assert lower(capture.requests[0]["headers"])["authorization"] == "Bearer <redacted 22 chars>"


def test_openai_sdk_reads_tool_calls_in_responses_and_chat(capture):
    client = openai.OpenAI(base_url=capture.url + "/v1", api_key="k", max_retries=0)
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    resp = client.responses.create(model="m", input="weather?", tools=[tool])
    assert [(o.type, o.name, json.loads(o.arguments)) for o in resp.output] == [
        ("function_call", "get_weather", {"city": "Paris"})]
    chat_tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "weather?"}],
                                                 tools=[chat_tool], stream=True))
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]
    assert chunks[-1].usage.prompt_tokens == USAGE_IN


def test_anthropic_sdk_reads_whole_and_streamed_messages(capture):
    client = anthropic.Anthropic(base_url=capture.url, api_key="sk-ant-secret", max_retries=0)
    whole = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert whole.content[0].text == text == REPLY
    assert (final.usage.input_tokens, final.usage.output_tokens) == (USAGE_IN, USAGE_OUT)
    sent = lower(capture.requests[0]["headers"])  # this SDK sends its key as a Bearer token
    assert "<redacted" in sent.get("x-api-key", sent.get("authorization"))
    assert "sk-ant-secret" not in json.dumps(capture.requests)


def test_unknown_paths_are_404_and_head_is_recorded(capture):
    assert requests.post(capture.url + "/v1/nowhere", json={}, timeout=5).status_code == 404
    assert requests.head(capture.url + "/api/hello", timeout=5).status_code == 200
    assert [(r["method"], r["path"]) for r in capture.requests] == [("POST", "/v1/nowhere"), ("HEAD", "/api/hello")]


def test_redact_keeps_the_scheme_and_hides_the_secret():
    assert redact({"Authorization": "Bearer pp-abc", "X-Api-Key": "pp-abc", "Accept": "*/*"}) == {
        "Authorization": "Bearer <redacted 13 chars>", "X-Api-Key": "<redacted 6 chars>", "Accept": "*/*"}


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_captures_name_their_client_and_hold_no_key(path):
    doc = json.loads(path.read_text())
    assert doc["client"].split()[1][0].isdigit()  # "<client> <version>"
    assert doc["client_result"]["exit_code"] == 0
    secrets = [v for k, v in lower(doc["headers"]).items() if k in ("authorization", "x-api-key")]
    assert all("<redacted" in v for v in secrets)
    assert secrets or doc["method"] == "HEAD"  # model calls carry a key; the preflight HEAD does not
    assert "sk-capture" not in path.read_text()
