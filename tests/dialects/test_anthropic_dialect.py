"""Anthropic Messages as Claude Code sends it, translated for OpenAI-compatible models, and answers back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from promptproxy.dialects.anthropic_wire import (
    OpenAIStreamToAnthropic,
    anthropic_to_openai_chat_request,
    openai_chat_to_anthropic_message,
)
from promptproxy.providers.wire_common import TranslationError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"
UPSTREAM = "Qwen/Qwen3-Coder-30B-A3B-Instruct"
WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}


def load(name: str):
    """A JSON fixture."""
    return json.loads((FIXTURES / name).read_text())


def chunks_of(name: str) -> list[dict]:
    """The chunks of a recorded OpenAI SSE body, [DONE] left out."""
    frames = (FIXTURES / name).read_text().split("\n\n")
    datas = [frame.removeprefix("data: ") for frame in frames if frame.startswith("data: ")]
    return [json.loads(data) for data in datas if data != "[DONE]"]


def to_chat(body: dict, reasoning_effort: bool = False) -> dict:
    """The chat request for an Anthropic body."""
    return anthropic_to_openai_chat_request(body, upstream_model=UPSTREAM, reasoning_effort=reasoning_effort)


def keys_in(value) -> set[str]:
    """Every object key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(keys_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(v) for v in value))
    return set()


def body_with(**fields) -> dict:
    """A minimal Anthropic request with extra fields."""
    return {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], **fields}


def tool_turns(*result_blocks) -> list[dict]:
    """An assistant tool_use turn and a user turn holding the given tool_result blocks."""
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    return [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": [call]},
            {"role": "user", "content": list(result_blocks)}]


def result(content, **extra) -> dict:
    """A tool_result block for toolu_1."""
    return {"type": "tool_result", "tool_use_id": "toolu_1", "content": content, **extra}


# --- requests ----------------------------------------------------------------------------------


def test_golden_every_claude_field():
    assert to_chat(load("anthropic_request_claude_fields.json"), True) == load("openai_request_claude_fields.json")


def test_golden_without_reasoning_effort_drops_thinking_and_nothing_else():
    expected = load("openai_request_claude_fields.json")
    del expected["reasoning_effort"]
    assert to_chat(load("anthropic_request_claude_fields.json")) == expected


def test_captured_claude_code_request_translates():
    body = load("claude_code_request.json")
    original = copy.deepcopy(body)
    out = to_chat(body, True)
    assert body == original
    assert [m["role"] for m in out["messages"]] == ["system", "user", "system", "assistant", "tool"]
    assert out["messages"][0]["content"].startswith("You are a Claude agent")  # the billing block is gone
    assert out["messages"][2]["content"].startswith("# Environment")
    assert out["messages"][4] == {"role": "tool", "tool_call_id": "toolu_cap_1", "content": "captured-tool-ran"}
    assert len(out["tools"]) == 12 and {t["type"] for t in out["tools"]} == {"function"}
    assert out["reasoning_effort"] == "high"  # output_config.effort over adaptive thinking
    assert len(out["user"]) == 64
    assert set(out) == {"model", "messages", "max_tokens", "stream", "stream_options", "user", "tools",
                        "reasoning_effort"}
    assert not keys_in(out) & {"cache_control", "defer_loading"}


def test_system_entries_stay_in_place_after_the_top_level_system():
    messages = [{"role": "user", "content": "A"}, {"role": "system", "content": [{"type": "text", "text": "S"}]},
                {"role": "assistant", "content": "B"}]
    out = to_chat(body_with(system="Top", messages=messages))
    assert out["messages"] == [{"role": "system", "content": "Top"}, {"role": "user", "content": "A"},
                               {"role": "system", "content": "S"}, {"role": "assistant", "content": "B"}]


