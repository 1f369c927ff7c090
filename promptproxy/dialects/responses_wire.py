"""Pure translation between the OpenAI Responses API and OpenAI Chat Completions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from ..providers.wire_common import TranslationError, UpstreamStreamError
from .anthropic_reply import openai_usage

JSON = dict[str, Any]
Event = tuple[str, JSON]

_TOOL_CHOICE_MODES = ("auto", "none", "required")
_TEXT_PARTS = ("input_text", "output_text", "text")
# Chat servers know system, user, assistant and tool; most OpenAI-compatible ones refuse `developer`.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SYSTEM_SEPARATOR = "\n\n"  # text parts of one system message -> one string, as servers expect
_CALL_ITEMS = ("function_call", "custom_tool_call")
_OUTPUT_ITEMS = ("function_call_output", "custom_tool_call_output")
# chat finish_reason -> Responses incomplete_details.reason
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
# The one string parameter a custom (free-form) tool becomes for a chat upstream.
_CUSTOM_INPUT = "input"


# --- Request: Responses -> chat completions --------------------------------------------------------


def input_items(body: JSON) -> list[JSON]:
    """The request's `input` as a list of items (a bare string is one user message)."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise TranslationError("`input` must be a string or an array of items.", "input")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise TranslationError("Each input item must be an object.", f"input[{i}]")
        if "type" not in item and "role" in item:
            item = {"type": "message", **item}  # EasyInputMessage: a message without its type
        items.append(item)
    return items


def declared_tools(request: JSON) -> dict[str, JSON]:
    """The request's function and custom tools by name, namespace tools' members included."""
    found: dict[str, JSON] = {}
    for tool in _flat_tools(request.get("tools")):
        if isinstance(tool, dict) and tool.get("name") and tool.get("type") in ("function", "custom"):
            found.setdefault(tool["name"], tool)
    return found


def _flat_tools(tools: Any, namespace: str | None = None) -> list[JSON]:
    """Tools with a namespace's members in its place, each marked with `_namespace`."""
    out: list[JSON] = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "namespace" and namespace is None:
            out.extend(_flat_tools(tool.get("tools"), tool.get("name")))
        elif namespace and isinstance(tool, dict):
            out.append({**tool, "_namespace": namespace})
        else:
            out.append(tool)
    return out


