"""Error envelopes at the edge: OpenAI's on OpenAI routes, Anthropic's on /v1/messages."""
from __future__ import annotations

import orjson
from flask import Response

from ..core.errors import GatewayError
from ..dialects.envelopes import anthropic_body, openai_body


def error_response(err: GatewayError, dialect: str = "openai") -> Response:
    """Render a GatewayError as JSON in the caller's dialect."""
    body = anthropic_body(err) if dialect == "anthropic" else openai_body(err)
    resp = Response(orjson.dumps(body), status=err.status, mimetype="application/json")
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp
