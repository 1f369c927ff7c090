"""Golden and behaviour tests for the OpenAI <-> Anthropic wire translation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from promptproxy.dialects.anthropic_wire import (
    OpenAIStreamToAnthropic,
    anthropic_to_openai_chat_request,
    openai_chat_to_anthropic_message,
    openai_error_to_anthropic,
    openai_usage,
)
from promptproxy.providers.anthropic_stream import AnthropicStreamToOpenAI
from promptproxy.providers.anthropic_wire import (
    anthropic_error_to_openai,
    anthropic_to_openai_chat,
    anthropic_usage,
    openai_chat_to_anthropic,
)
from promptproxy.providers.wire_common import (
    TranslationError,
    UpstreamStreamError,
    anthropic_error_type_for_status,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"
CREATED = 1_700_000_000
UPSTREAM = "claude-sonnet-4-5-20250929"


def load(name: str):
    """A JSON fixture."""
    return json.loads((FIXTURES / name).read_text())


def sse_events(name: str) -> list[tuple[str | None, dict]]:
    """(event, data) pairs of a recorded SSE body; `data: [DONE]` is left out."""
    events = []
    for frame in (FIXTURES / name).read_text().split("\n\n"):
        event, data = None, []
        for line in frame.splitlines():
            if line.startswith("event:"):
                event = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        if data and data != ["[DONE]"]:
            events.append((event, json.loads("\n".join(data))))
    return events


def to_anthropic(body: dict, default_max_tokens: int = 4096) -> dict:
    """Direction A request translation with the test's upstream model."""
    return openai_chat_to_anthropic(body, upstream_model=UPSTREAM, default_max_tokens=default_max_tokens)


def user(content) -> dict:
    """An OpenAI user message."""
    return {"role": "user", "content": content}


def anthropic_reply(**overrides) -> dict:
    """A minimal Anthropic message response."""
    resp = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": UPSTREAM,
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 2},
    }
    return {**resp, **overrides}


