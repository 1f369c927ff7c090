"""The OpenAI dialect: chat completions, legacy completions and embeddings, passed through."""
from __future__ import annotations

import time

import orjson

from ..cache.assemble import ChatAssembler
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

    def text(self, plan: Plan) -> OpenAIText:
        """Chat and completion answers."""
        return TEXT

    def cacheable(self, streamed: bool) -> bool:
        """Every kind whole; streams of chat only (the one kind whose chunks fold back into an answer)."""
        return not streamed or self.kind == "chat"

    def replay(self, call, plan: Plan, answer: dict):
        """A chat.completion as the chunks a stream of it would have sent, with usage when the client asked."""
        options = plan.body.get("stream_options")
        encoder = OpenAIEncoder()
        chunks = stream_chunks(answer, isinstance(options, dict) and bool(options.get("include_usage")))
        return iter([*(encoder.chunk(chunk) for chunk in chunks), encoder.done(call)])

    def assembler(self, plan: Plan, limit: int) -> ChatAssembler | None:
        """Chat chunks fold into a chat.completion."""
        return ChatAssembler(limit) if plan.endpoint == "chat" else None


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


class OpenAIText:
    """Text and tool arguments of OpenAI chat and completion answers and chunks."""

    @staticmethod
    def whole(out: dict, into: list[str]) -> None:
        """A chat.completion or text_completion."""
        for choice in out.get("choices") or ():
            if isinstance(choice, dict):
                message = choice.get("message")
                TEXT.chunk({"choices": [{"delta": message}]} if isinstance(message, dict) else {"choices": [choice]},
                           into)

    @staticmethod
    def chunk(chunk: dict, into: list[str]) -> None:
        """A chat.completion.chunk or a completion chunk."""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(text, str):
                into.append(text)
            for tool in (delta.get("tool_calls") or ()) if isinstance(delta, dict) else ():
                function = tool.get("function") if isinstance(tool, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    into.append(function["arguments"])


TEXT = OpenAIText()


def stream_chunks(answer: dict, include_usage: bool) -> list[dict]:
    """A whole chat.completion as the chunks that stream it: per choice, its message, then its finish reason."""
    head = {"id": answer.get("id"), "object": "chat.completion.chunk",
            "created": answer.get("created", int(time.time())), "model": answer.get("model")}
    chunks = []
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        delta = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append({**head, "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": choice.get("index", 0), "delta": {},
                                            "finish_reason": choice.get("finish_reason")}]})
    if include_usage and answer.get("usage"):
        chunks.append({**head, "choices": [], "usage": answer["usage"]})
    return chunks