def test_system_entry_between_tool_use_and_its_result_moves_after_the_tool_messages():
    turns = tool_turns(result("Sunny"), {"type": "text", "text": "Thanks"})
    turns.insert(2, {"role": "system", "content": "Plan mode."})
    roles = [(m["role"], m["content"]) for m in to_chat(body_with(messages=turns))["messages"][1:]]
    assert roles == [("assistant", None), ("tool", "Sunny"), ("system", "Plan mode."), ("user", "Thanks")]


def test_system_entry_with_only_output_config_is_dropped():
    messages = [{"role": "user", "content": "A"}, {"role": "system", "content": [], "output_config": {"effort": "low"}}]
    assert to_chat(body_with(messages=messages))["messages"] == [{"role": "user", "content": "A"}]


@pytest.mark.parametrize("thinking, output_config, effort", [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 4095}, None, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 16383}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, None, "high"),
    ({"type": "adaptive"}, None, "medium"),
    ({"type": "adaptive", "display": "omitted"}, {"effort": "high"}, "high"),
    ({"type": "enabled", "budget_tokens": 32000}, {"effort": "low"}, "low"),
    (None, {"effort": "medium"}, "medium"),
    (None, {"effort": "xhigh"}, "high"),
    (None, {"effort": "max"}, "high"),
    ({"type": "disabled"}, {"effort": "high"}, None),
    (None, None, None),
])
def test_thinking_becomes_reasoning_effort_when_the_upstream_takes_it(thinking, output_config, effort):
    fields = {k: v for k, v in (("thinking", thinking), ("output_config", output_config)) if v is not None}
    assert to_chat(body_with(**fields), True).get("reasoning_effort") == effort
    assert "reasoning_effort" not in to_chat(body_with(**fields))


def test_output_config_format_becomes_a_json_schema_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "schema": schema}
    expected = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert to_chat(body_with(output_config={"format": fmt}))["response_format"] == expected
    assert to_chat(body_with(output_format=fmt))["response_format"] == expected  # the earlier beta field


def test_stop_sequences_keep_the_first_four():
    assert to_chat(body_with(stop_sequences=["a", "b", "c", "d", "e"]))["stop"] == ["a", "b", "c", "d"]


def test_short_user_id_is_kept_and_a_long_one_becomes_a_stable_hash():
    assert to_chat(body_with(metadata={"user_id": "alice"}))["user"] == "alice"
    long_id = json.dumps({"device_id": "6ce1" * 16, "session_id": "528d0327"})
    first = to_chat(body_with(metadata={"user_id": long_id}))["user"]
    assert len(first) == 64 and long_id not in first
    assert to_chat(body_with(metadata={"user_id": long_id}))["user"] == first
    assert "user" not in to_chat(body_with(metadata={"user_id": 7}))


def test_fields_chat_has_no_room_for_are_dropped():
    fields = {"top_k": 5, "context_management": {"edits": []}, "container": "c", "service_tier": "auto",
              "cache_control": {"type": "ephemeral"}, "speed": "fast", "inference_geo": "us"}
    assert to_chat(body_with(**fields)) == to_chat(body_with())


