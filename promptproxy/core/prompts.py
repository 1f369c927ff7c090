"""Pure system-prompt injection: variables, modes, stored tools and parameters."""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping

VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptError(ValueError):
    """A request that cannot be combined with its stored prompt (400)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_prompt_request"):
        super().__init__(message)
        self.param = param
        self.code = code


def variables_in(text: str) -> list[str]:
    """Names of the {{variables}} in a text, in order of first use."""
    return list(dict.fromkeys(VAR_RE.findall(text)))


def render(text: str, values: Mapping | None, defaults: Mapping | None = None) -> str:
    """Fill {{name}} placeholders in one pass; values are inserted literally, never re-expanded."""
    if values is not None and not isinstance(values, Mapping):
        raise PromptError("`prompt_variables` must be an object", "prompt_variables")
    merged = {**(defaults or {}), **(values or {})}
    missing = [name for name in variables_in(text) if name not in merged]
    if missing:
        raise PromptError(
            f"Missing prompt variable(s): {', '.join(missing)}", "prompt_variables", "missing_prompt_variable"
        )

    def fill(match: re.Match) -> str:
        value = merged[match.group(1)]
        return value if isinstance(value, str) else _scalar(value, match.group(1))

    return VAR_RE.sub(fill, text)


def _scalar(value, name: str) -> str:
    """Numbers and booleans become text; anything else is refused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            return str(value)
        except ValueError:  # an integer beyond Python's int-to-str digit limit
            raise PromptError(f"Prompt variable `{name}` is too long", "prompt_variables") from None
    raise PromptError(f"Prompt variable `{name}` must be a string, number or boolean", "prompt_variables")


def is_system(message) -> bool:
    """A system or developer message."""
    return isinstance(message, dict) and message.get("role") in ("system", "developer")


def inject_messages(messages: list, text: str, mode: str) -> list:
    """Put the stored prompt first; keep, drop or refuse the client's own system messages by mode."""
    if mode == "reject" and any(is_system(m) for m in messages):
        raise PromptError(
            "This stored prompt does not allow a system message in the request", "messages", "system_not_allowed"
        )
    if mode == "replace":
        messages = [m for m in messages if not is_system(m)]
    return [{"role": "system", "content": text}, *messages]


def inject_completion_prompt(prompt, text: str, mode: str):
    """Join the stored text to each prompt string with one blank line."""
    if isinstance(prompt, str):
        return f"{text}\n\n{prompt}"
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return [f"{text}\n\n{p}" for p in prompt]
    raise PromptError("A stored prompt needs `prompt` as a string or an array of strings", "prompt")


# Parameters that mean the same thing: a default for one must not be added next to the other, and a locked
# one must not be escaped by sending the other.
ALIASES = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


def apply_params(body: dict, params: Mapping | None) -> dict:
    """Stored parameters: defaults fill gaps, locked values win over the client's."""
    for name, spec in (params or {}).items():
        if not isinstance(spec, Mapping) or "value" not in spec:
            continue
        alias = ALIASES.get(name)
        if spec.get("locked"):
            body[name] = copy.deepcopy(spec["value"])
            if alias and not (params.get(alias) or {}).get("locked"):
                body.pop(alias, None)
        elif name not in body and (alias is None or alias not in body):
            body[name] = copy.deepcopy(spec["value"])
    return body


def merge_tools(body: dict, stored: list | None) -> dict:
    """Stored tools come first; a client tool with the same function name is refused, others follow."""
    if not stored:
        return body
    client = body.get("tools") or []
    if not isinstance(client, list):
        raise PromptError("`tools` must be an array", "tools")
    names = {_tool_name(t) for t in stored}
    clash = sorted(n for n in (_tool_name(t) for t in client) if n in names)
    if clash:
        raise PromptError(f"Tool(s) already defined by the stored prompt: {', '.join(clash)}", "tools")
    body["tools"] = [*copy.deepcopy(stored), *client]
    return body


def _tool_name(tool) -> str | None:
    if isinstance(tool, dict):
        fn = tool.get("function")
        return fn.get("name") if isinstance(fn, dict) else tool.get("name")
    return None
