"""The stored prompt in every message shape: chat messages, completion prompts, Anthropic `system`, Responses
`instructions`. Stored text goes first and byte-stable; the client's own system text is kept, dropped or refused
by the prompt's mode; stored tools come first; stored parameters fill gaps or win when locked."""
from __future__ import annotations

from ..core import prompts as P
from ..core.errors import ErrorCode, GatewayError
from ..providers.anthropic_wire import anthropic_tools
from ..providers.wire_common import TranslationError

# Stored-prompt parameters under their Anthropic names; OpenAI-only ones (penalties, seed...) are not sent.
ANTHROPIC_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
                    "max_completion_tokens": "max_tokens", "stop": "stop_sequences",
                    "stop_sequences": "stop_sequences", "metadata": "metadata", "thinking": "thinking",
                    "tool_choice": "tool_choice"}
# ... and under their Responses names.
RESPONSES_PARAMS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_output_tokens",
                    "max_completion_tokens": "max_output_tokens", "max_output_tokens": "max_output_tokens",
                    "tool_choice": "tool_choice", "parallel_tool_calls": "parallel_tool_calls",
                    "metadata": "metadata"}


def _guard(fn):
    """PromptError and TranslationError become 400s naming the field."""
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (P.PromptError, TranslationError) as exc:
            code = getattr(exc, "code", None) or ErrorCode.INVALID_PROMPT_REQUEST
            raise GatewayError(400, str(exc), param=exc.param, code=code) from None
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _text(call, variables) -> str | None:
    """The stored prompt's text with variables filled; None without a stored prompt."""
    version = call.version
    if version is None:
        if variables is not None:
            raise P.PromptError("`prompt_variables` needs a stored prompt in `model`", "prompt_variables")
        return None
    return P.render(version.text, variables, version.variables)


@_guard
def into_openai(call, body: dict, kind: str, variables=None) -> dict:
    """An OpenAI chat/completion body with the stored prompt, its tools and parameters; the upstream model name."""
    text = _text(call, variables)
    if text is not None:
        if kind == "chat":
            body["messages"] = P.inject_messages(body.get("messages"), text, call.prompt.mode)
            P.merge_tools(body, call.version.tools)
        elif kind == "completion":
            body["prompt"] = P.inject_completion_prompt(body.get("prompt"), text, call.prompt.mode)
        else:
            raise P.PromptError(f"The stored prompt `{call.prompt.slug}` cannot be used with {kind} models.",
                                "model", "prompt_not_supported")
        P.apply_params(body, call.version.params)
    body["model"] = call.model.upstream_model
    return body


@_guard
def into_anthropic(call, body: dict, variables=None) -> dict:
    """A native Anthropic body with the stored prompt as the first `system` block."""
    text = _text(call, variables)
    if text is not None:
        body["system"] = first_system_block(body.get("system"), text, call.prompt.mode)
        body["messages"] = _system_entries(body.get("messages"), call.prompt.mode)
        if call.version.tools:
            P.merge_tools(body, anthropic_tools(call.version.tools))
        P.apply_params(body, renamed(call.version.params, ANTHROPIC_PARAMS))
    body["model"] = call.model.upstream_model
    return body


@_guard
def into_responses(call, body: dict, variables=None) -> dict:
    """A native Responses body with the stored prompt prepended to `instructions`."""
    text = _text(call, variables)
    if text is not None:
        own = body.get("instructions")
        if own and call.prompt.mode == "reject":
            raise P.PromptError("This stored prompt does not allow instructions in the request", "instructions",
                                "system_not_allowed")
        body["instructions"] = text if not own or call.prompt.mode == "replace" else f"{text}\n\n{own}"
        if call.version.tools:
            P.merge_tools(body, [responses_tool(t) for t in call.version.tools])
        P.apply_params(body, renamed(call.version.params, RESPONSES_PARAMS))
    body["model"] = call.model.upstream_model
    return body


def responses_tool(tool: dict) -> dict:
    """A stored chat function tool in the Responses shape (flat name/description/parameters)."""
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict):
        return tool
    return {"type": "function", **fn}


def first_system_block(system, text: str, mode: str) -> list:
    """Stored text as the first system block; the client's system kept, dropped or refused by mode."""
    if mode == "reject" and system:
        raise P.PromptError("This stored prompt does not allow a system prompt in the request", "system",
                            "system_not_allowed")
    first = {"type": "text", "text": text}
    if mode == "replace" or not system:
        return [first]
    if isinstance(system, str):
        return [first, {"type": "text", "text": system}]
    if not isinstance(system, list):
        raise P.PromptError("`system` must be a string or an array of text blocks", "system")
    return [first, *system]


def _system_entries(messages, mode: str):
    """`role: "system"` entries inside Anthropic `messages` (Claude Code sends them) follow the mode too."""
    if not isinstance(messages, list) or mode == "prepend":
        return messages
    if mode == "reject" and any(P.is_system(m) for m in messages):
        raise P.PromptError("This stored prompt does not allow a system prompt in the request", "messages",
                            "system_not_allowed")
    return [m for m in messages if not P.is_system(m)]


def renamed(params, names: dict) -> dict:
    """Stored parameters under another API's names; ones it has no name for are left out."""
    renamed = {}
    for name, spec in (params or {}).items():
        target = names.get(name)
        if target is None or not isinstance(spec, dict) or "value" not in spec:
            continue
        value = spec["value"]
        if target == "stop_sequences" and isinstance(value, str):
            value = [value]
        renamed[target] = {**spec, "value": value}
    return renamed