def openai_reply(**message_overrides) -> dict:
    """A minimal OpenAI chat.completion with one choice."""
    finish_reason = message_overrides.pop("finish_reason", "stop")
    message = {"role": "assistant", "content": "Hi", "refusal": None, **message_overrides}
    return {
        "id": "chatcmpl-xyz",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def openai_chunk(
    delta: dict | None = None, finish_reason: str | None = None, usage: dict | None = None
) -> dict:
    """An OpenAI chat.completion.chunk; no delta means a usage-only chunk with empty choices."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": usage,
    }


def run_openai_stream(chunks: list[dict]) -> list[tuple[str, dict]]:
    """Every Anthropic event a translator emits for the chunks, finish() included."""
    stream = OpenAIStreamToAnthropic("gpt-4o-mini", "msg_0b5c1d2e")
    events = [event for chunk in chunks for event in stream.feed(chunk)]
    return events + stream.finish()


# --- Direction A: requests ---------------------------------------------------------------------


def test_request_golden_basic_multi_turn():
    assert to_anthropic(load("openai_request_basic.json")) == load("anthropic_request_basic.json")


def test_request_golden_tools_and_tool_results():
    assert to_anthropic(load("openai_request_tools.json")) == load("anthropic_request_tools.json")


def test_request_golden_images():
    assert to_anthropic(load("openai_request_images.json")) == load("anthropic_request_images.json")


def test_request_uses_the_upstream_model_name():
    assert to_anthropic({"model": "public-slug", "messages": [user("Hi")]})["model"] == UPSTREAM


def test_system_messages_anywhere_become_system_blocks_in_order():
    body = {
        "messages": [
            {"role": "system", "content": "Stored prompt"},
            {"role": "system", "content": "Client prompt"},
            user("Hi"),
            {"role": "developer", "content": "Late instruction"},
        ]
    }
    assert to_anthropic(body)["system"] == [
        {"type": "text", "text": "Stored prompt"},
        {"type": "text", "text": "Client prompt"},
        {"type": "text", "text": "Late instruction"},
    ]


def test_request_without_system_messages_has_no_system_field():
    assert "system" not in to_anthropic({"messages": [user("Hi")]})


def test_consecutive_assistant_messages_are_merged():
    body = {
        "messages": [user("Hi"), {"role": "assistant", "content": "A"}, {"role": "assistant", "content": "B"}]
    }
    assert to_anthropic(body)["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
    }


def test_tool_results_go_before_text_in_a_merged_user_turn():
    body = {
        "messages": [
            user("Weather?"),
            {"role": "assistant", "tool_calls": [{"id": "t1", "function": {"name": "w", "arguments": "{}"}}]},
            user("Be quick."),
            {"role": "tool", "tool_call_id": "t1", "content": "Sunny"},
        ]
    }
    assert [block["type"] for block in to_anthropic(body)["messages"][2]["content"]] == [
        "tool_result",
        "text",
    ]


def test_empty_user_message_is_dropped():
    body = {"messages": [user("Hi"), user(""), {"role": "assistant", "content": "Hello"}]}
    assert to_anthropic(body)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
    ]


def test_text_part_cache_control_is_kept():
    part = {"type": "text", "text": "Long document", "cache_control": {"type": "ephemeral"}}
    content = to_anthropic({"messages": [user([part])]})["messages"][0]["content"]
    assert content == [{"type": "text", "text": "Long document", "cache_control": {"type": "ephemeral"}}]


def test_tool_call_with_empty_arguments_has_empty_input():
    call = {"id": "t1", "type": "function", "function": {"name": "now", "arguments": ""}}
    body = {"messages": [user("Time?"), {"role": "assistant", "content": None, "tool_calls": [call]}]}
    assert to_anthropic(body)["messages"][1]["content"] == [
        {"type": "tool_use", "id": "t1", "name": "now", "input": {}}
    ]


def test_temperature_above_one_is_clamped_to_one():
    assert to_anthropic({"messages": [user("Hi")], "temperature": 1.8})["temperature"] == 1


def test_temperature_zero_is_kept():
    assert to_anthropic({"messages": [user("Hi")], "temperature": 0})["temperature"] == 0


def test_max_completion_tokens_wins_over_max_tokens():
    body = {"messages": [user("Hi")], "max_tokens": 100, "max_completion_tokens": 200}
    assert to_anthropic(body)["max_tokens"] == 200


def test_max_tokens_is_copied():
    assert to_anthropic({"messages": [user("Hi")], "max_tokens": 100})["max_tokens"] == 100


def test_default_max_tokens_when_absent():
    assert to_anthropic({"messages": [user("Hi")]}, default_max_tokens=8192)["max_tokens"] == 8192


def test_stop_list_becomes_stop_sequences():
    assert to_anthropic({"messages": [user("Hi")], "stop": ["END", "STOP"]})["stop_sequences"] == [
        "END",
        "STOP",
    ]


@pytest.mark.parametrize(
    "field, value",
    [
        ("n", 1),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"1": 2}),
        ("seed", 3),
        ("response_format", {"type": "json_object"}),
        ("stream_options", {"include_usage": True}),
        ("logprobs", True),
    ],
)
def test_fields_without_anthropic_equivalent_are_dropped(field, value):
    assert to_anthropic({"messages": [user("Hi")], field: value}) == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4096,
    }


@pytest.mark.parametrize(
    "tool_choice, expected",
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_mapping(tool_choice, expected):
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    body = {"messages": [user("Hi")], "tools": tools, "tool_choice": tool_choice}
    assert to_anthropic(body)["tool_choice"] == expected


def test_parallel_tool_calls_false_alone_disables_parallel_use_on_auto():
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    body = {"messages": [user("Hi")], "tools": tools, "parallel_tool_calls": False}
    assert to_anthropic(body)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_parallel_tool_calls_false_is_not_added_to_tool_choice_none():
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    body = {"messages": [user("Hi")], "tools": tools, "tool_choice": "none", "parallel_tool_calls": False}
    assert to_anthropic(body)["tool_choice"] == {"type": "none"}


def test_tool_choice_without_tools_is_dropped():
    assert "tool_choice" not in to_anthropic({"messages": [user("Hi")], "tool_choice": "required"})


def test_user_becomes_metadata_user_id():
    assert to_anthropic({"messages": [user("Hi")], "user": "u-1"})["metadata"] == {"user_id": "u-1"}


def test_stream_flag_is_copied():
    assert to_anthropic({"messages": [user("Hi")], "stream": True})["stream"] is True


BAD_ARGS = {"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{not json"}}
LIST_ARGS = {"id": "t1", "type": "function", "function": {"name": "w", "arguments": "[1, 2]"}}


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [user("Hi")], "n": 2}, "n"),
        ({"messages": "Hi"}, "messages"),
        (
            {"messages": [user("Hi"), {"role": "assistant", "tool_calls": [BAD_ARGS]}]},
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [user("Hi"), {"role": "assistant", "tool_calls": [LIST_ARGS]}]},
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [user("Hi"), {"role": "assistant", "tool_calls": [{"function": {"name": "w"}}]}]},
            "messages[1].tool_calls[0].id",
        ),
        ({"messages": [{"role": "tool", "content": "Sunny"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "function", "name": "w", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])]},
            "messages[0].content[0].type",
        ),
        (
            {"messages": [user([{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}])]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [user([{"type": "image_url", "image_url": {"url": "ftp://host/cat.png"}}])]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"messages": [user("Hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        (
            {"messages": [user("Hi")], "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
        ),
        (
            {
                "messages": [user("Hi")],
                "tools": [{"type": "function", "function": {"name": "w"}}],
                "tool_choice": "sometimes",
            },
            "tool_choice",
        ),
    ],
)
def test_untranslatable_requests_raise_translation_error_naming_the_param(body, param):
    with pytest.raises(TranslationError) as info:
        to_anthropic(body)
    assert info.value.param == param


def test_request_translation_leaves_the_client_body_untouched():
    body = load("openai_request_tools.json")
    original = copy.deepcopy(body)
    to_anthropic(body)
    assert body == original


def test_translation_error_is_a_value_error():
    assert issubclass(TranslationError, ValueError)


# --- Direction A: responses --------------------------------------------------------------------


def test_response_golden_text():
    resp = anthropic_to_openai_chat(
        load("anthropic_response_text.json"), model="claude-sonnet", created=CREATED
    )
    assert resp == load("openai_response_text.json")


def test_response_golden_tool_use_with_cache_usage():
    resp = load("anthropic_response_tool_use.json")
    assert anthropic_to_openai_chat(resp, model="claude-sonnet", created=CREATED) == load(
        "openai_response_tool_use.json"
    )


def test_response_validates_as_openai_chat_completion():
    from openai.types.chat import ChatCompletion

    resp = anthropic_to_openai_chat(load("anthropic_response_tool_use.json"), model="claude-sonnet")
    parsed = ChatCompletion.model_validate(resp)
    assert parsed.choices[0].message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize(
    "stop_reason, finish_reason",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("some_future_reason", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason, finish_reason):
    resp = anthropic_to_openai_chat(anthropic_reply(stop_reason=stop_reason), model="m")
    assert resp["choices"][0]["finish_reason"] == finish_reason


def test_tool_use_only_response_has_null_content():
    block = {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"a": 1}}
    resp = anthropic_to_openai_chat(anthropic_reply(content=[block], stop_reason="tool_use"), model="m")
    assert resp["choices"][0]["message"]["content"] is None


def test_text_blocks_are_joined():
    blocks = [
        {"type": "text", "text": "Hello, "},
        {"type": "thinking", "thinking": "..."},
        {"type": "text", "text": "you"},
    ]
    resp = anthropic_to_openai_chat(anthropic_reply(content=blocks), model="m")
    assert resp["choices"][0]["message"]["content"] == "Hello, you"


def test_response_uses_the_public_model_name():
    assert anthropic_to_openai_chat(anthropic_reply(), model="claude-sonnet")["model"] == "claude-sonnet"


def test_anthropic_usage_counts_cache_tokens_into_input():
    usage = {
        "input_tokens": 50,
        "cache_read_input_tokens": 1800,
        "cache_creation_input_tokens": 248,
        "output_tokens": 90,
    }
    assert anthropic_usage(usage) == {
        "input_tokens": 2098,
        "output_tokens": 90,
        "cached_tokens": 1800,
        "cache_write_tokens": 248,
    }


def test_anthropic_usage_of_nothing_is_unknown():
    assert anthropic_usage(None) == {
        "input_tokens": None,
        "output_tokens": None,
        "cached_tokens": None,
        "cache_write_tokens": None,
    }


# --- Direction A: streaming --------------------------------------------------------------------


def feed_all(stream: AnthropicStreamToOpenAI, name: str) -> list[dict]:
    """Every chunk the translator emits for a recorded Anthropic SSE body."""
    return [chunk for event, data in sse_events(name) for chunk in stream.feed(event, data)]


def test_stream_golden_text_with_usage():
    stream = AnthropicStreamToOpenAI("claude-opus", include_usage=True, created=CREATED)
    assert feed_all(stream, "anthropic_stream_text.sse") == load("openai_stream_text.json")


def test_stream_golden_tool_use():
    stream = AnthropicStreamToOpenAI("claude-opus", created=CREATED)
    assert feed_all(stream, "anthropic_stream_tool_use.sse") == load("openai_stream_tool_use.json")


def test_stream_chunks_assemble_into_openai_completion():
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state = ChatCompletionStreamState()
    for chunk in feed_all(AnthropicStreamToOpenAI("claude-opus"), "anthropic_stream_tool_use.sse"):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    call = state.get_final_completion().choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}


def test_stream_usage_is_accumulated_from_start_and_delta():
    stream = AnthropicStreamToOpenAI("claude-opus")
    feed_all(stream, "anthropic_stream_tool_use.sse")
    assert stream.usage == {
        "input_tokens": 472,
        "output_tokens": 89,
        "cached_tokens": None,
        "cache_write_tokens": None,
    }


def test_stream_max_tokens_stop_reason_finishes_with_length():
    stream = AnthropicStreamToOpenAI("claude-opus")
    delta = {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 5}}
    assert stream.feed("message_delta", delta)[0]["choices"][0]["finish_reason"] == "length"


def test_stream_message_stop_without_include_usage_emits_nothing():
    stream = AnthropicStreamToOpenAI("claude-opus")
    assert stream.feed("message_stop", {"type": "message_stop"}) == []


def test_stream_chunk_id_uses_prefix_and_message_id():
    stream = AnthropicStreamToOpenAI("claude-opus", chunk_id_prefix="pp-")
    start = {
        "type": "message_start",
        "message": {"id": "msg_9", "usage": {"input_tokens": 1, "output_tokens": 1}},
    }
    assert stream.feed("message_start", start)[0]["id"] == "pp-msg_9"


def test_stream_ignores_unknown_events():
    stream = AnthropicStreamToOpenAI("claude-opus")
    assert stream.feed("future_event", {"type": "future_event"}) == []


def test_stream_ignores_thinking_deltas():
    stream = AnthropicStreamToOpenAI("claude-opus")
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Hmm"},
    }
    assert stream.feed("content_block_delta", delta) == []


def test_stream_error_event_raises_upstream_stream_error():
    stream = AnthropicStreamToOpenAI("claude-opus")
    with pytest.raises(UpstreamStreamError) as info:
        feed_all(stream, "anthropic_stream_error.sse")
    assert (info.value.error_type, info.value.message) == ("overloaded_error", "Overloaded")


# --- Direction B: requests ---------------------------------------------------------------------


def to_openai(body: dict) -> dict:
    """Direction B request translation with the test's upstream model."""
    return anthropic_to_openai_chat_request(body, upstream_model="meta-llama/Meta-Llama-3-8B-Instruct")


def anthropic_body(**fields) -> dict:
    """A minimal Anthropic Messages request."""
    return {"model": "llama3-8b", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], **fields}


