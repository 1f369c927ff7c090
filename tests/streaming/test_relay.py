"""Streams relayed chunk by chunk through the official SDK: timing, usage, stored prompts, completions."""
from __future__ import annotations

import json
import time

from promptproxy.core.usage import count_tokens

from ..upstream import Upstream, chunk
from .conftest import events, one_row, post, tune


def chunks_with_gap(gap: float, parts=("Bon", "jour", " le", " monde", "!"), usage_null: bool = False):
    """A handler streaming `parts` with `gap` seconds between them (usage only when asked)."""
    def handler(req):
        body, model = req["body"], req["body"]["model"]
        items = [chunk(model, "", role=True)] + [chunk(model, p) for p in parts] + [chunk(model, finish="stop")]
        if usage_null:  # OpenAI sends `"usage": null` on every chunk once include_usage is on
            for item in items:
                item["usage"] = None
        return 200, {"Content-Type": "text/event-stream"}, Upstream.sse(items, body, model, gap=gap)
    return handler


def test_chunks_reach_the_sdk_as_the_upstream_sends_them(sdk, upstream):
    gap = 0.2
    upstream.handler = chunks_with_gap(gap)
    arrivals, texts = [], []
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                         stream=True)
    for item in stream:
        if item.choices and item.choices[0].delta.content:
            arrivals.append(time.perf_counter())
            texts.append(item.choices[0].delta.content)
    assert texts == ["Bon", "jour", " le", " monde", "!"]
    # Five chunks 200 ms apart: buffering would deliver them together; relaying spreads them over ~0.8 s.
    assert arrivals[-1] - arrivals[0] > 2 * gap
    assert min(b - a for a, b in zip(arrivals, arrivals[1:], strict=False)) > gap / 2


def test_usage_is_requested_and_its_chunk_and_null_fields_stripped(live, seeded, upstream, app):
    upstream.handler = chunks_with_gap(0, usage_null=True)
    resp = post(live, seeded.key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                   "stream": True})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert upstream.last["body"]["stream_options"] == {"include_usage": True}
    assert b"usage" not in resp.content
    data = events(resp.content)
    assert data[-1] == "[DONE]"
    assert all(d["model"] == "gpt-4o-mini" for d in data[:-1])
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in data[:-1]) == "Bonjour le monde!"
    row = one_row(app)
    assert (row.status, row.stream, row.input_tokens, row.output_tokens) == (200, True, 11, 3)
    assert row.usage_estimated is False
    assert row.cost is not None and row.ttft_ms is not None and row.ttft_ms <= row.latency_ms


def test_usage_passes_through_when_the_client_asks(sdk, upstream, app):
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                         stream=True, stream_options={"include_usage": True})
    items = list(stream)
    assert items[-1].choices == [] and items[-1].usage.prompt_tokens == 11
    assert items[-1].model == "gpt-4o-mini"
    assert upstream.last["body"]["stream_options"] == {"include_usage": True}
    assert one_row(app).input_tokens == 11


def test_usage_estimated_and_flagged_when_the_upstream_sends_none(sdk, upstream, app):
    tune(app, stream_usage=False)  # a server that rejects stream_options
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                         stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Bonjour!"
    assert "stream_options" not in upstream.last["body"]
    row = one_row(app)
    assert row.usage_estimated is True
    assert row.output_tokens == count_tokens("Bonjour!")
    assert row.input_tokens > 0 and row.cost is not None


def test_upstream_ignoring_include_usage_is_estimated_too(live, seeded, upstream, app):
    def handler(req):
        model = req["body"]["model"]
        return 200, {"Content-Type": "text/event-stream"}, Upstream.sse([chunk(model, "Salut")], {}, model)
    upstream.handler = handler
    resp = post(live, seeded.key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                   "stream": True})
    assert [d if d == "[DONE]" else d["choices"][0]["delta"]["content"] for d in events(resp.content)] == \
        ["Salut", "[DONE]"]
    row = one_row(app)
    assert (row.usage_estimated, row.output_tokens) == (True, count_tokens("Salut"))


def test_sdk_stream_with_a_stored_prompt(sdk, upstream, app):
    stream = sdk.chat.completions.create(model="gpt-4o-mini:translator",
                                         messages=[{"role": "user", "content": "Good morning"}], stream=True)
    items = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in items if c.choices) == "Bonjour!"
    assert {c.model for c in items} == {"gpt-4o-mini"}
    sent = upstream.last["body"]
    assert sent["model"] == "real-model-name:latest" and sent["stream"] is True
    assert sent["messages"][0] == {"role": "system", "content": "Translate the user's words into French."}
    row = one_row(app)
    assert (row.prompt, row.prompt_version, row.stream, row.status) == ("translator", 1, True, 200)


def test_completions_stream_through_the_sdk_and_the_singular_alias(sdk, live, seeded, upstream, app):
    stream = sdk.completions.create(model="text-davinci", prompt="Say hello", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "Hello"
    assert upstream.last["path"] == "/v1/completions"
    resp = post(live, seeded.key, {"model": "text-davinci", "prompt": "x", "stream": True}, path="/v1/completion")
    assert events(resp.content)[-1] == "[DONE]"
    assert b"usage" not in resp.content


def test_upstream_comments_and_crlf_framing_are_handled(live, seeded, upstream, app):
    def handler(req):
        model = req["body"]["model"]
        c1 = json.dumps(chunk(model, "A"))
        c2 = json.dumps(chunk(model, "B"))
        return 200, {"Content-Type": "text/event-stream; charset=utf-8"}, iter([
            ": ping\r\n\r\n", f"data: {c1}\r\n\r\n", ": keep-alive\n\n", f"data: {c2[:10]}", f"{c2[10:]}\n\n",
            "event: unknown\ndata: {\"choices\": []}\n\n", "data: [DONE]\n\n"])
    upstream.handler = handler
    resp = post(live, seeded.key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                   "stream": True})
    assert b": keep-alive\n\n" in resp.content
    texts = [d["choices"][0]["delta"]["content"] for d in events(resp.content) if d != "[DONE]" and d["choices"]]
    assert texts == ["A", "B"]
