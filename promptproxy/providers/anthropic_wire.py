"""Pure translation between OpenAI Chat Completions and Anthropic Messages wire formats."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

JSON = dict[str, Any]


class TranslationError(ValueError):
    """A request that cannot be expressed in the other wire format; `param` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamStreamError(Exception):
    """An error reported by the upstream inside a stream that had already started."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


# Anthropic stop_reason -> OpenAI finish_reason. pause_turn (a server-tool loop paused) has no
# OpenAI counterpart and reads as a normal stop; running out of context window is a truncation.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say whether "stop" came from a stop
# sequence, so it is always end_turn.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TOOL_CHOICE_TO_ANTHROPIC = {"auto": "auto", "none": "none", "required": "any"}
_TOOL_CHOICE_TO_OPENAI = {"auto": "auto", "none": "none", "any": "required"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Anthropic error type -> (OpenAI error type, OpenAI error code), in the words OpenAI clients know.
_OPENAI_ERRORS = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "permission_error": ("permission_error", None),
    "not_found_error": ("not_found_error", None),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "timeout_error": ("timeout_error", "timeout"),
    "overloaded_error": ("overloaded_error", "overloaded"),
}
_ANTHROPIC_INPUT_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_SYSTEM_SEPARATOR = "\n\n"  # Anthropic system blocks -> one OpenAI system string
_TOOL_RESULT_SEPARATOR = "\n"  # text blocks of one Anthropic tool_result -> one OpenAI tool message
_TOOL_ERROR_PREFIX = "Error: "


# --- Direction A: OpenAI client -> Anthropic upstream --------------------------------------------


def openai_chat_to_anthropic(body: JSON, *, upstream_model: str, default_max_tokens: int) -> JSON:
    """An Anthropic Messages request for an OpenAI chat completion request."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("Anthropic models return exactly one choice; `n` must be 1.", "n")
    system, messages = _anthropic_turns(body.get("messages"))
    out: JSON = {"model": upstream_model}
    if system:
        out["system"] = system  # the stored prompt is first, byte-stable, so prompt caches keep hitting
    out["messages"] = messages
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    out["max_tokens"] = default_max_tokens if max_tokens is None else max_tokens
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = body.get("temperature")
    if _is_number(temperature):
        # OpenAI accepts 0..2, Anthropic only 0..1. Clamp rather than rescale, so the common 0..1
        # values keep their meaning and anything hotter becomes Anthropic's hottest.
        out["temperature"] = min(temperature, 1)
    elif temperature is not None:
        out["temperature"] = temperature  # not a number: let the upstream reject it in its words
    for key in ("top_p", "top_k", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    # Tools and tool_choice go together: Anthropic has no use for a tool_choice without tools.
    if body.get("tools"):
        out["tools"] = _anthropic_tools(body["tools"])
        choice = _anthropic_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    # Everything else (presence/frequency penalties, logit_bias, seed, response_format, logprobs,
    # stream_options, ...) has no Anthropic equivalent, and Anthropic refuses unknown fields.
    return out


def anthropic_to_openai_chat(resp: JSON, *, model: str, created: int | None = None) -> JSON:
    """An OpenAI chat.completion for an Anthropic message response."""
    text_parts: list[str] = []
    tool_calls: list[JSON] = []
    for block in resp.get("content") or []:
        if block.get("type") == "text":
            text_parts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": _dump_json(block.get("input"))},
                }
            )
        # thinking, redacted_thinking and server-tool blocks have no chat.completion field.
    text = "".join(text_parts)
    message: JSON = {"role": "assistant", "content": text or (None if tool_calls else ""), "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{resp.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(resp.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": _openai_usage_from_anthropic(resp.get("usage")),
    }


def anthropic_usage(u: JSON | None) -> JSON:
    """Normalized usage; input_tokens counts every prompt token, cache reads and writes included."""
    u = u or {}
    fresh, read, written = (_int(u.get(k)) for k in _ANTHROPIC_INPUT_KEYS)
    known = [v for v in (fresh, read, written) if v is not None]
    return {
        "input_tokens": sum(known) if known else None,
        "output_tokens": _int(u.get("output_tokens")),
        "cached_tokens": read,
        "cache_write_tokens": written,
    }


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
            raise _stream_error(data.get("error"))
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
            usage = _openai_usage_from_anthropic(self._raw_usage)
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


