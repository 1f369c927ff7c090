"""Anthropic Messages as a client dialect: its requests -> OpenAI chat requests.

The way back (chat answers and chunks -> Anthropic messages and events) lives in anthropic_reply and is
re-exported here, so callers need one module.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..providers.wire_common import JSON, TranslationError, as_int, dump_json
from .anthropic_reply import (
    OpenAIStreamToAnthropic,
    openai_chat_to_anthropic_message,
    openai_error_to_anthropic,
    openai_usage,
)

__all__ = [
    "OpenAIStreamToAnthropic",
    "TranslationError",
    "anthropic_to_openai_chat_request",
    "openai_chat_to_anthropic_message",
    "openai_error_to_anthropic",
    "openai_usage",
]

_TOOL_CHOICE_TO_OPENAI = {"auto": "auto", "none": "none", "any": "required"}
_SYSTEM_SEPARATOR = "\n\n"  # Anthropic system blocks -> one OpenAI system string
_TOOL_RESULT_SEPARATOR = "\n"  # text blocks of one Anthropic tool_result -> one OpenAI tool message
_TOOL_ERROR_PREFIX = "Error: "
# Claude Code opens `system` with a block addressed to Anthropic's billing, not to the model. Its value
# changes from one conversation to the next, so keeping it would defeat the upstream's prefix cache.
_BILLING_HEADER = "x-anthropic-billing-header:"
_TOOL_REFERENCE_PREFIX = "Tool available: "
_TOOL_IMAGES_NOTE = "[The images this tool returned follow in the next user message.]"
_MAX_STOP = 4  # OpenAI refuses more than four stop sequences; the first four are kept
_MAX_USER = 64  # OpenAI's limit for safety identifiers; Claude Code's user_id is longer
# thinking.budget_tokens -> reasoning_effort: below 4k is low, below 16k medium, else high. Anthropic's
# minimum budget is 1024; Claude Code asks about 4k for "think", 10k for "think hard", 32k for "ultrathink".
_BUDGET_EFFORT = ((4096, "low"), (16384, "medium"))
# output_config.effort -> reasoning_effort; xhigh and max become high, the most that vLLM, Ollama and
# llama.cpp accept.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_ADAPTIVE_EFFORT = "medium"  # adaptive thinking without an explicit effort


def anthropic_to_openai_chat_request(body: JSON, *, upstream_model: str, reasoning_effort: bool = False) -> JSON:
    """An OpenAI chat completion request for an Anthropic Messages request.

    `reasoning_effort` says the upstream takes chat's `reasoning_effort`; only then does `thinking` or
    `output_config.effort` become one. Fields chat has no room for (context_management, container,
    service_tier, top_k, cache_control anywhere, signed thinking blocks) are dropped: OpenAI refuses
    unknown fields, and none of them changes what a model may answer.
    """
    if not isinstance(body.get("messages"), list):
        raise TranslationError("`messages` must be an array.", "messages")
    messages: list[JSON] = []
    system = _system_text(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})  # stays first, ahead of system entries below
    for i, message in enumerate(body["messages"]):
        messages.extend(_openai_messages(message, f"messages[{i}]"))
    out: JSON = {"model": upstream_model, "messages": _answer_tool_calls_first(messages)}
    # max_tokens, not max_completion_tokens: every OpenAI-compatible server knows the older name.
    for key in ("max_tokens", "temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = _stop(body.get("stop_sequences"))
    if stop:
        out["stop"] = stop
    user = _chat_user(body.get("metadata"))
    if user:
        out["user"] = user
    if body.get("mcp_servers"):
        # Anthropic's API runs these servers itself; an OpenAI-compatible model would lose their tools silently.
        raise TranslationError("MCP servers are not available on this model.", "mcp_servers")
    if body.get("tools"):
        out.update(_openai_tooling(body["tools"], body.get("tool_choice")))
    response_format = _response_format(body.get("output_config"), body.get("output_format"))
    if response_format:
        out["response_format"] = response_format
    effort = _reasoning_effort(body.get("thinking"), body.get("output_config")) if reasoning_effort else None
    if effort:
        out["reasoning_effort"] = effort
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    return out


def _system_text(system: Any, path: str) -> str:
    """One system string for Anthropic system content (a string or text blocks)."""
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise TranslationError("System content must be a string or an array of text blocks.", path)
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("System blocks must be text.", f"{path}[{i}].type")
        text = block.get("text") or ""
        if not text.startswith(_BILLING_HEADER):
            texts.append(text)
    return _SYSTEM_SEPARATOR.join(text for text in texts if text)


def _stop(stop_sequences: Any) -> list[str]:
    """Chat's `stop` for Anthropic stop_sequences: at most the first four."""
    if stop_sequences is None:
        return []
    if not isinstance(stop_sequences, list):
        raise TranslationError("`stop_sequences` must be an array of strings.", "stop_sequences")
    return stop_sequences[:_MAX_STOP]


