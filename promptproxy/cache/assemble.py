"""Streams folded back into the whole answer, so a cleanly finished stream can fill the response cache.

The inverse of a dialect's `replay`: OpenAI chat chunks become the chat.completion a non-streamed call returns,
native Anthropic events the message. No existing translator builds these (responses_wire assembles Responses
objects, the Anthropic translators emit events), so the two folds live here; each dialect's `assembler(plan)`
chooses one for its stream.
"""
from __future__ import annotations

import logging

import orjson

log = logging.getLogger("promptproxy.cache")
TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")  # string deltas appended as they come


class TooBig(Exception):
    """The answer outgrew the cache's entry cap: not worth assembling further."""


class _Sized:
    """Counts the text folded in, to give up past the cache's entry cap."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0

    def _sized(self, text: str) -> str:
        self.size += len(text)
        if self.size > self.limit:
            raise TooBig
        return text


class ChatAssembler(_Sized):
    """OpenAI chat.completion.chunk dicts -> one chat.completion."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.head: dict = {}
        self.choices: dict[int, dict] = {}
        self.usage: dict | None = None

    def feed(self, chunk: dict) -> None:
        """Add one chunk."""
        for name in ("id", "created", "model", "system_fingerprint"):
            if name not in self.head and chunk.get(name) is not None:
                self.head[name] = chunk[name]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            state = self.choices.setdefault(choice.get("index", 0), {"text": {}, "calls": {}, "finish": None})
            delta = choice.get("delta") or {}
            for name in TEXT_FIELDS:
                if isinstance(delta.get(name), str):
                    state["text"].setdefault(name, []).append(self._sized(delta[name]))
            for call in delta.get("tool_calls") or ():
                self._tool_call(state["calls"], call)
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]

    def _tool_call(self, calls: dict, call: dict) -> None:
        slot = calls.setdefault(call.get("index", len(calls)), {"id": None, "type": "function",
                                                                 "function": {"name": "", "arguments": ""}})
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        if function.get("name"):
            slot["function"]["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            slot["function"]["arguments"] += self._sized(function["arguments"])

    def answer(self, usage: dict | None) -> dict | None:
        """The chat.completion, or None unless every choice finished; `usage` (normalized) fills a stripped one."""
        if not self.choices or any(state["finish"] is None for state in self.choices.values()):
            return None
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            text = {name: "".join(parts) for name, parts in state["text"].items()}
            calls = [state["calls"][i] for i in sorted(state["calls"])]
            message = {"role": "assistant", "content": text.pop("content", "") or (None if calls else "")}
            message.update({name: value for name, value in text.items() if value})
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
        return {"id": self.head.get("id"), "object": "chat.completion", "created": self.head.get("created"),
                "model": self.head.get("model"), "choices": choices,
                "usage": self.usage or openai_usage(usage),
                **({"system_fingerprint": self.head["system_fingerprint"]} if "system_fingerprint" in self.head
                   else {})}


class MessageAssembler(_Sized):
    """Native Anthropic stream events -> one message."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.message: dict | None = None
        self.partial: dict[int, str] = {}  # content block index -> tool input JSON so far
        self.stopped = False

    def feed(self, event: dict) -> None:
        """Add one event."""
        kind = event.get("type")
        if kind == "message_start":
            self.message = {**event["message"], "content": []}
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            self._delta(event["index"], event.get("delta") or {})
        elif kind == "content_block_stop" and event["index"] in self.partial:
            self.message["content"][event["index"]]["input"] = orjson.loads(self.partial.pop(event["index"]) or "{}")
        elif kind == "message_delta":
            self.message.update({k: v for k, v in (event.get("delta") or {}).items()})
            self.message["usage"].update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.stopped = True

    def _delta(self, index: int, delta: dict) -> None:
        block = self.message["content"][index]
        kind = delta.get("type")
        if kind == "input_json_delta":
            self.partial[index] = self.partial.get(index, "") + self._sized(delta.get("partial_json") or "")
        elif kind in ("text_delta", "thinking_delta"):
            name = kind.removesuffix("_delta")
            block[name] = block.get(name, "") + self._sized(delta.get(name) or "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def answer(self, usage: dict | None) -> dict | None:
        """The message, or None unless message_stop came."""
        del usage  # Anthropic streams always carry their usage
        return self.message if self.stopped and self.message is not None and not self.partial else None


class Filling:
    """An encoder that also folds what it frames into the whole answer; the answer is lost on any error."""

    def __init__(self, inner, assembler):
        self.inner = inner
        self.assembler = assembler  # the dialect's fold for this stream (Dialect.assembler)
        self.broken = False

    def chunk(self, chunk: dict) -> bytes:
        """Frame one chunk and fold it in."""
        if not self.broken:
            try:
                self.assembler.feed(chunk)
            except TooBig:
                self.broken = True
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                self.broken = True  # a shape the fold does not know: the client still gets it, the cache does not
                log.info("stream not cached: %s in its events", type(exc).__name__)
        return self.inner.chunk(chunk)

    def done(self, call) -> bytes:
        """The end of the stream."""
        return self.inner.done(call)

    def error(self, err) -> bytes:
        """An in-band error: nothing of this stream is cached."""
        self.broken = True
        return self.inner.error(err)

    def whole(self, usage: dict | None) -> dict | None:
        """The assembled answer if the stream finished cleanly, else None."""
        return None if self.broken else self.assembler.answer(usage)


def openai_usage(usage: dict | None) -> dict | None:
    """OpenAI usage for normalized usage (input_tokens counts every prompt token)."""
    if not usage:
        return None
    prompt, completion = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    out = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if usage.get("cached_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": usage["cached_tokens"]}
    return out
