"""Anthropic Messages stream events -> OpenAI chat.completion.chunk dicts."""

from __future__ import annotations

import time

from .anthropic_wire import anthropic_usage, openai_usage_from_anthropic
from .wire_common import FINISH_REASONS, JSON, upstream_stream_error


class AnthropicStreamToOpenAI:
    """Turns Anthropic stream events into OpenAI chat.completion.chunk dicts, one stream at a time."""

    def __init__(
        self,
        model: str,
        chunk_id_prefix: str = "chatcmpl-",
        *,
        include_usage: bool = False,
        created: int | None = None,
    ) -> None:
        self.model = model
        self.chunk_id_prefix = chunk_id_prefix
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self._id = chunk_id_prefix
        self._raw_usage: JSON = {}
        self._tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool_calls index
        self._finished = False

    @property
    def usage(self) -> JSON:
        """Usage seen so far, normalized like `anthropic_usage`."""
        return anthropic_usage(self._raw_usage)

    def feed(self, event: str, data: JSON) -> list[JSON]:
        """The OpenAI chunks for one Anthropic event (named by its SSE `event:` line)."""
        kind = event or data.get("type")
        if kind == "error":
            raise upstream_stream_error(data.get("error"))
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = f"{self.chunk_id_prefix}{message.get('id', '')}"
            self._merge_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta") or {})
        if kind == "message_delta":
            self._merge_usage(data.get("usage"))
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            if stop_reason is None or self._finished:
                return []
            self._finished = True
            return [self._chunk({}, FINISH_REASONS.get(stop_reason, "stop"))]
        if kind == "message_stop" and self.include_usage:
            usage = openai_usage_from_anthropic(self._raw_usage)
            return [{**self._envelope(), "choices": [], "usage": usage}]
        # ping, content_block_stop, message_stop without usage, and event types added later.
        return []

    def _block_start(self, index: int | None, block: JSON) -> list[JSON]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use" or index is None:
            return []
        position = self._tool_index[index] = len(self._tool_index)
        call = {
            "index": position,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, index: int | None, delta: JSON) -> list[JSON]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if (
            delta.get("type") == "input_json_delta"
            and delta.get("partial_json")
            and index in self._tool_index
        ):
            call = {"index": self._tool_index[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signature and citation deltas have no chat.completion.chunk field

    def _merge_usage(self, usage: JSON | None) -> None:
        # message_delta usage is cumulative, so later values replace earlier ones.
        self._raw_usage.update({k: v for k, v in (usage or {}).items() if v is not None})

    def _envelope(self) -> JSON:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        chunk = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None  # OpenAI sends null usage on every chunk but the last
        return chunk
