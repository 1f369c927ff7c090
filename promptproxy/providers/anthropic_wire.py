"""OpenAI chat requests -> Anthropic Messages requests, and Anthropic responses, usage and errors -> OpenAI."""

from __future__ import annotations

import time
from typing import Any

from .wire_common import (
    FINISH_REASONS,
    JSON,
    TranslationError,
    anthropic_error_type_for_status,
    as_int,
    dump_json,
    parse_arguments,
)

_TOOL_CHOICE_TO_ANTHROPIC = {"auto": "auto", "none": "none", "required": "any"}

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
        out["tools"] = anthropic_tools(body["tools"])
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
                    "function": {"name": block.get("name"), "arguments": dump_json(block.get("input"))},
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
        "usage": openai_usage_from_anthropic(resp.get("usage")),
    }


def anthropic_usage(u: JSON | None) -> JSON:
    """Normalized usage; input_tokens counts every prompt token, cache reads and writes included."""
    u = u or {}
    fresh, read, written = (as_int(u.get(k)) for k in _ANTHROPIC_INPUT_KEYS)
    known = [v for v in (fresh, read, written) if v is not None]
    return {
        "input_tokens": sum(known) if known else None,
        "output_tokens": as_int(u.get("output_tokens")),
        "cached_tokens": read,
        "cache_write_tokens": written,
    }


def openai_usage_from_anthropic(u: JSON | None) -> JSON:
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
                "input": parse_arguments(function.get("arguments"), f"{call_path}.function.arguments"),
            }
        )
    return blocks


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


def anthropic_tools(tools: Any) -> list[JSON]:
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


def anthropic_error_to_openai(status: int, body: JSON | None) -> tuple[int, JSON]:
    """OpenAI status and error envelope for an Anthropic error response; 529 overloaded becomes 503."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    anthropic_type = error.get("type")
    if not isinstance(anthropic_type, str) or not anthropic_type:  # an object here is not a name to look up
        anthropic_type = anthropic_error_type_for_status(status)
    fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
    error_type, code = _OPENAI_ERRORS.get(anthropic_type, fallback)
    # Only the upstream's own message travels; a body we cannot read may be a proxy page with host names.
    message = error.get("message") or f"Upstream returned HTTP {status}."
    return (503 if status == 529 else status), {
        "error": {"message": message, "type": error_type, "param": None, "code": code}
    }


def _is_number(value: Any) -> bool:
    """Whether the value is an int or float (bools are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