def _chat_user(metadata: Any) -> str | None:
    """Chat's `user` for metadata.user_id; a long id (Claude Code's) becomes its SHA-256, stable and 64 long."""
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id:
        return None
    return user_id if len(user_id) <= _MAX_USER else hashlib.sha256(user_id.encode()).hexdigest()


def _reasoning_effort(thinking: Any, output_config: Any) -> str | None:
    """reasoning_effort for Anthropic thinking and output_config.effort (the explicit effort wins)."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return None
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if effort in _EFFORTS:
        return _EFFORTS[effort]
    if kind == "enabled":
        budget = as_int(thinking.get("budget_tokens")) or 0
        return next((name for bound, name in _BUDGET_EFFORT if budget < bound), "high")
    if kind in ("adaptive", "between_tools"):
        return _ADAPTIVE_EFFORT
    return None


def _response_format(output_config: Any, output_format: Any) -> JSON | None:
    """Chat's json_schema response_format for output_config.format (or the older beta `output_format`)."""
    path = "output_config.format"
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if fmt is None and output_format is not None:
        path, fmt = "output_format", output_format
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise TranslationError("The output format must be a json_schema with a `schema` object.", path)
    # Chat wants a name; strict is left off, as OpenAI's strict mode refuses schemas Anthropic accepts.
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _answer_tool_calls_first(messages: list[JSON]) -> list[JSON]:
    """Messages with system entries that came between tool calls and their results moved after the results.

    OpenAI wants an assistant's tool calls answered by tool messages straight after it.
    """
    out: list[JSON] = []
    held: list[JSON] = []
    awaiting = False
    for message in messages:
        role = message["role"]
        if awaiting and role == "system":
            held.append(message)
            continue
        if role != "tool":
            out.extend(held)
            held = []
        out.append(message)
        awaiting = bool(message.get("tool_calls")) or (awaiting and role == "tool")
    return out + held


def _openai_messages(message: Any, path: str) -> list[JSON]:
    """OpenAI messages for one Anthropic message: tool results become `tool` messages first."""
    role = message.get("role") if isinstance(message, dict) else None
    if role == "system":
        # Claude Code puts system entries among the turns; each stays a system message in its place.
        text = _system_text(message.get("content"), f"{path}.content")
        return [{"role": "system", "content": text}] if text else []  # one with only output_config says nothing
    if role not in ("user", "assistant"):
        raise TranslationError("Message role must be user, assistant or system.", f"{path}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise TranslationError("Message content must be a string or an array of blocks.", f"{path}.content")
    if role == "assistant":
        return [_openai_assistant(content, f"{path}.content")]
    return _openai_user(content, f"{path}.content")


def _openai_user(content: list, path: str) -> list[JSON]:
    """Tool messages for the tool_result blocks, then one user message for everything else."""
    tool_messages: list[JSON] = []
    tool_images: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(content):
        block_path = f"{path}[{j}]"
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "tool_result":
            tool_message, images = _openai_tool_message(block, block_path)
            tool_messages.append(tool_message)
            if images:
                label = f"Images returned by tool call {block.get('tool_use_id')}:"
                tool_images += [{"type": "text", "text": label}, *images]
        elif block_type in ("text", "image", "document"):
            parts += _openai_parts(block, block_path)
        else:
            raise TranslationError(f"Content block type {block_type!r} is not supported.", f"{block_path}.type")
    parts = tool_images + parts
    if not parts:
        return tool_messages
    # A lone text block becomes a plain string, which every OpenAI-compatible server accepts.
    single_text = len(parts) == 1 and parts[0]["type"] == "text"
    return [*tool_messages, {"role": "user", "content": parts[0]["text"] if single_text else parts}]


def _openai_parts(block: JSON, path: str) -> list[JSON]:
    """OpenAI content parts for an Anthropic text, image or document block (cache_control is dropped)."""
    block_type = block.get("type")
    if block_type == "text":
        text = block.get("text")
        return [{"type": "text", "text": text}] if text else []
    if block_type == "image":
        return [_openai_image_part(block, path)]
    if block_type != "document":
        raise TranslationError(f"Content block type {block_type!r} is not supported.", f"{path}.type")
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "text":
        return [{"type": "text", "text": source.get("data") or ""}]
    if source.get("type") == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}] if inner else []
        if isinstance(inner, list):
            return [
                part
                for k, item in enumerate(inner)
                for part in _openai_parts(_block(item), f"{path}.source.content[{k}]")
                if _block(item).get("type") != "document"  # a document inside a document is not a thing
            ]
    # PDFs (base64 or URL) and uploaded files need Anthropic's own document reader.
    raise TranslationError("Only plain-text documents can be sent to this model.", f"{path}.source.type")


