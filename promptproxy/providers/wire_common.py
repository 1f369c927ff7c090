"""What both Anthropic translations share: errors, stop-reason maps and small JSON helpers."""

from __future__ import annotations

import json
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


def anthropic_error_type_for_status(status: int) -> str:
    """Anthropic's error type for an HTTP status (other 4xx: invalid_request_error, 5xx: api_error)."""
    if status in _ANTHROPIC_ERROR_TYPES:
        return _ANTHROPIC_ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def upstream_stream_error(error: Any) -> UpstreamStreamError:
    """The exception for an error object received inside a stream."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    kind = error.get("type")  # looked up in tables of names: anything but a string is an unknown kind
    return UpstreamStreamError(kind if isinstance(kind, str) and kind else "api_error",
                               error.get("message") or "Upstream error")


def parse_arguments(arguments: Any, path: str) -> JSON:
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


def dump_json(value: Any) -> str:
    """JSON text for tool arguments (non-ASCII kept as is); None becomes {}."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def as_int(value: Any) -> int | None:
    """The value if it is an int (bools are not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
