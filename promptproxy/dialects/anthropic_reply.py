"""OpenAI chat answers, chunks and errors -> Anthropic messages, events and error bodies."""

from __future__ import annotations

import uuid
from typing import Any

from ..providers.wire_common import (
    JSON,
    STOP_REASONS,
    TranslationError,
    anthropic_error_type_for_status,
    as_int,
    parse_arguments,
    upstream_stream_error,
)


def openai_chat_to_anthropic_message(resp: JSON, *, model: str) -> JSON:
    """An Anthropic message object for an OpenAI chat.completion."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
    reasoning = _reasoning_text(message)
    if reasoning:
        # Unsigned: a signature is Anthropic's proof the thinking is its own, which this is not.
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _plain_text(message.get("content")) or message.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _lenient_arguments(function.get("arguments")),
            }
        )
    has_tools = any(block["type"] == "tool_use" for block in content)
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), has_tools),
        "stop_sequence": None,
        "usage": _anthropic_usage_from_openai(resp.get("usage")),
    }


def openai_usage(u: JSON | None) -> JSON:
    """Normalized usage from OpenAI usage; input_tokens counts every prompt token."""
    u = u or {}
    details = u.get("prompt_tokens_details") or {}
    return {
        "input_tokens": as_int(u.get("prompt_tokens")),
        "output_tokens": as_int(u.get("completion_tokens")),
        "cached_tokens": as_int(details.get("cached_tokens")),
        "cache_write_tokens": as_int(details.get("cache_write_tokens")),
    }


def _anthropic_usage_from_openai(u: JSON | None) -> JSON:
    """Anthropic usage for OpenAI usage: input_tokens excludes cached and cache-written tokens."""
    usage = openai_usage(u)
    cached = usage["cached_tokens"] or 0
    written = usage["cache_write_tokens"] or 0
    # Anthropic counts cache reads and writes apart from input_tokens, OpenAI inside prompt_tokens.
    return {
        "input_tokens": max((usage["input_tokens"] or 0) - cached - written, 0),
        "output_tokens": usage["output_tokens"] or 0,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


class OpenAIStreamToAnthropic:
    """Turns OpenAI chat.completion.chunk dicts into Anthropic (event, data) pairs, one stream at a time."""

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self._started = False
        self._finished = False
        self._next_index = 0
        self._open: int | None = None  # index of the open content block
        self._open_kind: str | None = None  # "text" or "thinking" while such a block is open
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> content block index
        self._tool_ids: dict[int, str] = {}
        self._finish_reason: str | None = None
        self._raw_usage: JSON | None = None

    @property
    def usage(self) -> JSON:
        """Usage from the upstream's usage chunk, normalized like `openai_usage`."""
        return openai_usage(self._raw_usage)

    def feed(self, chunk: JSON) -> list[tuple[str, JSON]]:
        """The Anthropic events for one OpenAI chunk (usage-only chunks with empty choices included)."""
        if chunk.get("error"):
            raise upstream_stream_error(chunk["error"])
        events = self._start()
        if chunk.get("usage"):
            self._raw_usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # an Anthropic message has one choice
            delta = choice.get("delta") or {}
            reasoning = _reasoning_text(delta)
            if reasoning:
                events += self._append("thinking", reasoning)
            for text in (delta.get("content"), delta.get("refusal")):
                if text:
                    events += self._append("text", text)
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[tuple[str, JSON]]:
        """The closing events: the open block's stop, message_delta and message_stop."""
        if self._finished:
            return []
        self._finished = True
        events = self._start() + self._close()
        stop_reason = _stop_reason(self._finish_reason, bool(self._tool_blocks))
        delta_usage: JSON = {"output_tokens": 0}
        if self._raw_usage:
            delta_usage = _anthropic_usage_from_openai(self._raw_usage)
            # message_delta carries cumulative usage; the output count is the one Anthropic always sends.
            delta_usage = {"output_tokens": delta_usage.pop("output_tokens"), **delta_usage}
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": delta_usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self) -> list[tuple[str, JSON]]:
        if self._started:
            return []
        self._started = True
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The OpenAI stream reports usage only at its end; message_delta carries the real numbers.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _open_block(self, block: JSON) -> list[tuple[str, JSON]]:
        events = self._close()
        self._open = self._next_index
        self._next_index += 1
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._open, "content_block": block},
            )
        )
        return events

    def _close(self) -> list[tuple[str, JSON]]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _append(self, kind: str, text: str) -> list[tuple[str, JSON]]:
        """Text or thinking, in the open block of that kind or a new one (thinking blocks carry no signature)."""
        events = []
        if self._open_kind != kind:
            block = {"type": kind, kind: ""}
            if kind == "thinking":
                block["signature"] = ""
            events = self._open_block(block)
            self._open_kind = kind
        delta = {"type": f"{kind}_delta", kind: text}
        return [
            *events,
            ("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}),
        ]

    def _tool_call(self, call: JSON) -> list[tuple[str, JSON]]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        call_id = call.get("id")
        events = []
        # A new index, or (from servers that number every call 0) a new id, starts a new tool_use block.
        if position not in self._tool_blocks or (call_id and call_id != self._tool_ids[position]):
            call_id = call_id or f"toolu_{self.message_id}_{position}"
            block = {"type": "tool_use", "id": call_id, "name": function.get("name") or "", "input": {}}
            events = self._open_block(block)
            self._tool_blocks[position] = self._open
            self._tool_ids[position] = call_id
        arguments = function.get("arguments")
        if arguments:
            # Fragments for a call whose block was already closed still name that block's index.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            data = {"type": "content_block_delta", "index": self._tool_blocks[position], "delta": delta}
            events.append(("content_block_delta", data))
        return events


def _plain_text(content: Any) -> str:
    """Text of OpenAI message content (a string or text parts)."""
    if isinstance(content, list):
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def _reasoning_text(message: JSON) -> str:
    """Reasoning text of a chat message or delta, in either field servers use for it."""
    # reasoning_content: DeepSeek, llama.cpp, older vLLM; reasoning: Ollama, newer vLLM, OpenRouter.
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return message[key]
    return ""


def _lenient_arguments(arguments: Any) -> JSON:
    """Tool input from model-written arguments; invalid JSON is kept, not lost, under `_raw_arguments`."""
    try:
        return parse_arguments(arguments, "arguments")
    except TranslationError:
        return {"_raw_arguments": arguments}


def _stop_reason(finish_reason: str | None, has_tool_calls: bool) -> str:
    """Anthropic stop_reason for an OpenAI finish_reason."""
    stop_reason = STOP_REASONS.get(finish_reason or "", "end_turn")
    if has_tool_calls and stop_reason == "end_turn":
        # Some servers (older Ollama) finish tool calls with "stop"; Anthropic clients loop on tool_use.
        return "tool_use"
    return stop_reason


def _message_id(openai_id: Any) -> str:
    """An Anthropic-looking message id (msg_...) derived from an OpenAI completion id."""
    if not isinstance(openai_id, str) or not openai_id:
        return f"msg_{uuid.uuid4().hex}"
    base = openai_id.removeprefix("chatcmpl-")
    return base if base.startswith("msg_") else f"msg_{base}"


def openai_error_to_anthropic(status: int, body: JSON | None) -> JSON:
    """Anthropic error body for an OpenAI-compatible upstream's error response (type chosen by status)."""
    return {
        "type": "error",
        "error": {
            "type": anthropic_error_type_for_status(status),
            "message": _openai_error_message(status, body),
        },
    }


def _openai_error_message(status: int, body: JSON | None) -> str:
    """The message of an OpenAI-style error body, or of the shapes Ollama and FastAPI servers use."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
            return error["message"]
        for candidate in (error, body.get("message"), body.get("detail")):
            if isinstance(candidate, str) and candidate:
                return candidate
    return f"Upstream returned HTTP {status}."
