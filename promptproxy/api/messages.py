"""POST /v1/messages in Anthropic's format, served by any chat model, and /v1/messages/count_tokens."""
from __future__ import annotations

from flask import request

from ..dialects.anthropic import AnthropicCountTokens, AnthropicDialect
from .routes import bp, serve


@bp.post("/messages")
def messages():
    """Anthropic Messages API: passed through to Anthropic providers, translated for the others."""
    return serve(AnthropicDialect(request.headers.get("anthropic-beta")))


@bp.post("/messages/count_tokens")
def count_tokens():
    """Anthropic providers count upstream; for the others a tiktoken estimate of the prompt as sent."""
    return serve(AnthropicCountTokens(request.headers.get("anthropic-beta")))
