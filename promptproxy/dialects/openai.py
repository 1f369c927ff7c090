"""The OpenAI dialect: chat completions, legacy completions and embeddings, passed through."""
from __future__ import annotations

import orjson

from ..core.errors import GatewayError
from ..proxy import inject
from ..proxy.pipeline import Plan
from ..proxy.resolve import positive_int, stream_flag, validate_messages


class OpenAIDialect:
    """Bodies go upstream as they came (stored prompt injected, model renamed); answers come back as they are."""

    name = "openai"

    def __init__(self, kind: str):
        self.kind = kind

    def validate(self, body: dict) -> None:
        """The few checks the gateway itself needs; everything else is the upstream's to judge."""
        if self.kind == "chat":
            validate_messages(body)
        elif self.kind == "completion" and "prompt" not in body:
            raise GatewayError(400, "You must provide a `prompt`.", param="prompt")
        elif self.kind == "embedding" and "input" not in body:
            raise GatewayError(400, "You must provide an `input`.", param="input")
        if stream_flag(body) and self.kind == "embedding":
            raise GatewayError(400, "Embeddings cannot be streamed.", param="stream")
        positive_int(body, "max_tokens", "max_completion_tokens")

    def plan(self, gw, call, body: dict) -> Plan:
        """The body with the stored prompt injected."""
        variables = body.pop("prompt_variables", None)
        body = inject.into_openai(call, body, self.kind, variables)
        return Plan(self.kind, body, body)

    def render(self, call, plan: Plan, out: dict) -> dict:
        """Already OpenAI-shaped."""
        return out

    def encoder(self, call, plan: Plan) -> OpenAIEncoder:
        """OpenAI's `data:` framing."""
        return OpenAIEncoder()


class OpenAIEncoder:
    """SSE framing in OpenAI's dialect."""

    def chunk(self, chunk: dict) -> bytes:
        """One data event."""
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def done(self, call) -> bytes:
        """The end marker."""
        return b"data: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        """An in-band error event."""
        return b"data: " + orjson.dumps({"error": {"message": err.message, "type": err.type, "param": None,
                                                   "code": err.code}}) + b"\n\n"
