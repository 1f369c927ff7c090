"""Golden and behaviour tests for the Responses API <-> chat completions translation.

Golden files hold the input and the expected output; PROMPTPROXY_UPDATE_GOLDEN=1 rewrites the expected part
(read the diff before committing it).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import yaml
from openai.types.responses import Response

from promptproxy.dialects.responses_wire import (
    ChatStreamToResponses,
    chat_to_response,
    input_items,
    request_to_chat,
    response_items_for_history,
    usage_to_responses,
)
from promptproxy.providers.anthropic_wire import anthropic_to_openai_chat, openai_chat_to_anthropic
from promptproxy.providers.wire_common import TranslationError, UpstreamStreamError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "responses"
SPEC = ROOT.parent.parent / "shared" / "spec" / "openai-openapi.yaml"
UPDATE = os.environ.get("PROMPTPROXY_UPDATE_GOLDEN") == "1"
RESP_ID = "resp_0123456789abcdef"
CREATED = 1_700_000_000
MODEL = "gpt-4o-mini"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def fixture_names(prefix: str) -> list[str]:
    """Golden fixture names that start with `prefix`."""
    return sorted(p.stem for p in FIXTURES.glob(f"{prefix}*.json"))


def golden(name: str, key: str, actual):
    """Assert `actual` equals the fixture's `key` (or write it there in update mode)."""
    path = FIXTURES / f"{name}.json"
    data = json.loads(path.read_text())
    if UPDATE:
        data[key] = actual
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    assert json.loads(json.dumps(actual)) == data[key]


def load(name: str) -> dict:
    """A golden fixture."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def to_chat(body: dict, history=(), **kwargs) -> dict:
    """request_to_chat with the fixture's keyword arguments."""
    return request_to_chat(body, history, **kwargs)


def to_response(chat: dict, request: dict) -> dict:
    """chat_to_response with the tests' fixed id and time."""
    return chat_to_response(chat, response_id=RESP_ID, model=MODEL, request=request, created_at=CREATED)


def stream_events(request: dict, chunks: list[dict], usage=None) -> tuple[list, ChatStreamToResponses]:
    """Every event for a recorded chunk sequence, and the translator."""
    stream = ChatStreamToResponses(RESP_ID, MODEL, request, CREATED)
    events = stream.start()
    for chunk in chunks:
        events += stream.feed(chunk)
    return events + stream.finish(usage), stream


def chat_reply(message: dict, finish_reason: str = "stop") -> dict:
    """A minimal chat.completion."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(delta: dict | None = None, finish_reason: str | None = None) -> dict:
    """A chat.completion.chunk with one choice."""
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish_reason}
    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "choices": [choice]}


@functools.cache
def required_response_fields() -> list[str]:
    """The fields the OpenAI spec marks required on a Response object (the 2 MB spec is parsed once)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(SPEC.read_text(), Loader=loader) if SPEC.exists() else None  # noqa: S506 (a safe loader)
    if spec is None:
        return ["id", "object", "created_at", "error", "incomplete_details", "instructions", "model", "tools",
                "output", "parallel_tool_calls", "metadata", "tool_choice", "temperature", "top_p"]
    parts = spec["components"]["schemas"]["Response"]["allOf"]
    return [field for part in parts for field in part.get("required", [])]


def assert_valid_response(obj: dict) -> Response:
    """The object has every field the spec requires and parses as the SDK's Response."""
    missing = [field for field in required_response_fields() if field not in obj]
    assert missing == []
    return Response.model_validate(obj)


def sse_body(events: list) -> bytes:
    """An SSE body for (event, data) pairs, as the gateway will send it."""
    return "".join(f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events).encode()


