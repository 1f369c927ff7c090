"""The Anthropic adapter and the /v1/messages helpers, on the documented fixtures (no I/O)."""
from __future__ import annotations

import orjson
import pytest

from promptproxy.core import prompts as P
from promptproxy.core.catalog import ProviderInfo
from promptproxy.core.errors import GatewayError
from promptproxy.core.prompts import PromptError
from promptproxy.core.sse import SSEParser
from promptproxy.dialects.anthropic import AnthropicEncoder, PassthroughEncoder
from promptproxy.providers import get_adapter
from promptproxy.providers.anthropic import base_root
from promptproxy.proxy.inject import ANTHROPIC_PARAMS, first_system_block, renamed
from tests.anthropic_upstream import FIXTURES, fixture_json

ADAPTER = get_adapter("anthropic")


def provider(**changes) -> ProviderInfo:
    """A provider as the catalog builds it."""
    fields = dict(id=1, name="a", kind="anthropic", base_url="https://api.anthropic.com", api_key="sk-ant-k",
                  headers={}, connect_timeout=5, first_byte_timeout=60, idle_timeout=90, total_timeout=600,
                  stream_usage=True, anthropic_version=None, default_max_tokens=None)
    return ProviderInfo(**{**fields, **changes})


def events(name: str):
    """The parsed SSE events of a fixture."""
    return SSEParser().feed((FIXTURES / name).read_bytes())


@pytest.mark.parametrize("base, url", [("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
                                       ("https://api.anthropic.com/v1/", "https://api.anthropic.com/v1/messages"),
                                       ("http://gw.local/anthropic", "http://gw.local/anthropic/v1/messages")])
def test_build_url_headers_and_default_max_tokens(base, url):
    req = ADAPTER.build(provider(base_url=base_root(base)), "chat",
                        {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]})
    assert req.url == url
    assert req.headers["x-api-key"] == "sk-ant-k" and req.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in req.headers
    assert orjson.loads(req.body)["max_tokens"] == 4096


def test_native_body_is_sent_as_is_with_configured_version_and_extra_headers():
    body = {"model": "claude-x", "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}], "stream": True}
    req = ADAPTER.build(provider(anthropic_version="2024-01-01", headers={"anthropic-beta": "b1"}), "messages", body)
    assert orjson.loads(req.body) == body
    assert (req.headers["anthropic-version"], req.headers["anthropic-beta"]) == ("2024-01-01", "b1")
    assert req.headers["accept"] == "text/event-stream"


def test_parse_translates_or_renames():
    data = fixture_json("anthropic_response_tool_use.json")
    out, usage = ADAPTER.parse("chat", dict(data), "claude")
    assert out["object"] == "chat.completion" and out["model"] == "claude"
    assert usage == {"input_tokens": 2098, "output_tokens": 90, "cached_tokens": 1800, "cache_write_tokens": 248}
    native, same = ADAPTER.parse("messages", dict(data), "claude")
    assert native["model"] == "claude" and native["content"] == data["content"] and same == usage
    with pytest.raises(ValueError):
        ADAPTER.parse("chat", {"error": "nope"}, "claude")


def test_chat_stream_ends_at_message_stop_with_usage():
    stream = ADAPTER.stream("chat", "claude", strip_usage=False)
    outs = [stream.feed(e) for e in events("anthropic_stream_text.sse")]
    assert [o.done for o in outs] == [False] * 7 + [True]
    chunks = [c for o in outs for c in o.chunks]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello!"
    assert chunks[-1]["usage"]["prompt_tokens"] == 25 and chunks[-1]["choices"] == []
    assert stream.usage == {"input_tokens": 25, "output_tokens": 15, "cached_tokens": 0, "cache_write_tokens": 0}


def test_stream_error_event_becomes_an_api_error():
    stream = ADAPTER.stream("chat", "claude", strip_usage=True)
    with pytest.raises(GatewayError) as info:
        for e in events("anthropic_stream_error.sse"):
            stream.feed(e)
    assert (info.value.status, info.value.type, info.value.code) == (503, "overloaded_error", "overloaded")
    assert stream.usage["input_tokens"] == 12  # known before the error, so it is still recorded


def test_native_stream_renames_model_and_tracks_usage():
    stream = ADAPTER.stream("messages", "claude", strip_usage=True)
    outs = [stream.feed(e) for e in events("anthropic_stream_tool_use.sse")]
    assert outs[0].chunks[0]["message"]["model"] == "claude"
    assert outs[-1].done and outs[-1].chunks == [{"type": "message_stop"}]
    assert stream.usage == {"input_tokens": 472, "output_tokens": 89, "cached_tokens": None,
                            "cache_write_tokens": None}


def test_error_mapping():
    assert ADAPTER.error(529, fixture_json("anthropic_error_529.json")) == ("Overloaded", "overloaded_error",
                                                                            "overloaded")
    assert ADAPTER.error(500, None) == ("", "server_error", None)


@pytest.mark.parametrize("system, mode, expected", [
    (None, "prepend", [{"type": "text", "text": "S"}]),
    ("mine", "prepend", [{"type": "text", "text": "S"}, {"type": "text", "text": "mine"}]),
    ([{"type": "text", "text": "mine", "cache_control": {"type": "ephemeral"}}], "prepend",
     [{"type": "text", "text": "S"}, {"type": "text", "text": "mine", "cache_control": {"type": "ephemeral"}}]),
    ("mine", "replace", [{"type": "text", "text": "S"}]),
    ("", "reject", [{"type": "text", "text": "S"}]),
])
def test_first_system_block(system, mode, expected):
    assert first_system_block(system, "S", mode) == expected


def test_inject_system_reject_mode_refuses_a_client_system():
    with pytest.raises(PromptError) as info:
        first_system_block("mine", "S", "reject")
    assert info.value.param == "system" and info.value.code == "system_not_allowed"


def test_stored_params_use_anthropic_names():
    body = {"max_tokens": 10, "temperature": 0.9}
    P.apply_params(body, renamed({"max_completion_tokens": {"value": 99}, "temperature": {"value": 0.1, "locked": True},
                                  "stop": {"value": "END"}, "presence_penalty": {"value": 1}}, ANTHROPIC_PARAMS))
    assert body == {"max_tokens": 10, "temperature": 0.1, "stop_sequences": ["END"]}


def test_anthropic_encoder_event_sequence_and_error():
    enc = AnthropicEncoder("m", "msg_1")
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    wire = enc.chunk(chunk) + enc.done(None)
    names = [line[7:] for line in wire.decode().split("\n") if line.startswith("event: ")]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    failed = AnthropicEncoder("m", "msg_2")
    failed.chunk(chunk)
    assert failed.error(GatewayError(504, "slow")).startswith(b"event: error\ndata: ")
    assert failed.done(None) == b""
    assert PassthroughEncoder().chunk({"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