def _anthropic_turns(messages: Any) -> tuple[list[JSON], list[JSON]]:
    """System text blocks, and alternating user/assistant turns, from OpenAI messages."""
    if not isinstance(messages, list):
        raise TranslationError("`messages` must be an array.", "messages")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError("Each message must be an object.", path)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"{path}.content"))
            continue
        if role == "user":
            blocks = _anthropic_blocks(message.get("content"), f"{path}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, path)
        elif role == "tool":
            blocks = [_tool_result_block(message, path)]
        else:
            raise TranslationError(f"Message role {role!r} is not supported.", f"{path}.role")
        if not blocks:
            continue  # Anthropic refuses empty content; dropping keeps the turns valid
        anthropic_role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants user and assistant turns to alternate
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    for turn in turns:
        # Anthropic wants a user turn's tool_result blocks before any other content.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _text_blocks(content: Any, path: str) -> list[JSON]:
    """Text blocks for system content; other part types are refused."""
    blocks = _anthropic_blocks(content, path)
    for j, block in enumerate(blocks):
        if block["type"] != "text":
            raise TranslationError("System messages may only hold text.", f"{path}[{j}].type")
    return blocks


def _anthropic_blocks(content: Any, path: str) -> list[JSON]:
    """Anthropic content blocks for OpenAI message content (a string or an array of parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError("Message content must be a string or an array of parts.", path)
    blocks = []
    for j, part in enumerate(content):
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type in ("text", "refusal"):
            text = part.get(part_type)
            if not text:
                continue  # Anthropic refuses empty text blocks
            block: JSON = {"type": "text", "text": text}
        elif part_type == "image_url":
            block = {
                "type": "image",
                "source": _image_source(part.get("image_url"), f"{path}[{j}].image_url"),
            }
        else:
            raise TranslationError(
                f"Content part type {part_type!r} is not supported for this model.", f"{path}[{j}].type"
            )
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]  # vendor extra some OpenAI clients send
        blocks.append(block)
    return blocks


def _image_source(image_url: Any, path: str) -> JSON:
    """An Anthropic image source for an OpenAI image_url (data: or http(s) URL)."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise TranslationError("An image part needs an image_url.url string.", f"{path}.url")
    if url.startswith("data:"):
        header, comma, data = url[len("data:") :].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type or not data:
            raise TranslationError("Image data URLs must look like data:<type>;base64,<data>.", f"{path}.url")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise TranslationError("Image URLs must be data: or http(s) URLs.", f"{path}.url")


def _assistant_blocks(message: JSON, path: str) -> list[JSON]:
    """Text and tool_use blocks for an OpenAI assistant message."""
    blocks = _anthropic_blocks(message.get("content"), f"{path}.content")
    for j, call in enumerate(message.get("tool_calls") or []):
        call_path = f"{path}.tool_calls[{j}]"
        if call.get("type", "function") != "function":
            raise TranslationError("Only function tool calls are supported.", f"{call_path}.type")
        if not call.get("id"):
            raise TranslationError("A tool call needs an id.", f"{call_path}.id")
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function.get("name"),
                "input": _parse_arguments(function.get("arguments"), f"{call_path}.function.arguments"),
            }
        )
    return blocks


