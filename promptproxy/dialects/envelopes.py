"""The error envelopes of the inbound dialects, for error responses and in-band stream errors."""
from __future__ import annotations

import re

import orjson

from ..core.errors import ErrorCode, GatewayError

# An upstream's `type` becomes an SSE `event:` name in native passthrough: newlines there would let the
# upstream forge frames (a fake message_stop), so only plain names are relayed.
EVENT_NAME = re.compile(r"[a-z0-9_.]{1,64}")

ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 415: "invalid_request_error",
    429: "rate_limit_error", 431: "request_too_large", 500: "api_error", 502: "api_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
}


def openai_body(err: GatewayError) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def anthropic_body(err: GatewayError) -> dict:
    """The Anthropic error object."""
    kind = ANTHROPIC_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def event_name(value) -> str:
    """An upstream event type usable as an SSE event name; anything else ends the stream with an error."""
    if isinstance(value, str) and EVENT_NAME.fullmatch(value):
        return value
    raise GatewayError(502, "The upstream sent an event with an invalid name.",
                       code=ErrorCode.BAD_UPSTREAM_RESPONSE, type="server_error")


def frame(events) -> bytes:
    """SSE frames with `event:` lines (Anthropic's and the Responses API's framing) for (name, data) pairs."""
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events)
