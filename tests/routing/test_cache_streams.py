"""Streams fill the exact response cache: a clean stream is stored whole, so later calls hit, streamed or not."""
from __future__ import annotations

import json

import anthropic
import openai
import pytest
import redis
import requests
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.cache.assemble import ChatAssembler, MessageAssembler
from promptproxy.cache.response_cache import ResponseCache
from promptproxy.dialects import anthropic as anthropic_dialect
from promptproxy.dialects import openai as openai_dialect
from promptproxy.extensions import db
from promptproxy.models import ResponseCacheEntry

from ..conftest import REDIS_URL, rows_when
from ..upstream import chunk
from .test_cache import set_cache

MESSAGES = [{"role": "user", "content": "hi"}]
ASKED = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": MESSAGES}


@pytest.fixture
def cached(app, seeded):
    """gpt-4o-mini with a 60 s cache, per user."""
    set_cache(app, ttl=60)
    return seeded


def entries(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(ResponseCacheEntry))


def openai_sdk(live, key):
    return openai.OpenAI(base_url=live + "/v1", api_key=key, max_retries=0)


def stream_text(sdk, **extra) -> tuple[str, str]:
    """Stream a chat completion with the SDK: (x-cache, text)."""
    with sdk.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                             **extra) as resp:
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
        return resp.headers["x-cache"], text


def test_a_clean_openai_stream_is_stored_and_a_whole_call_hits(live, cached, upstream, app):
    sdk = openai_sdk(live, cached.key)
    assert stream_text(sdk) == ("MISS", "Bonjour!")
    rows_when(app, 1)  # the entry is written before the row
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    whole = raw.parse()
    assert raw.headers["x-cache"] == "HIT" and len(upstream.requests) == 1
    assert whole.object == "chat.completion" and whole.choices[0].message.content == "Bonjour!"
    assert whole.choices[0].finish_reason == "stop" and whole.choices[0].message.role == "assistant"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (11, 3)  # the usage the stream was billed
    miss, hit = rows_when(app, 2)
    assert (miss.stream, miss.cache_hit, hit.cache_hit) == (True, False, True)
    assert hit.cost == 0 and hit.cost_saved == pytest.approx(miss.cost) and miss.cost > 0


def test_a_clean_openai_stream_is_replayed_to_the_next_stream(live, cached, upstream, app):
    sdk = openai_sdk(live, cached.key)
    stream_text(sdk)
    rows_when(app, 1)
    assert stream_text(sdk) == ("HIT", "Bonjour!") and len(upstream.requests) == 1


def test_a_clean_stream_in_the_anthropic_dialect_hits_whole_and_streamed(live, cached, upstream, app):
    sdk = anthropic.Anthropic(base_url=live, api_key=cached.key, max_retries=0)
    with sdk.messages.stream(**ASKED) as stream:
        streamed = stream.get_final_message()
    rows_when(app, 1)
    raw = sdk.messages.with_raw_response.create(**ASKED)
    whole = raw.parse()
    assert raw.headers["x-cache"] == "HIT" and len(upstream.requests) == 1
    assert whole.type == "message" and whole.content[0].text == streamed.content[0].text == "Bonjour!"
    assert whole.stop_reason == streamed.stop_reason == "end_turn" and whole.usage.output_tokens == 3
    with sdk.messages.stream(**ASKED) as stream:
        again = stream.get_final_message()
    assert again.content[0].text == "Bonjour!" and len(upstream.requests) == 1


@pytest.fixture
def claude_model(app, claude, seeded):
    """`claude`: a model on a native Anthropic upstream, cached for 60 s."""
    with app.app_context():
        provider = manage.create_provider("t", "anthropic", "anthropic", claude.url, api_key="sk-ant-test")
        manage.create_model("t", "claude", provider, "claude-opus-4-6", input_price=1.0, output_price=2.0,
                            cache_ttl=60)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    return seeded