def _parse_arguments(arguments: Any, path: str) -> JSON:
    """Tool call arguments (a JSON string) as the object Anthropic wants; "" means no arguments."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise TranslationError("Tool call arguments are not valid JSON.", path) from None
    if not isinstance(parsed, dict):
        raise TranslationError("Tool call arguments must be a JSON object.", path)
    return parsed


def _tool_result_block(message: JSON, path: str) -> JSON:
    """A tool_result block for an OpenAI `tool` message."""
    if not message.get("tool_call_id"):
        raise TranslationError("A tool message needs a tool_call_id.", f"{path}.tool_call_id")
    block: JSON = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    content = message.get("content")
    if isinstance(content, list):
        block["content"] = _anthropic_blocks(content, f"{path}.content")
    elif content:
        block["content"] = content
    return block


def _anthropic_tools(tools: Any) -> list[JSON]:
    """Anthropic tool definitions for OpenAI function tools."""
    if not isinstance(tools, list):
        raise TranslationError("`tools` must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise TranslationError("Only tools of type `function` are supported.", f"tools[{i}].type")
        function = tool.get("function") or {}
        if not function.get("name"):
            raise TranslationError("A function tool needs a name.", f"tools[{i}].function.name")
        definition: JSON = {"name": function["name"]}
        if function.get("description"):
            definition["description"] = function["description"]
        definition["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        out.append(definition)
    return out


def _anthropic_tool_choice(choice: Any, parallel_tool_calls: Any) -> JSON | None:
    """An Anthropic tool_choice for OpenAI's tool_choice and parallel_tool_calls."""
    if choice is None:
        result = {"type": "auto"} if parallel_tool_calls is False else None
    elif isinstance(choice, str) and choice in _TOOL_CHOICE_TO_ANTHROPIC:
        result = {"type": _TOOL_CHOICE_TO_ANTHROPIC[choice]}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and (choice.get("function") or {}).get("name")
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise TranslationError(
            'tool_choice must be "auto", "none", "required" or a named function.', "tool_choice"
        )
    if result is not None and parallel_tool_calls is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _openai_usage_from_anthropic(u: JSON | None) -> JSON:
    """OpenAI usage (prompt_tokens includes cache reads and writes) for Anthropic usage."""
    usage = anthropic_usage(u)
    prompt = usage["input_tokens"] or 0
    completion = usage["output_tokens"] or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": usage["cached_tokens"] or 0,
            "cache_write_tokens": usage["cache_write_tokens"] or 0,
        },
    }


# --- Direction B: Anthropic client (/v1/messages) -> OpenAI-compatible upstream -------------------