def test_disable_parallel_tool_use_sets_parallel_tool_calls_false():
    out = to_chat(body_with(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert (out["tool_choice"], out["parallel_tool_calls"]) == ("required", False)


def test_deferred_and_cached_tools_are_sent_in_full():
    tool = {**WEATHER, "defer_loading": True, "cache_control": {"type": "ephemeral"}, "strict": True}
    assert to_chat(body_with(tools=[tool]))["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}]


@pytest.mark.parametrize("block, content", [
    (result("Sunny"), "Sunny"),
    (result([{"type": "text", "text": "Sunny"}, {"type": "text", "text": "20C"}]), "Sunny\n20C"),
    (result("No such city", is_error=True), "Error: No such city"),
    (result(None), ""),
    (result([{"type": "tool_reference", "tool_name": "WebFetch"}]), "Tool available: WebFetch"),
    (result([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Doc"}}]), "Doc"),
])
def test_tool_results_become_tool_messages(block, content):
    messages = to_chat(body_with(messages=tool_turns(block)))["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "toolu_1", "content": content}


def test_images_in_tool_results_follow_in_a_user_message():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    messages = to_chat(body_with(messages=tool_turns(result([image]), {"type": "text", "text": "Look"})))["messages"]
    assert messages[-2] == {"role": "tool", "tool_call_id": "toolu_1",
                            "content": "[The images this tool returned follow in the next user message.]"}
    assert messages[-1] == {"role": "user", "content": [
        {"type": "text", "text": "Images returned by tool call toolu_1:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "Look"}]}


def test_document_with_content_source_becomes_parts():
    document = {"type": "document", "source": {"type": "content", "content": [
        {"type": "text", "text": "Page one"}, {"type": "text", "text": "Page two"}]}}
    out = to_chat(body_with(messages=[{"role": "user", "content": [document]}]))
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Page one"},
                                                            {"type": "text", "text": "Page two"}]}]


@pytest.mark.parametrize("kind", ["web_search_20250305", "bash_20250124", "text_editor_20250728",
                                  "code_execution_20250825"])
def test_server_tools_are_refused_naming_the_type(kind):
    with pytest.raises(TranslationError) as info:
        to_chat(body_with(tools=[WEATHER, {"type": kind, "name": "x"}]))
    assert info.value.param == "tools[1].type"
    assert kind in info.value.message


@pytest.mark.parametrize("fields, param", [
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]},
     "messages[0].content[0].source.type"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "url", "url": "https://example.com/a.pdf"}}]}]}, "messages[0].content[0].source.type"),
    ({"messages": tool_turns(result([{"type": "document", "source": {"type": "file", "file_id": "f"}}]))},
     "messages[2].content[0].content[0].source.type"),
    ({"messages": [{"role": "system", "content": [{"type": "image"}]}]}, "messages[0].content[0].type"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}, "mcp_servers"),
    ({"output_config": {"format": {"type": "xml"}}}, "output_config.format"),
    ({"stop_sequences": "END"}, "stop_sequences"),
])
def test_untranslatable_fields_raise_naming_the_field(fields, param):
    with pytest.raises(TranslationError) as info:
        to_chat(body_with(**fields))
    assert info.value.param == param


# --- answers -----------------------------------------------------------------------------------


def test_golden_reasoning_answer_becomes_thinking_text_and_tool_use():
    resp = openai_chat_to_anthropic_message(load("openai_chat_response_reasoning.json"), model="qwen3")
    assert resp == load("anthropic_message_response_reasoning.json")


def test_reasoning_field_of_other_servers_is_read_too():
    resp = load("openai_chat_response_reasoning.json")
    message = resp["choices"][0]["message"]
    message["reasoning"] = message.pop("reasoning_content")
    content = openai_chat_to_anthropic_message(resp, model="qwen3")["content"]
    assert content[0] == {"type": "thinking", "thinking": message["reasoning"], "signature": ""}


def run_stream(chunks: list[dict]) -> list[tuple[str, dict]]:
    """Every event a translator emits for the chunks, finish() included."""
    stream = OpenAIStreamToAnthropic("qwen3", "msg_r1")
    return [event for chunk in chunks for event in stream.feed(chunk)] + stream.finish()


def test_golden_stream_with_reasoning_text_tool_call_then_text():
    events = [list(event) for event in run_stream(chunks_of("openai_stream_reasoning_tools.sse"))]
    assert events == load("anthropic_stream_reasoning_events.json")


def test_stream_assembles_in_the_sdk_accumulator():
    snapshot, bufs = None, {}
    for _, data in run_stream(chunks_of("openai_stream_reasoning_tools.sse")):
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    assert [block.type for block in snapshot.content] == ["thinking", "text", "tool_use", "text"]
    assert snapshot.content[0].thinking == "Need the listing."
    assert snapshot.content[2].input == {"command": "ls"}
    assert snapshot.stop_reason == "tool_use"
    assert (snapshot.usage.input_tokens, snapshot.usage.cache_read_input_tokens) == (176, 1024)
    assert snapshot.usage.output_tokens == 40