def request_to_chat(
    body: JSON,
    history: Iterable[JSON] = (),
    *,
    upstream_model: str | None = None,
    reasoning_effort: bool = False,
    max_tokens_field: str = "max_tokens",
    drop_tools: Iterable[str] = (),
) -> JSON:
    """A chat completions request for a Responses request; `history` is the previous response's items.

    `reasoning_effort` says the upstream takes chat's `reasoning_effort`; `max_tokens_field` names the
    output limit it takes (OpenAI's own reasoning models want "max_completion_tokens"); `drop_tools`
    names hosted tool types to leave out instead of refusing (Codex sends `web_search` on every turn).
    """
    messages: list[JSON] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise TranslationError("`instructions` must be a string.", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    _append_items(messages, list(history), "previous_response_id")
    _append_items(messages, input_items(body), "input")
    out: JSON = {"model": upstream_model or body.get("model"), "messages": messages}
    tools = _chat_tools(body.get("tools"), frozenset(drop_tools)) if body.get("tools") is not None else []
    if tools:
        out["tools"] = tools
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _chat_tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    # max_tokens by default: vLLM, Ollama, llama.cpp and every older OpenAI-compatible server know it,
    # while max_completion_tokens is newer and refused by some; OpenAI's reasoning models need the new name.
    if body.get("max_output_tokens") is not None:
        out[max_tokens_field] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    reasoning = body.get("reasoning")
    if reasoning_effort and isinstance(reasoning, dict) and reasoning.get("effort"):
        out["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    response_format = _response_format(text.get("format") if isinstance(text, dict) else None)
    if response_format:
        out["response_format"] = response_format
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # usage arrives in the last chunk, for accounting
    user = body.get("safety_identifier") or body.get("user")
    if user:
        out["user"] = user
    # metadata, store, previous_response_id, include, truncation, prompt_cache_key, service_tier,
    # background, text.verbosity and unknown fields: the gateway's business or unknown to chat servers.
    return out


def _append_items(messages: list[JSON], items: list[JSON], path: str) -> None:
    """Chat messages for Responses items, appended in order."""
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        kind = item.get("type")
        if kind == "message":
            _append_message(messages, _chat_message(item, item_path))
        elif kind in _CALL_ITEMS:
            _append_tool_call(messages, _chat_tool_call(item, item_path))
        elif kind in _OUTPUT_ITEMS:
            messages.append(_chat_tool_message(item, item_path))
        elif kind == "reasoning":
            continue  # another model's reasoning (often encrypted) means nothing to a chat upstream
        elif kind == "item_reference":
            raise TranslationError("Item references are not supported; send the item itself.", f"{item_path}.type")
        else:
            raise TranslationError(f"Input item type {kind!r} is not supported for this model.", f"{item_path}.type")


def _append_message(messages: list[JSON], message: JSON) -> None:
    """Add a message; consecutive system messages become one, as many chat templates allow only one."""
    last = messages[-1] if messages else None
    if message["role"] == "system" and last is not None and last["role"] == "system" and message["content"]:
        last["content"] = _SYSTEM_SEPARATOR.join(text for text in (last["content"], message["content"]) if text)
        return
    messages.append(message)


def _chat_message(item: JSON, path: str) -> JSON:
    """A chat message for a Responses message item."""
    role = _ROLES.get(item.get("role"))
    if role is None:
        raise TranslationError(f"Message role {item.get('role')!r} is not supported.", f"{path}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise TranslationError("Message content must be a string or an array of parts.", f"{path}.content")
    parts = [_chat_part(part, f"{path}.content[{j}]") for j, part in enumerate(content)]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    if role != "user":
        if len(texts) != len(parts):
            raise TranslationError(f"A {item.get('role')} message may only hold text.", f"{path}.content")
        return {"role": role, "content": (_SYSTEM_SEPARATOR if role == "system" else "").join(texts)}
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": texts[0]}  # a plain string, which every chat server accepts
    return {"role": role, "content": parts}


def _chat_part(part: Any, path: str) -> JSON:
    """A chat content part for a Responses content part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": part.get("text") or ""}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal") or ""}
    if kind == "input_image":
        if not part.get("image_url"):
            # file_id points into OpenAI's file store, which this gateway does not have.
            raise TranslationError("Images must be given as image_url (file_id is not supported).", f"{path}.file_id")
        image: JSON = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise TranslationError(f"Content part type {kind!r} is not supported for this model.", f"{path}.type")


def _chat_tool_call(item: JSON, path: str) -> JSON:
    """A chat tool call for a function_call or custom_tool_call item."""
    if not item.get("call_id"):
        raise TranslationError("A tool call item needs a call_id.", f"{path}.call_id")
    if item["type"] == "custom_tool_call":
        arguments = json.dumps({_CUSTOM_INPUT: item.get("input") or ""}, ensure_ascii=False)
    else:
        arguments = item.get("arguments") or ""
    return {"id": item["call_id"], "type": "function", "function": {"name": item.get("name"), "arguments": arguments}}


def _append_tool_call(messages: list[JSON], call: JSON) -> None:
    """Add a tool call to the assistant message just before it, or start one (chat wants them together)."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if not last["content"]:
            last["content"] = None  # some servers refuse "" beside tool_calls
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _chat_tool_message(item: JSON, path: str) -> JSON:
    """A chat `tool` message for a function_call_output or custom_tool_call_output item."""
    if not item.get("call_id"):
        raise TranslationError("A tool output item needs a call_id.", f"{path}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
                raise TranslationError("Tool outputs may only hold text for this model.", f"{path}.output[{j}].type")
            texts.append(part.get("text") or "")
        output = "".join(texts)
    elif output is not None and not isinstance(output, str):
        output = json.dumps(output, ensure_ascii=False)
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output or ""}


def _chat_tools(tools: Any, drop: frozenset[str]) -> list[JSON]:
    """Chat function tools for Responses function and custom tools; hosted tools are refused or dropped."""
    if not isinstance(tools, list):
        raise TranslationError("`tools` must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace":
            # A namespace groups function tools; the model sees its members, calls come back with its name.
            out.extend(_chat_tool(member, f"tools[{i}].tools[{j}]") for j, member in enumerate(tool.get("tools") or []))
        elif kind in drop:
            continue
        else:
            out.append(_chat_tool(tool, f"tools[{i}]"))
    return out


def _chat_tool(tool: Any, path: str) -> JSON:
    """A chat function tool for one Responses function or custom tool."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind not in ("function", "custom"):
        raise TranslationError(
            f"Tool type {kind!r} is not supported for this model; only function and custom tools are.", f"{path}.type"
        )
    if not tool.get("name"):
        raise TranslationError("A tool needs a name.", f"{path}.name")
    function: JSON = {"name": tool["name"]}
    if kind == "function":
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
    else:
        function["description"] = _custom_description(tool)
        function["parameters"] = {
            "type": "object",
            "properties": {_CUSTOM_INPUT: {"type": "string"}},
            "required": [_CUSTOM_INPUT],
            "additionalProperties": False,
        }
    return {"type": "function", "function": function}


def _custom_description(tool: JSON) -> str:
    """A custom tool's description, saying how to pass its free-form input and any grammar it follows."""
    lines = [tool["description"]] if tool.get("description") else []
    lines.append(f"Pass the tool's whole free-form input as the string `{_CUSTOM_INPUT}`.")
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar" and fmt.get("definition"):
        # Chat servers cannot constrain decoding to the grammar, so the model is told it instead.
        lines.append(f"The input must follow this {fmt.get('syntax') or ''} grammar:\n{fmt['definition']}")
    return "\n\n".join(lines)


def _chat_tool_choice(choice: Any) -> str | JSON:
    """Chat's tool_choice for a Responses tool_choice."""
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("function", "custom") and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
        return choice["mode"]  # the declared tools are the allowed ones already; few chat servers know the subset
    raise TranslationError(
        'tool_choice must be "auto", "none", "required" or a named function or custom tool.', "tool_choice"
    )


def _response_format(fmt: Any) -> JSON | None:
    """Chat's response_format for Responses text.format."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: JSON = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": schema}
    raise TranslationError(f"text.format type {kind!r} is not supported.", "text.format.type")


# --- Response: chat completion -> Responses ------------------------------------------------------


def usage_to_responses(usage: JSON | None) -> JSON | None:
    """Responses usage for chat usage (prompt_tokens...) or normalized usage (input_tokens...)."""
    if not usage:
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        normalized = openai_usage(usage)
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    else:
        normalized, reasoning = usage, usage.get("reasoning_tokens")
    input_tokens = normalized.get("input_tokens") or 0
    output_tokens = normalized.get("output_tokens") or 0
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": normalized.get("cached_tokens") or 0,
            "cache_write_tokens": normalized.get("cache_write_tokens") or 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning or 0},
        "total_tokens": input_tokens + output_tokens,
    }


def chat_to_response(chat_resp: JSON, *, response_id: str, model: str, request: JSON, created_at: int) -> JSON:
    """A Response object for a whole chat completion; item ids derive from response_id."""
    choice = (chat_resp.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    ids = _ItemIds(response_id)
    status, incomplete = _status(choice.get("finish_reason"))
    output: list[JSON] = []
    reasoning = _reasoning_text(message)
    if reasoning:
        output.append(_reasoning_item(ids.reasoning(), reasoning))
    parts = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(_output_text(message["content"]))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    calls = message.get("tool_calls") or []
    if parts or not (calls or output):
        message_status = "incomplete" if status == "incomplete" else "completed"
        output.append(_message_item(ids.message(), parts or [_output_text("")], message_status))
    declared = declared_tools(request)
    for call in calls:
        output.append(_call_item(call, declared, ids))
    return response_object(
        response_id=response_id,
        model=model,
        request=request,
        created_at=created_at,
        status=status,
        output=output,
        usage=usage_to_responses(chat_resp.get("usage")),
        incomplete_reason=incomplete,
    )


def response_object(
    *,
    response_id: str,
    model: str,
    request: JSON,
    created_at: int,
    status: str,
    output: list[JSON],
    usage: JSON | None = None,
    incomplete_reason: str | None = None,
    error: JSON | None = None,
) -> JSON:
    """A Response object: output and status, and the request's parameters echoed as OpenAI does."""
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(request.get("background")),
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if status == "incomplete" else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [_echo_tool(tool) for tool in request.get("tools") or []],
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def response_items_for_history(stored_request_items: Iterable[JSON], response: JSON) -> list[JSON]:
    """What previous_response_id continues from: the earlier context and input, then the output."""
    return [*stored_request_items, *(response.get("output") or [])]


def _echo_tool(tool: JSON) -> JSON:
    """A declared tool as the Response echoes it (function tools always show parameters and strict)."""
    if tool.get("type") != "function":
        return tool
    return {"parameters": None, "strict": True, **tool}


def _status(finish_reason: str | None) -> tuple[str, str | None]:
    """Response status and incomplete reason for a chat finish_reason."""
    reason = _INCOMPLETE_REASONS.get(finish_reason or "")
    return ("incomplete", reason) if reason else ("completed", None)


def _reasoning_text(message: JSON) -> str:
    """The reasoning a chat upstream sent beside its answer (vLLM, DeepSeek, Ollama; newer vLLM: `reasoning`)."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return message[key]
    return ""


def _reasoning_item(item_id: str, text: str) -> JSON:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def _output_text(text: str) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, content: list[JSON], status: str) -> JSON:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(call: JSON, declared: dict[str, JSON], ids: _ItemIds) -> JSON:
    """A function_call or custom_tool_call item for a chat tool call."""
    if call.get("type") == "custom":  # OpenAI's own chat custom tools
        body = call.get("custom") or {}
        return _custom_item(ids.custom(), call.get("id"), body.get("name"), body.get("input") or "", "completed")
    function = call.get("function") or {}
    name, arguments = function.get("name"), function.get("arguments") or ""
    tool = declared.get(name) or {}
    if tool.get("type") == "custom":
        item = _custom_item(ids.custom(), call.get("id"), name, _custom_input(arguments), "completed")
    else:
        item = _function_item(ids.function(), call.get("id"), name, arguments, "completed")
    return _with_namespace(item, tool)


def _with_namespace(item: JSON, tool: JSON) -> JSON:
    """The call item with its tool's namespace, as the Responses API reports calls to namespaced tools."""
    return {**item, "namespace": tool["_namespace"]} if tool.get("_namespace") else item


def _function_item(item_id: str, call_id: Any, name: Any, arguments: str, status: str) -> JSON:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _custom_item(item_id: str, call_id: Any, name: Any, text: str, status: str) -> JSON:
    item = {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call_id, "name": name}
    return {**item, "input": text}


def _custom_input(arguments: str) -> str:
    """A custom tool's free-form input from the arguments of the function it became; raw text if not ours."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(_CUSTOM_INPUT), str):
        return parsed[_CUSTOM_INPUT]
    return arguments


class _ItemIds:
    """Output item ids derived from the response id, so the same response always has the same ids."""

    def __init__(self, response_id: str) -> None:
        self.base = response_id.removeprefix("resp_")
        self.counts: dict[str, int] = {}

    def _next(self, prefix: str) -> str:
        n = self.counts[prefix] = self.counts.get(prefix, -1) + 1
        return f"{prefix}_{self.base}_{n}"

    def reasoning(self) -> str:
        return self._next("rs")

    def message(self) -> str:
        return self._next("msg")

    def function(self) -> str:
        return self._next("fc")

    def custom(self) -> str:
        return self._next("ctc")


# --- Streaming: chat.completion.chunk -> Responses events ------------------------------------------


class ChatStreamToResponses:
    """Turns chat.completion.chunk dicts into Responses (event, data) pairs, one stream at a time."""

    def __init__(self, response_id: str, model: str, request: JSON, created_at: int) -> None:
        self.response_id = response_id
        self.model = model
        self.request = request
        self.created_at = created_at
        self._ids = _ItemIds(response_id)
        self._declared = declared_tools(request)
        self._seq = 0
        self._started = False
        self._final: JSON | None = None
        self._output: list[JSON] = []  # every item by output_index, in its current state
        self._reasoning: int | None = None  # output_index of the open reasoning item
        self._message: int | None = None  # output_index of the open message item
        self._part: JSON | None = None  # the message's open content part
        self._calls: dict[int, int] = {}  # chat tool_calls index -> output_index
        self._call_ids: dict[int, str] = {}
        self._arguments: dict[int, str] = {}  # output_index -> arguments so far
        self._finish_reason: str | None = None
        self._raw_usage: JSON | None = None

    @property
    def usage(self) -> JSON | None:
        """Usage from the upstream's usage chunk, normalized like `openai_usage`; None until it came."""
        return openai_usage(self._raw_usage) if self._raw_usage else None

    @property
    def response(self) -> JSON:
        """The final Response object once finished or failed, else the response so far."""
        return self._final or self._snapshot("in_progress")

    def start(self) -> list[Event]:
        """response.created and response.in_progress (once)."""
        if self._started:
            return []
        self._started = True
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def feed(self, chunk: JSON) -> list[Event]:
        """The events for one chat chunk (usage-only chunks with empty choices included)."""
        if chunk.get("error"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise UpstreamStreamError(error.get("type") or "api_error", error.get("message") or "Upstream error")
        events = self.start()
        if self._final is not None:
            return events
        if chunk.get("usage"):
            self._raw_usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer
            delta = choice.get("delta") or {}
            reasoning = _reasoning_text(delta)
            if reasoning:
                events += self._reasoning_delta(reasoning)
            for kind, key in (("output_text", "content"), ("refusal", "refusal")):
                if isinstance(delta.get(key), str) and delta[key]:
                    events += self._text_delta(kind, delta[key])
            for call in delta.get("tool_calls") or []:
                events += self._tool_call_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self, usage: JSON | None = None) -> list[Event]:
        """Close every open part and item, then response.completed (or response.incomplete)."""
        events = self.start()
        if self._final is not None:
            return events
        if not self._output:
            events += self._open_message()  # an answer with nothing in it still has an (empty) message
        status, reason = _status(self._finish_reason)
        events += self._close_reasoning() + self._close_message(status)
        for output_index in sorted(self._calls.values()):
            events += self._close_call(output_index)
        self._final = self._snapshot(status, usage_to_responses(usage or self._raw_usage), reason)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return [*events, self._event(kind, response=self._final)]

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """response.failed with the error; items stay as far as they got."""
        events = self.start()
        if self._final is not None:
            return events
        self._final = self._snapshot("failed", usage_to_responses(self._raw_usage))
        self._final["error"] = {"code": code, "message": message}
        return [*events, self._event("response.failed", response=self._final)]

    # -- items

    def _reasoning_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._reasoning is None:
            events += self._close_message("completed")
            self._reasoning = self._add_item({"id": self._ids.reasoning(), "type": "reasoning", "summary": []})
            item = self._output[self._reasoning]
            item["content"] = []  # sent as [] in output_item.added; filled again at done
            events.append(self._item_event("response.output_item.added", self._reasoning))
            part = {"type": "reasoning_text", "text": ""}
            events.append(self._part_event("response.content_part.added", self._reasoning, 0, part=dict(part)))
            item["content"] = [part]
        part = self._output[self._reasoning]["content"][0]
        part["text"] += text
        events.append(self._part_event("response.reasoning_text.delta", self._reasoning, 0, delta=text))
        return events

    def _close_reasoning(self) -> list[Event]:
        if self._reasoning is None:
            return []
        index, self._reasoning = self._reasoning, None
        part = self._output[index]["content"][0]
        return [
            self._part_event("response.reasoning_text.done", index, 0, text=part["text"]),
            self._part_event("response.content_part.done", index, 0, part=dict(part)),
            self._item_event("response.output_item.done", index),
        ]

    def _text_delta(self, kind: str, text: str) -> list[Event]:
        events = self._close_reasoning()
        if self._message is None:
            events += self._open_message()
        content = self._output[self._message]["content"]
        if self._part is None or self._part["type"] != kind:
            events += self._close_part()
            self._part = _output_text("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            content.append(self._part)
            events.append(self._part_event("response.content_part.added", self._message, len(content) - 1,
                                           part=dict(self._part)))
        field = "text" if kind == "output_text" else "refusal"
        self._part[field] += text
        extra = {"logprobs": []} if kind == "output_text" else {}
        name = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        events.append(self._part_event(name, self._message, len(content) - 1, delta=text, **extra))
        return events

    def _open_message(self) -> list[Event]:
        self._message = self._add_item(_message_item(self._ids.message(), [], "in_progress"))
        return [self._item_event("response.output_item.added", self._message)]

    def _close_part(self) -> list[Event]:
        if self._part is None or self._message is None:
            return []
        part, self._part = self._part, None
        index = len(self._output[self._message]["content"]) - 1
        if part["type"] == "output_text":
            done = self._part_event("response.output_text.done", self._message, index, text=part["text"], logprobs=[])
        else:
            done = self._part_event("response.refusal.done", self._message, index, refusal=part["refusal"])
        return [done, self._part_event("response.content_part.done", self._message, index, part=dict(part))]

    def _close_message(self, status: str) -> list[Event]:
        if self._message is None:
            return []
        if not self._output[self._message]["content"]:
            self._part = _output_text("")  # an empty answer still reads as one empty output_text
            self._output[self._message]["content"].append(self._part)
            events = [self._part_event("response.content_part.added", self._message, 0, part=dict(self._part))]
        else:
            events = []
        events += self._close_part()
        index, self._message = self._message, None
        self._output[index]["status"] = "incomplete" if status == "incomplete" else "completed"
        return [*events, self._item_event("response.output_item.done", index)]

    def _tool_call_delta(self, call: JSON) -> list[Event]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        call_id = call.get("id")
        events: list[Event] = []
        # A new index, or (from servers that number every call 0) a new id, starts a new item.
        if position not in self._calls or (call_id and call_id != self._call_ids[position]):
            events += self._close_reasoning() + self._close_message("completed")
            self._call_ids[position] = call_id = call_id or f"call_{self._ids.base}_{len(self._calls)}"
            name = function.get("name") or ""
            tool = self._declared.get(name) or {}
            if tool.get("type") == "custom":
                item = _custom_item(self._ids.custom(), call_id, name, "", "in_progress")
            else:
                item = _function_item(self._ids.function(), call_id, name, "", "in_progress")
            self._calls[position] = self._add_item(_with_namespace(item, tool))
            self._arguments[self._calls[position]] = ""
            events.append(self._item_event("response.output_item.added", self._calls[position]))
        index = self._calls[position]
        arguments = function.get("arguments")
        if arguments:
            self._arguments[index] += arguments
            if self._output[index]["type"] == "function_call":
                self._output[index]["arguments"] += arguments
                events.append(self._event("response.function_call_arguments.delta", item_id=self._output[index]["id"],
                                          output_index=index, delta=arguments))
            # A custom call's arguments are JSON around its input; the input is sent whole when it closes.
        return events

    def _close_call(self, index: int) -> list[Event]:
        item = self._output[index]
        item["status"] = "completed"
        if item["type"] == "function_call":
            done = self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               arguments=item["arguments"], name=item["name"])
            return [done, self._item_event("response.output_item.done", index)]
        item["input"] = _custom_input(self._arguments[index])
        return [
            self._event("response.custom_tool_call_input.delta", item_id=item["id"], output_index=index,
                        delta=item["input"]),
            self._event("response.custom_tool_call_input.done", item_id=item["id"], output_index=index,
                        input=item["input"]),
            self._item_event("response.output_item.done", index),
        ]

    # -- envelopes

    def _add_item(self, item: JSON) -> int:
        self._output.append(item)
        return len(self._output) - 1

    def _snapshot(self, status: str, usage: JSON | None = None, reason: str | None = None) -> JSON:
        output = _copy(self._output)  # the stream goes on changing its items
        return response_object(response_id=self.response_id, model=self.model, request=self.request,
                               created_at=self.created_at, status=status, output=output, usage=usage,
                               incomplete_reason=reason)

    def _event(self, kind: str, **fields: Any) -> Event:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return kind, data

    def _item_event(self, kind: str, index: int) -> Event:
        item = _copy(self._output[index])  # later deltas must not change sent events
        return self._event(kind, output_index=index, item=item)

    def _part_event(self, kind: str, index: int, content_index: int, **fields: Any) -> Event:
        return self._event(kind, item_id=self._output[index]["id"], output_index=index, content_index=content_index,
                           **fields)


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (an orjson round trip is several times cheaper than json's or deepcopy)."""
    return orjson.loads(orjson.dumps(value))