def anthropic_to_openai_chat_request(body: JSON, *, upstream_model: str) -> JSON:
    """An OpenAI chat completion request for an Anthropic Messages request."""
    messages: list[JSON] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    if not isinstance(body.get("messages"), list):
        raise TranslationError("`messages` must be an array.", "messages")
    for i, message in enumerate(body["messages"]):
        messages.extend(_openai_messages(message, f"messages[{i}]"))
    out: JSON = {"model": upstream_model, "messages": messages}
    # max_tokens, not max_completion_tokens: every OpenAI-compatible server knows the older name.
    for key in ("max_tokens", "temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id
    if body.get("tools"):
        out["tools"] = _openai_tools(body["tools"])
        choice = body.get("tool_choice")
        if choice is not None:
            out["tool_choice"] = _openai_tool_choice(choice)
            if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    # top_k, thinking, service_tier, container, mcp_servers...: OpenAI itself refuses unknown fields.
    return out


def openai_chat_to_anthropic_message(resp: JSON, *, model: str) -> JSON:
    """An Anthropic message object for an OpenAI chat.completion."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
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
        "input_tokens": _int(u.get("prompt_tokens")),
        "output_tokens": _int(u.get("completion_tokens")),
        "cached_tokens": _int(details.get("cached_tokens")),
        "cache_write_tokens": _int(details.get("cache_write_tokens")),
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
        self._open_text = False
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
            raise _stream_error(chunk["error"])
        events = self._start()
        if chunk.get("usage"):
            self._raw_usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # an Anthropic message has one choice
            delta = choice.get("delta") or {}
            for text in (delta.get("content"), delta.get("refusal")):
                if text:
                    events += self._text(text)
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
        index, self._open, self._open_text = self._open, None, False
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _text(self, text: str) -> list[tuple[str, JSON]]:
        events = []
        if not self._open_text:
            events = self._open_block({"type": "text", "text": ""})
            self._open_text = True
        delta = {"type": "text_delta", "text": text}
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


def _system_text(system: Any) -> str:
    """One system string for Anthropic's system (a string or text blocks)."""
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise TranslationError("`system` must be a string or an array of text blocks.", "system")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("System blocks must be text.", f"system[{i}].type")
        texts.append(block.get("text") or "")
    return _SYSTEM_SEPARATOR.join(text for text in texts if text)


def _openai_messages(message: Any, path: str) -> list[JSON]:
    """OpenAI messages for one Anthropic message: tool results become `tool` messages first."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise TranslationError("Message role must be user or assistant.", f"{path}.role")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise TranslationError("Message content must be a string or an array of blocks.", f"{path}.content")
    if role == "assistant":
        return [_openai_assistant(content, f"{path}.content")]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(content):
        block_path = f"{path}.content[{j}]"
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "tool_result":
            tool_messages.append(_openai_tool_message(block, block_path))
        elif block_type == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif block_type == "image":
            parts.append(_openai_image_part(block, block_path))
        else:
            raise TranslationError(
                f"Content block type {block_type!r} is not supported.", f"{block_path}.type"
            )
    if not parts:
        return tool_messages
    # A lone text block becomes a plain string, which every OpenAI-compatible server accepts.
    single_text = len(parts) == 1 and parts[0]["type"] == "text"
    return [*tool_messages, {"role": "user", "content": parts[0]["text"] if single_text else parts}]


def _openai_assistant(content: list, path: str) -> JSON:
    """An OpenAI assistant message for Anthropic text and tool_use blocks."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for j, block in enumerate(content):
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "text":
            texts.append(block.get("text") or "")
        elif block_type == "tool_use":
            function = {"name": block.get("name"), "arguments": _dump_json(block.get("input"))}
            tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif block_type in ("thinking", "redacted_thinking"):
            continue  # another model's signed reasoning means nothing to an OpenAI-compatible model
        else:
            raise TranslationError(
                f"Content block type {block_type!r} is not supported.", f"{path}[{j}].type"
            )
    text = "".join(texts)
    message: JSON = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _openai_tool_message(block: JSON, path: str) -> JSON:
    """An OpenAI `tool` message for an Anthropic tool_result block."""
    content = block.get("content")
    if isinstance(content, list):
        texts = []
        for k, item in enumerate(content):
            if not isinstance(item, dict) or item.get("type") != "text":
                raise TranslationError(
                    "Tool results may only hold text for this model.", f"{path}.content[{k}].type"
                )
            texts.append(item.get("text") or "")
        content = _TOOL_RESULT_SEPARATOR.join(texts)
    text = content if isinstance(content, str) else ""
    if block.get("is_error"):
        # OpenAI tool messages have no error flag; say it in words so the model still knows.
        text = f"{_TOOL_ERROR_PREFIX}{text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _openai_image_part(block: JSON, path: str) -> JSON:
    """An OpenAI image_url part for an Anthropic image block."""
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = source.get("url")
    else:
        raise TranslationError("Image sources must be base64 or url.", f"{path}.source.type")
    return {"type": "image_url", "image_url": {"url": url}}


def _openai_tools(tools: Any) -> list[JSON]:
    """OpenAI function tools for Anthropic custom tools."""
    if not isinstance(tools, list):
        raise TranslationError("`tools` must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            raise TranslationError(
                "Anthropic server tools are not available on this model.", f"tools[{i}].type"
            )
        if not tool.get("name"):
            raise TranslationError("A tool needs a name.", f"tools[{i}].name")
        function: JSON = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _openai_tool_choice(choice: Any) -> str | JSON:
    """OpenAI's tool_choice for an Anthropic tool_choice."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in _TOOL_CHOICE_TO_OPENAI:
        return _TOOL_CHOICE_TO_OPENAI[kind]
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise TranslationError("tool_choice type must be auto, any, tool or none.", "tool_choice")


def _plain_text(content: Any) -> str:
    """Text of OpenAI message content (a string or text parts)."""
    if isinstance(content, list):
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def _lenient_arguments(arguments: Any) -> JSON:
    """Tool input from model-written arguments; invalid JSON is kept, not lost, under `_raw_arguments`."""
    try:
        return _parse_arguments(arguments, "arguments")
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


# --- Errors -------------------------------------------------------------------------------------


def anthropic_error_type_for_status(status: int) -> str:
    """Anthropic's error type for an HTTP status (other 4xx: invalid_request_error, 5xx: api_error)."""
    if status in _ANTHROPIC_ERROR_TYPES:
        return _ANTHROPIC_ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_to_openai(status: int, body: JSON | None) -> tuple[int, JSON]:
    """OpenAI status and error envelope for an Anthropic error response; 529 overloaded becomes 503."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    anthropic_type = error.get("type") or anthropic_error_type_for_status(status)
    fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
    error_type, code = _OPENAI_ERRORS.get(anthropic_type, fallback)
    # Only the upstream's own message travels; a body we cannot read may be a proxy page with host names.
    message = error.get("message") or f"Upstream returned HTTP {status}."
    return (503 if status == 529 else status), {
        "error": {"message": message, "type": error_type, "param": None, "code": code}
    }


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


def _stream_error(error: Any) -> UpstreamStreamError:
    """The exception for an error object received inside a stream."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    return UpstreamStreamError(error.get("type") or "api_error", error.get("message") or "Upstream error")


def _dump_json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