def _block(item: Any) -> JSON:
    """The item if it is an object, else an empty block (refused by type)."""
    return item if isinstance(item, dict) else {}


def _openai_assistant(content: list, path: str) -> JSON:
    """An OpenAI assistant message for Anthropic text and tool_use blocks."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for j, block in enumerate(content):
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "text":
            texts.append(block.get("text") or "")
        elif block_type == "tool_use":
            function = {"name": block.get("name"), "arguments": dump_json(block.get("input"))}
            tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif block_type in ("thinking", "redacted_thinking"):
            continue  # another model's signed reasoning means nothing to an OpenAI-compatible model
        else:
            raise TranslationError(f"Content block type {block_type!r} is not supported.", f"{path}[{j}].type")
    text = "".join(texts)
    message: JSON = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _openai_tool_message(block: JSON, path: str) -> tuple[JSON, list[JSON]]:
    """An OpenAI `tool` message for a tool_result block, and the image parts it held.

    Chat tool messages carry text only, so images go to the user message that follows the tool messages.
    """
    content = block.get("content")
    texts: list[str] = []
    images: list[JSON] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, item in enumerate(content):
            item_path = f"{path}.content[{k}]"
            item_type = _block(item).get("type")
            if item_type == "tool_reference":
                # Claude Code's ToolSearch answers with references to deferred tools; chat has no deferred
                # loading, so every tool was sent in full and a reference only needs naming.
                texts.append(f"{_TOOL_REFERENCE_PREFIX}{item.get('tool_name')}")
                continue
            if item_type not in ("text", "image", "document"):
                raise TranslationError(
                    "Tool results may only hold text, images, plain-text documents and tool references.",
                    f"{item_path}.type",
                )
            for part in _openai_parts(item, item_path):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    images.append(part)
    elif content is not None:
        raise TranslationError("Tool result content must be a string or an array of blocks.", f"{path}.content")
    text = _TOOL_RESULT_SEPARATOR.join(texts)
    if images:
        text = f"{text}{_TOOL_RESULT_SEPARATOR}{_TOOL_IMAGES_NOTE}" if text else _TOOL_IMAGES_NOTE
    if block.get("is_error"):
        # OpenAI tool messages have no error flag; say it in words so the model still knows.
        text = f"{_TOOL_ERROR_PREFIX}{text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}, images


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


def _openai_tooling(tools: Any, choice: Any) -> JSON:
    """Chat's tools, tool_choice and parallel_tool_calls for Anthropic tools and tool_choice."""
    out: JSON = {"tools": _openai_tools(tools)}
    if choice is not None:
        out["tool_choice"] = _openai_tool_choice(choice)
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    return out


def _openai_tools(tools: Any) -> list[JSON]:
    """OpenAI function tools for Anthropic custom tools.

    Server tools (web_search_*, bash_*, text_editor_*, code_execution_*, computer_*, ...) run inside
    Anthropic's API or need a model trained for them, so a tool with any `type` but `custom` is a 400
    naming it: dropping it would leave the model answering without the search or the sandbox it was asked
    to use. Claude Code itself sends only custom tools with an input_schema. Per-tool extras
    (cache_control, strict, input_examples, defer_loading) are dropped: a deferred tool is sent in full.
    """
    if not isinstance(tools, list):
        raise TranslationError("`tools` must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise TranslationError("Each tool must be an object.", f"tools[{i}]")
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise TranslationError(
                f"Tool type {kind!r} is an Anthropic server tool, not available on this model.", f"tools[{i}].type"
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
