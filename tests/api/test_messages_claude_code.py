"""Claude Code's request (captured from 2.1.332) through the official SDK to an OpenAI-compatible model."""
from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest

from ..upstream import Upstream
from .conftest import settled_rows

CAPTURED = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic" / "claude_code_request.json"
BETA_QUERY = {"beta": "true"}  # Claude Code posts to /v1/messages?beta=true; this SDK leaves the query off
BETAS = ["claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27"]


@pytest.fixture
def sdk(live, seeded):
    """The SDK as Claude Code sets it up: bearer token, base URL without /v1, no retries."""
    return anthropic.Anthropic(base_url=live, auth_token=seeded.key, max_retries=0)


def claude_code_body(model: str, **overrides) -> dict:
    """The captured Claude Code body (system entries in messages, adaptive thinking, 12 tools) for `model`."""
    body = json.loads(CAPTURED.read_text())
    body.pop("stream")
    return {**body, "model": model, "betas": BETAS, "extra_query": BETA_QUERY, **overrides}


def test_claude_code_stream_on_openai_model_with_stored_prompt(sdk, upstream, app, seeded):
    with sdk.beta.messages.stream(**claude_code_body("gpt-4o-mini:translator")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert stream.response.url.query == b"beta=true"  # the path Claude Code posts to
    assert (text, final.stop_reason) == ("Bonjour!", "end_turn")
    sent = upstream.last["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Translate the user's words into French."}
    assert [m["role"] for m in sent["messages"]] == ["system", "system", "user", "system", "assistant", "tool"]
    assert sent["messages"][1]["content"].startswith("You are a Claude agent")
    assert len(sent["tools"]) == 12
    # No provider says it takes reasoning_effort yet, so thinking and effort are dropped, not refused.
    assert not {"thinking", "reasoning_effort", "context_management", "output_config", "metadata"} & set(sent)
    [row] = settled_rows(app)
    assert (row.status, row.stream, row.inbound_format, row.prompt, row.user_id) == (
        200, True, "anthropic", "translator", seeded.user_id)


def test_claude_code_whole_answer_with_reasoning_from_the_upstream(sdk, upstream):
    def answer(req):
        message = {"role": "assistant", "reasoning_content": "Say hi back.", "content": "Salut !"}
        return 200, {"Content-Type": "application/json"}, json.dumps({
            "id": "chatcmpl-r", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})

    upstream.handler = answer
    msg = sdk.beta.messages.create(**claude_code_body("gpt-4o-mini", max_tokens=4096))
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in msg.content] == [
        ("thinking", "Say hi back."), ("text", "Salut !")]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (20, 5)


def test_claude_code_stream_with_reasoning_and_a_tool_call(sdk, upstream):
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\""}}
    chunks = [chunk({"role": "assistant", "reasoning_content": "Run it."}), chunk({"content": "Running."}),
              chunk({"tool_calls": [call]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": \"echo hi\"}"}}]}, "tool_calls")]
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                    Upstream.sse(chunks, req["body"], "m"))
    with sdk.beta.messages.stream(**claude_code_body("gpt-4o-mini")) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    assert (final.content[0].thinking, final.content[0].signature) == ("Run it.", "")
    assert (final.content[2].name, final.content[2].input) == ("Bash", {"command": "echo hi"})
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 3)


def test_server_tool_on_openai_model_is_a_400_naming_it(sdk, upstream):
    body = claude_code_body("gpt-4o-mini", max_tokens=4096)
    body["tools"].append({"type": "web_search_20250305", "name": "web_search", "max_uses": 5})
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk.beta.messages.create(**body)
    error = info.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "web_search_20250305" in error["message"]
    assert upstream.requests == []