def test_messages_request_golden():
    assert to_openai(load("anthropic_messages_request.json")) == load("openai_chat_request.json")


def test_anthropic_request_translation_leaves_the_client_body_untouched():
    body = load("anthropic_messages_request.json")
    original = copy.deepcopy(body)
    to_openai(body)
    assert body == original


def test_system_string_becomes_first_system_message():
    assert to_openai(anthropic_body(system="Be brief."))["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }


def test_request_without_stream_has_no_stream_options():
    assert "stream_options" not in to_openai(anthropic_body())


def test_lone_text_block_becomes_string_content():
    body = anthropic_body(messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert to_openai(body)["messages"] == [{"role": "user", "content": "Hi"}]


def test_thinking_blocks_in_history_are_dropped():
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "...", "signature": "sig"},
            {"type": "text", "text": "4"},
        ],
    }
    body = anthropic_body(messages=[{"role": "user", "content": "2+2?"}, assistant])
    assert to_openai(body)["messages"][1] == {"role": "assistant", "content": "4"}


@pytest.mark.parametrize(
    "tool_choice, expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_anthropic_tool_choice_mapping(tool_choice, expected):
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
    assert to_openai(anthropic_body(tools=tools, tool_choice=tool_choice))["tool_choice"] == expected


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"name": "w"}], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"system": [{"type": "image", "source": {}}]}, "system[0].type"),
        ({"messages": [{"role": "tool", "content": "Hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].source.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "search_result", "content": []}],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0].type",
        ),
    ],
)
def test_untranslatable_anthropic_requests_raise_translation_error_naming_the_param(fields, param):
    with pytest.raises(TranslationError) as info:
        to_openai(anthropic_body(**fields))
    assert info.value.param == param


# --- Direction B: responses --------------------------------------------------------------------


def test_message_response_golden_text():
    resp = openai_chat_to_anthropic_message(load("openai_chat_response_text.json"), model="gpt-4.1")
    assert resp == load("anthropic_message_response_text.json")


def test_message_response_golden_tool_calls_with_cached_tokens():
    resp = openai_chat_to_anthropic_message(load("openai_chat_response_tool_calls.json"), model="gpt-4o-mini")
    assert resp == load("anthropic_message_response_tool_calls.json")


def test_message_response_validates_as_anthropic_message():
    from anthropic.types import Message

    resp = openai_chat_to_anthropic_message(load("openai_chat_response_tool_calls.json"), model="gpt-4o-mini")
    assert Message.model_validate(resp).content[0].input == {"location": "Boston, MA"}


@pytest.mark.parametrize(
    "finish_reason, stop_reason",
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reason_maps_to_stop_reason(finish_reason, stop_reason):
    resp = openai_chat_to_anthropic_message(openai_reply(finish_reason=finish_reason), model="m")
    assert resp["stop_reason"] == stop_reason


def test_finish_reason_stop_with_tool_calls_is_tool_use():
    call = {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
    resp = openai_chat_to_anthropic_message(openai_reply(content=None, tool_calls=[call]), model="m")
    assert resp["stop_reason"] == "tool_use"


def test_invalid_tool_arguments_from_upstream_are_kept_raw():
    call = {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{oops"}}
    resp = openai_chat_to_anthropic_message(openai_reply(content=None, tool_calls=[call]), model="m")
    assert resp["content"][0]["input"] == {"_raw_arguments": "{oops"}


def test_refusal_text_becomes_a_text_block():
    resp = openai_chat_to_anthropic_message(
        openai_reply(content=None, refusal="I can't help with that."), model="m"
    )
    assert resp["content"] == [{"type": "text", "text": "I can't help with that."}]


def test_message_id_is_derived_from_the_openai_id():
    assert openai_chat_to_anthropic_message(openai_reply(), model="m")["id"] == "msg_xyz"


def test_openai_usage_normalizes_prompt_details():
    usage = {"prompt_tokens": 82, "completion_tokens": 44, "prompt_tokens_details": {"cached_tokens": 64}}
    assert openai_usage(usage) == {
        "input_tokens": 82,
        "output_tokens": 44,
        "cached_tokens": 64,
        "cache_write_tokens": None,
    }


# --- Direction B: streaming --------------------------------------------------------------------


def test_openai_stream_golden_text_and_parallel_tool_calls():
    chunks = [data for _, data in sse_events("openai_stream_tool_calls.sse")]
    events = [list(event) for event in run_openai_stream(chunks)]
    assert events == load("anthropic_stream_events.json")


def test_openai_stream_events_assemble_into_anthropic_message():
    from anthropic.lib.streaming._messages import accumulate_event

    snapshot, json_bufs = None, {}
    for _, data in run_openai_stream([data for _, data in sse_events("openai_stream_tool_calls.sse")]):
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    assert [block.input for block in snapshot.content[1:]] == [{"location": "Paris"}, {"location": "Tokyo"}]


def test_openai_stream_usage_comes_from_the_usage_chunk():
    stream = OpenAIStreamToAnthropic("gpt-4o-mini", "msg_1")
    for _, data in sse_events("openai_stream_tool_calls.sse"):
        stream.feed(data)
    assert stream.usage == {
        "input_tokens": 82,
        "output_tokens": 44,
        "cached_tokens": 64,
        "cache_write_tokens": None,
    }


def test_openai_stream_text_only_event_sequence():
    chunks = [openai_chunk({"role": "assistant", "content": "Hi"}), openai_chunk({}, "stop")]
    assert [name for name, _ in run_openai_stream(chunks)] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_openai_stream_without_usage_reports_zero_output_tokens():
    events = run_openai_stream([openai_chunk({"content": "Hi"}, "length")])
    assert events[-2][1]["usage"] == {"output_tokens": 0}


def test_openai_stream_length_finish_is_max_tokens():
    events = run_openai_stream([openai_chunk({"content": "Hi"}, "length")])
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_openai_stream_that_never_produced_chunks_still_finishes_properly():
    assert [name for name, _ in run_openai_stream([])] == ["message_start", "message_delta", "message_stop"]


def test_openai_stream_finish_twice_emits_nothing_more():
    stream = OpenAIStreamToAnthropic("gpt-4o-mini", "msg_1")
    stream.finish()
    assert stream.finish() == []


def test_openai_stream_tool_calls_numbered_zero_with_new_ids_open_new_blocks():
    first = {"index": 0, "id": "call_a", "function": {"name": "w", "arguments": "{}"}}
    second = {"index": 0, "id": "call_b", "function": {"name": "w", "arguments": "{}"}}
    events = run_openai_stream(
        [openai_chunk({"tool_calls": [first]}), openai_chunk({"tool_calls": [second]}, "tool_calls")]
    )
    starts = [data["content_block"]["id"] for name, data in events if name == "content_block_start"]
    assert starts == ["call_a", "call_b"]


def test_openai_stream_error_chunk_raises_upstream_stream_error():
    stream = OpenAIStreamToAnthropic("gpt-4o-mini", "msg_1")
    with pytest.raises(UpstreamStreamError) as info:
        stream.feed({"error": {"message": "model overloaded", "type": "server_error"}})
    assert (info.value.error_type, info.value.message) == ("server_error", "model overloaded")


# --- Errors ------------------------------------------------------------------------------------


def test_anthropic_529_becomes_openai_503_overloaded():
    assert anthropic_error_to_openai(529, load("anthropic_error_529.json")) == (
        503,
        load("openai_error_529.json"),
    )


@pytest.mark.parametrize(
    "status, anthropic_type, openai_type, code",
    [
        (400, "invalid_request_error", "invalid_request_error", None),
        (401, "authentication_error", "authentication_error", "invalid_api_key"),
        (402, "billing_error", "insufficient_quota", "insufficient_quota"),
        (403, "permission_error", "permission_error", None),
        (404, "not_found_error", "not_found_error", None),
        (413, "request_too_large", "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", "server_error", None),
        (504, "timeout_error", "timeout_error", "timeout"),
    ],
)
def test_anthropic_error_maps_to_openai_envelope(status, anthropic_type, openai_type, code):
    body = {"type": "error", "error": {"type": anthropic_type, "message": "Something went wrong"}}
    assert anthropic_error_to_openai(status, body) == (
        status,
        {"error": {"message": "Something went wrong", "type": openai_type, "param": None, "code": code}},
    )


def test_unreadable_anthropic_error_body_gets_a_generic_message_and_keeps_status():
    assert anthropic_error_to_openai(502, None) == (
        502,
        {
            "error": {
                "message": "Upstream returned HTTP 502.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )


@pytest.mark.parametrize(
    "status, error_type",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_type_for_status(status, error_type):
    assert anthropic_error_type_for_status(status) == error_type


def test_openai_error_becomes_anthropic_error_body():
    body = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert openai_error_to_anthropic(429, body) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached"},
    }


@pytest.mark.parametrize(
    "body, message",
    [
        ({"error": "model 'llama3' not found"}, "model 'llama3' not found"),
        ({"detail": "Not Found"}, "Not Found"),
        ({"message": "Bad things"}, "Bad things"),
        (None, "Upstream returned HTTP 404."),
    ],
)
def test_openai_error_message_is_read_from_other_server_shapes(body, message):
    assert openai_error_to_anthropic(404, body)["error"]["message"] == message
