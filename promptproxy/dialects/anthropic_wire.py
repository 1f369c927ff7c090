"""Anthropic Messages as a client dialect: its requests -> OpenAI chat, OpenAI answers and chunks -> Anthropic."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from ..providers.wire_common import (
    JSON,
    STOP_REASONS,
    TranslationError,
    anthropic_error_type_for_status,
    as_int,
    dump_json,
    parse_arguments,
    upstream_stream_error,
)

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