def test_a_native_anthropic_stream_with_a_tool_call_is_stored_as_the_message(live, claude_model, claude, app):
    sdk = anthropic.Anthropic(base_url=live, api_key=claude_model.key, max_retries=0)
    asked = {**ASKED, "model": "claude", "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}
    with sdk.messages.stream(**asked) as stream:
        streamed = stream.get_final_message()
    rows_when(app, 1)
    raw = sdk.messages.with_raw_response.create(**asked)
    whole = raw.parse()
    assert raw.headers["x-cache"] == "HIT" and len(claude.requests) == 1
    assert whole.model_dump() == streamed.model_dump()  # the same message, block for block
    assert whole.content[1].input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert whole.stop_reason == "tool_use" and whole.usage.output_tokens == streamed.usage.output_tokens > 0
    with sdk.messages.stream(**asked) as stream:
        assert stream.get_final_message().content[1].input == whole.content[1].input
    assert len(claude.requests) == 1


def sse(*chunks) -> list[str]:
    return [f"data: {json.dumps(c)}\n\n" if isinstance(c, dict) else c for c in chunks]


FINISHED = [chunk("m", "", role=True), chunk("m", "Bon"), chunk("m", finish="stop")]


@pytest.mark.parametrize("events", [
    pytest.param([*FINISHED, {"error": {"message": "overloaded", "type": "server_error"}}], id="in-band error"),
    pytest.param([*FINISHED, None], id="upstream cut before [DONE]"),
    pytest.param([*FINISHED[:2], "data: [DONE]\n\n"], id="no finish_reason"),
])
def test_a_stream_that_does_not_end_cleanly_is_not_stored(live, cached, upstream, app, events):
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"}, iter(sse(*events)))
    app.extensions["promptproxy"].retry = app.extensions["promptproxy"].retry.__class__(max_retries=0)
    resp = requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": True},
                         headers={"Authorization": f"Bearer {cached.key}"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["x-cache"] == "MISS"
    rows_when(app, 1)
    assert entries(app) == 0
    upstream.handler = upstream.default
    whole = requests.post(live + "/v1/chat/completions", json=ASKED, headers={"Authorization": f"Bearer {cached.key}"},
                          timeout=10)
    assert whole.headers["x-cache"] == "MISS" and whole.json()["choices"][0]["message"]["content"] == "Bonjour!"


def test_a_stream_the_client_cut_after_its_last_chunk_is_not_stored(live, cached, upstream, app):
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                    iter([*sse(*FINISHED), 1.0, "data: [DONE]\n\n"]))
    with requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": True}, stream=True,
                       headers={"Authorization": f"Bearer {cached.key}"}, timeout=10) as resp:
        for line in resp.iter_lines():
            if b'"finish_reason": "stop"' in line or b'"finish_reason":"stop"' in line:
                break  # the whole answer came; the client hangs up before [DONE]
    (row,) = rows_when(app, 1)
    assert row.status == 499 and entries(app) == 0


def test_no_store_keeps_a_stream_out_of_the_cache(live, cached, upstream, app):
    with requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": True}, timeout=10,
                       headers={"Authorization": f"Bearer {cached.key}", "Cache-Control": "no-store"}) as resp:
        assert b"[DONE]" in resp.content
    rows_when(app, 1)
    assert entries(app) == 0


ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
    "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 12},
    "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x", "n": [1, 2]}}],
}
OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls",
                 "message": {"role": "assistant", "content": None, "tool_calls": [
                     {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
}


@pytest.mark.parametrize(("dialect", "answer", "assembler"), [("openai", OPENAI_ANSWER, ChatAssembler),
                                                               ("anthropic", ANTHROPIC_ANSWER, MessageAssembler)])
def test_a_replayed_answer_assembles_back_into_itself(dialect, answer, assembler):
    folded = assembler(10_000)
    replayed = openai_dialect.stream_chunks(answer, include_usage=True) if dialect == "openai" else \
        anthropic_dialect.stream_events(answer)
    for event in replayed:
        folded.feed(event)
    assert folded.answer(None) == answer


def test_with_redis_a_clean_stream_is_stored_there(live, cached, upstream, app, redis_prefix):
    """redis_prefix (tests/routing/conftest.py) skips without PROMPTPROXY_TEST_REDIS_URL."""
    gw = app.extensions["promptproxy"]
    gw.cache = ResponseCache({"REDIS_URL": REDIS_URL, "REDIS_PREFIX": redis_prefix})
    sdk = openai_sdk(live, cached.key)
    assert stream_text(sdk) == ("MISS", "Bonjour!")
    rows_when(app, 1)
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-cache"] == "HIT" and raw.parse().choices[0].message.content == "Bonjour!"
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(match=f"{redis_prefix}:cache:*"))
    assert len(keys) == 1 and 0 < store.ttl(keys[0]) <= 60 and entries(app) == 0
    store.close()