def sdk_client(body: bytes, content_type: str) -> openai.OpenAI:
    """The official SDK, reading `body` for every request instead of going to the network."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body,
                                                                   headers={"content-type": content_type}))
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1",
                         http_client=httpx.Client(transport=transport))


# --- request_to_chat --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_names("request_"))
def test_request_translates_to_the_golden_chat_request(name):
    fixture = load(name)
    golden(name, "chat", to_chat(fixture["request"], fixture.get("history", ()), **fixture.get("kwargs", {})))


def test_a_string_input_is_one_user_message_item():
    assert input_items({"input": "hi"}) == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    ]


def test_a_message_without_a_type_is_a_message_item():
    assert input_items({"input": [{"role": "user", "content": "hi"}]}) == [
        {"type": "message", "role": "user", "content": "hi"}
    ]


def test_no_input_is_no_items():
    assert input_items({"previous_response_id": "resp_1"}) == []


def test_developer_messages_reach_chat_servers_as_one_system_message():
    body = {"instructions": "Be brief.", "input": [{"role": "developer", "content": "Speak French."},
                                                   {"role": "user", "content": "Hi"}]}
    assert to_chat(body)["messages"] == [
        {"role": "system", "content": "Be brief.\n\nSpeak French."},
        {"role": "user", "content": "Hi"},
    ]


def test_a_system_message_after_the_conversation_started_stays_in_place():
    body = {"input": [{"role": "user", "content": "Hi"}, {"role": "developer", "content": "Now be formal."}]}
    assert [m["role"] for m in to_chat(body)["messages"]] == ["user", "system"]


def test_reasoning_effort_is_sent_only_to_upstreams_that_take_it():
    body = {"input": "Hi", "reasoning": {"effort": "high"}}
    assert "reasoning_effort" not in to_chat(body)
    assert to_chat(body, reasoning_effort=True)["reasoning_effort"] == "high"


def test_the_output_limit_is_max_tokens_unless_the_upstream_wants_the_new_name():
    body = {"input": "Hi", "max_output_tokens": 64}
    assert to_chat(body)["max_tokens"] == 64
    assert to_chat(body, max_tokens_field="max_completion_tokens") == {
        "model": None, "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 64
    }


def test_the_upstream_model_replaces_the_public_name():
    assert to_chat({"model": "public", "input": "Hi"}, upstream_model="real:7b")["model"] == "real:7b"


def test_safety_identifier_becomes_the_chat_user():
    assert to_chat({"input": "Hi", "safety_identifier": "hash-1", "user": "old"})["user"] == "hash-1"


def test_json_object_format_becomes_response_format():
    assert to_chat({"input": "Hi", "text": {"format": {"type": "json_object"}}})["response_format"] == {
        "type": "json_object"
    }


def test_tool_choice_is_left_out_without_tools():
    assert "tool_choice" not in to_chat({"input": "Hi", "tool_choice": "auto", "parallel_tool_calls": True})


def test_a_named_custom_tool_choice_names_its_function():
    body = {"input": "Hi", "tools": [{"type": "custom", "name": "patch"}], "tool_choice": {"type": "custom",
                                                                                            "name": "patch"}}
    assert to_chat(body)["tool_choice"] == {"type": "function", "function": {"name": "patch"}}


def test_namespace_tools_reach_the_model_as_their_members():
    body = {"input": "Hi", "tools": [{"type": "namespace", "name": "agents", "description": "Sub-agents.",
                                      "tools": [dict(WEATHER, name="spawn")]}]}
    assert [t["function"]["name"] for t in to_chat(body)["tools"]] == ["spawn"]


def test_dropped_hosted_tools_are_left_out():
    body = {"input": "Hi", "tools": [WEATHER, {"type": "web_search", "external_web_access": True}]}
    assert [t["function"]["name"] for t in to_chat(body, drop_tools={"web_search"})["tools"]] == ["get_weather"]


def test_only_dropped_tools_means_no_tools_at_all():
    body = {"input": "Hi", "tools": [{"type": "web_search"}], "tool_choice": "auto"}
    assert to_chat(body, drop_tools={"web_search"}) == {"model": None, "messages": [{"role": "user",
                                                                                     "content": "Hi"}]}


def test_a_tool_output_that_is_not_a_string_is_sent_as_json():
    body = {"input": [{"type": "function_call_output", "call_id": "c1", "output": {"ok": True}}]}
    assert to_chat(body)["messages"] == [{"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'}]


# Every refused request names the field at fault, so the route can answer 400 with OpenAI's `param`.
REFUSED = [
    pytest.param({"input": "Hi", "tools": [WEATHER, {"type": "web_search"}]}, "tools[1].type", "web_search",
                 id="web_search"),
    pytest.param({"input": "Hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]},
                 "tools[0].type", "file_search", id="file_search"),
    pytest.param({"input": "Hi", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
                 "tools[0].type", "code_interpreter", id="code_interpreter"),
    pytest.param({"input": "Hi", "tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type", "mcp",
                 id="mcp"),
    pytest.param({"input": "Hi", "tools": [{"type": "local_shell"}]}, "tools[0].type", "local_shell",
                 id="local_shell"),
    pytest.param({"input": "Hi", "tools": [{"type": "computer_use_preview"}]}, "tools[0].type", "computer_use",
                 id="computer_use"),
    pytest.param({"input": "Hi", "tools": [{"type": "image_generation"}]}, "tools[0].type", "image_generation",
                 id="image_generation"),
    pytest.param({"input": "Hi", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "mcp"}]}]},
                 "tools[0].tools[0].type", "mcp", id="hosted-tool-in-namespace"),
    pytest.param({"input": "Hi", "tools": [{"type": "function"}]}, "tools[0].name", "name", id="nameless-tool"),
    pytest.param({"input": "Hi", "tools": {"type": "function"}}, "tools", "array", id="tools-not-a-list"),
    pytest.param({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "reference",
                 id="item_reference"),
    pytest.param({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "web_search_call",
                 id="hosted-tool-item"),
    pytest.param({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
                 "input[0].content[0].file_id", "file_id", id="image-file_id"),
    pytest.param({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
                 "input[0].content[0].type", "input_file", id="input_file"),
    pytest.param({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
                 "input[0].content", "text", id="image-in-system"),
    pytest.param({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "tool", id="unknown-role"),
    pytest.param({"input": [{"role": "user", "content": 7}]}, "input[0].content", "string", id="content-number"),
    pytest.param({"input": 7}, "input", "string", id="input-number"),
    pytest.param({"input": ["hi"]}, "input[0]", "object", id="item-not-object"),
    pytest.param({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id",
                 "call_id", id="call-without-call_id"),
    pytest.param({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "call_id",
                 id="output-without-call_id"),
    pytest.param({"input": [{"type": "function_call_output", "call_id": "c",
                             "output": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
                 "input[0].output[0].type", "text", id="image-in-tool-output"),
    pytest.param({"input": "Hi", "instructions": ["x"]}, "instructions", "string", id="instructions-list"),
    pytest.param({"input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}},
                 "tool_choice", "tool_choice", id="hosted-tool_choice"),
    pytest.param({"input": "Hi", "text": {"format": {"type": "grammar"}}}, "text.format.type", "grammar",
                 id="text-format"),
]


@pytest.mark.parametrize(("body", "param", "words"), REFUSED)
def test_untranslatable_requests_are_refused_naming_the_field(body, param, words):
    with pytest.raises(TranslationError) as caught:
        to_chat(body)
    assert caught.value.param == param
    assert words in caught.value.message


def test_the_captured_codex_request_is_refused_without_dropping_web_search():
    request = load("request_codex_capture")["request"]
    with pytest.raises(TranslationError) as caught:
        to_chat(request)
    assert caught.value.param == f"tools[{len(request['tools']) - 1}].type"
    assert "'web_search'" in caught.value.message


# --- chat_to_response -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_names("response_"))
def test_chat_completion_translates_to_the_golden_response(name):
    fixture = load(name)
    response = to_response(fixture["chat_response"], fixture["request"])
    golden(name, "response", response)
    assert_valid_response(response)


def test_the_sdk_reads_a_translated_response():
    fixture = load("response_tool_calls")
    body = json.dumps(to_response(fixture["chat_response"], fixture["request"])).encode()
    response = sdk_client(body, "application/json").responses.create(model=MODEL, input="Weather?")
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_1", "get_weather", {"city": "Paris"}), ("call_2", "get_weather", {"city": "Rome"})
    ]


def test_a_text_answer_reads_as_output_text():
    response = assert_valid_response(to_response(load("response_text")["chat_response"], {"input": "Hi"}))
    assert response.output_text == "Hello there!"


def test_a_refusal_is_a_refusal_part():
    response = to_response(chat_reply({"content": None, "refusal": "I can't help."}), {})
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]


def test_a_content_filter_stop_is_incomplete():
    response = to_response(chat_reply({"content": ""}, "content_filter"), {})
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "content_filter"})


def test_an_empty_answer_is_one_empty_message():
    response = assert_valid_response(to_response(chat_reply({"content": None}), {}))
    assert response.output_text == ""
    assert len(response.output) == 1


def test_newer_vllm_reasoning_field_becomes_a_reasoning_item():
    output = to_response(chat_reply({"content": "4", "reasoning": "2+2"}), {})["output"]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "2+2"}]


def test_calls_to_namespaced_tools_carry_the_namespace():
    request = {"tools": [{"type": "namespace", "name": "agents", "tools": [dict(WEATHER, name="spawn")]}]}
    call = {"id": "call_1", "type": "function", "function": {"name": "spawn", "arguments": "{}"}}
    item = to_response(chat_reply({"content": None, "tool_calls": [call]}, "tool_calls"), request)["output"][0]
    assert (item["namespace"], item["name"]) == ("agents", "spawn")


def test_a_custom_call_with_arguments_not_from_us_keeps_them_as_its_input():
    request = {"tools": [{"type": "custom", "name": "patch"}]}
    call = {"id": "call_1", "type": "function", "function": {"name": "patch", "arguments": "raw text"}}
    item = to_response(chat_reply({"content": None, "tool_calls": [call]}), request)["output"][0]
    assert (item["type"], item["input"]) == ("custom_tool_call", "raw text")


def test_openai_chat_custom_tool_calls_become_custom_tool_call_items():
    call = {"id": "call_1", "type": "custom", "custom": {"name": "patch", "input": "*** Begin"}}
    item = to_response(chat_reply({"content": None, "tool_calls": [call]}), {})["output"][0]
    assert (item["type"], item["name"], item["input"]) == ("custom_tool_call", "patch", "*** Begin")


def test_the_same_response_id_gives_the_same_item_ids():
    fixture = load("response_tool_calls")
    first = to_response(fixture["chat_response"], fixture["request"])
    again = to_response(fixture["chat_response"], fixture["request"])
    assert [i["id"] for i in first["output"]] == [i["id"] for i in again["output"]] == [
        "fc_0123456789abcdef_0", "fc_0123456789abcdef_1"
    ]


def test_usage_accepts_normalized_usage():
    assert usage_to_responses({"input_tokens": 10, "output_tokens": 4, "cached_tokens": 6}) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 14,
    }


def test_no_usage_is_null_usage():
    assert usage_to_responses(None) is None


def test_history_is_the_earlier_items_then_the_output():
    earlier = [{"type": "message", "role": "user", "content": "Hi"}]
    response = to_response(chat_reply({"content": "Hello"}), {})
    items = response_items_for_history(earlier, response)
    assert items == [*earlier, response["output"][0]]
    assert to_chat({"input": "And?"}, items)["messages"] == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And?"},
    ]


# --- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_names("stream_"))
def test_chat_chunks_translate_to_the_golden_events(name):
    fixture = load(name)
    events, stream = stream_events(fixture["request"], fixture["chunks"])
    golden(name, "events", [list(event) for event in events])
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(kind == data["type"] for kind, data in events)
    for _, data in events:
        if "response" in data:  # created, in_progress and the last event carry the whole Response
            assert_valid_response(data["response"])
    assert_valid_response(stream.response)


def test_the_sdk_stream_accumulator_reads_the_events():
    fixture = load("stream_tool_calls")
    events, _ = stream_events(fixture["request"], fixture["chunks"])
    client = sdk_client(sse_body(events), "text/event-stream")
    with client.responses.stream(model=MODEL, input="Weather?", tools=fixture["request"]["tools"]) as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert final.output_text == "On it."
    call = next(item for item in final.output if item.type == "function_call")
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_1", "get_weather", {"city": "Paris"})
    patch = next(item for item in final.output if item.type == "custom_tool_call")
    assert patch.input == "*** Begin Patch\n*** End Patch\n"
    assert (final.usage.input_tokens, final.usage.input_tokens_details.cached_tokens) == (40, 32)


def test_the_sdk_stream_snapshot_has_the_text_so_far():
    fixture = load("stream_text")
    events, _ = stream_events(fixture["request"], fixture["chunks"])
    client = sdk_client(sse_body(events), "text/event-stream")
    with client.responses.stream(model=MODEL, input="Hi") as stream:
        snapshots = [event.snapshot for event in stream if event.type == "response.output_text.delta"]
    assert snapshots == ["Hel", "Hello!"]


def test_a_stream_cut_by_the_output_limit_ends_incomplete():
    fixture = load("stream_length")
    events, stream = stream_events(fixture["request"], fixture["chunks"])
    kind, data = events[-1]
    assert kind == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert stream.response["output"][0]["status"] == "incomplete"


def test_usage_is_known_only_once_the_upstream_sent_it():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    stream.feed(chunk({"content": "Hi"}))
    assert stream.usage is None
    stream.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
    assert stream.usage == {"input_tokens": 5, "output_tokens": 1, "cached_tokens": None, "cache_write_tokens": None}


def test_usage_given_at_finish_is_the_responses_usage():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    stream.feed(chunk({"content": "Hi"}, "stop"))
    *_, (_, data) = stream.finish({"input_tokens": 7, "output_tokens": 1, "cached_tokens": 0})
    assert data["response"]["usage"]["total_tokens"] == 8


def test_a_stream_with_no_content_still_has_one_empty_message():
    events, stream = stream_events({}, [chunk({"role": "assistant"}, "stop")])
    assert [kind for kind, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    assert assert_valid_response(stream.response).output_text == ""


def test_a_refusal_streams_as_refusal_events():
    events, stream = stream_events({}, [chunk({"refusal": "No."}, "stop")])
    assert "response.refusal.delta" in [kind for kind, _ in events]
    assert stream.response["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_servers_that_number_every_call_zero_still_get_two_items():
    first = {"index": 0, "id": "call_a", "function": {"name": "get_weather", "arguments": "{}"}}
    second = {"index": 0, "id": "call_b", "function": {"name": "get_weather", "arguments": "{}"}}
    _, stream = stream_events({"tools": [WEATHER]}, [chunk({"tool_calls": [first]}),
                                                     chunk({"tool_calls": [second]}, "tool_calls")])
    assert [item["call_id"] for item in stream.response["output"]] == ["call_a", "call_b"]


def test_a_failed_stream_ends_with_response_failed():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    events = stream.feed(chunk({"content": "Hal"}))
    events += stream.fail("Upstream closed the connection.", "server_error")
    kind, data = events[-1]
    assert kind == "response.failed"
    assert data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "server_error", "message": "Upstream closed the connection."}
    assert_valid_response(stream.response)
    assert stream.finish() == [] and stream.feed(chunk({"content": "more"})) == []


def test_a_stream_ends_once():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    stream.feed(chunk({"content": "Hi"}, "stop"))
    assert stream.finish()[-1][0] == "response.completed"
    assert stream.finish() == [] and stream.fail("late", "server_error") == []


def test_an_error_chunk_raises_the_upstream_error():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    with pytest.raises(UpstreamStreamError) as caught:
        stream.feed({"error": {"type": "overloaded", "message": "Try later."}})
    assert (caught.value.error_type, caught.value.message) == ("overloaded", "Try later.")


def test_the_response_before_the_end_is_in_progress():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    stream.feed(chunk({"content": "Hi"}))
    assert stream.response["status"] == "in_progress"
    assert stream.response["output"][0]["content"][0]["text"] == "Hi"


def test_sent_events_do_not_change_as_the_stream_goes_on():
    stream = ChatStreamToResponses(RESP_ID, MODEL, {}, CREATED)
    added = stream.feed(chunk({"content": "Hi"}))
    stream.feed(chunk({"content": " there"}, "stop"))
    stream.finish()
    assert added[2][1]["item"]["content"] == [] and added[3][1]["part"]["text"] == ""


# --- Responses <-> Anthropic, through chat -------------------------------------------------------------


def test_a_responses_request_reaches_anthropic_through_chat():
    fixture = load("anthropic_compose_request")
    chat = to_chat(fixture["request"])
    golden("anthropic_compose_request", "anthropic",
           openai_chat_to_anthropic(chat, upstream_model="claude-sonnet-4-5", default_max_tokens=4096))


def test_an_anthropic_answer_comes_back_as_a_response():
    fixture = load("anthropic_compose_response")
    chat = anthropic_to_openai_chat(fixture["anthropic_response"], model=MODEL, created=CREATED)
    response = to_response(chat, fixture["request"])
    golden("anthropic_compose_response", "response", response)
    assert assert_valid_response(response).output_text == "Patching README now."
