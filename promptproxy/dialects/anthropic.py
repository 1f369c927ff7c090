"""The Anthropic Messages dialect: passed through to Anthropic providers, translated to chat for the others."""
from __future__ import annotations

import copy
import re

import orjson

from ..cache.assemble import ChatAssembler, MessageAssembler
from ..core.errors import ErrorCode, GatewayError
from ..core.usage import prompt_tokens
from ..providers import get_adapter
from ..providers.anthropic import BETA_FIELD
from ..proxy import inject
from ..proxy.pipeline import Plan
from ..proxy.resolve import positive_int, stream_flag, validate_messages
from . import anthropic_wire as wire
from .envelopes import anthropic_body, event_name, frame
from .openai import TEXT as CHAT_TEXT

COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", BETA_FIELD)
BETA_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AnthropicDialect:
    """POST /v1/messages for any chat model."""

    name = "anthropic"
    kind = "chat"

    def __init__(self, beta_header: str | None = None):
        self.betas = client_betas(beta_header)

    def validate(self, body: dict) -> None:
        """`messages` present, `stream` a boolean, `max_tokens` positive."""
        validate_messages(body)
        stream_flag(body)
        positive_int(body, "max_tokens")

    def plan(self, gw, call, body: dict) -> Plan:
        """Native for Anthropic providers (stored prompt as the first system block), else translated to chat."""
        variables = body.pop("prompt_variables", None)
        provider = call.model.provider
        cfg = gw.app.config
        if body.get("mcp_servers") is not None and not cfg.get("ANTHROPIC_MCP_SERVERS"):
            raise GatewayError(400, "`mcp_servers` is not enabled on this gateway.", param="mcp_servers",
                               code=ErrorCode.UNSUPPORTED_PARAMETER)
        betas = allowed_betas(self.betas, cfg.get("ANTHROPIC_BETA_ALLOW"))
        if getattr(get_adapter(provider.kind), "native_messages", False):
            # Translating only to check it is well-formed would refuse what Claude accepts (documents, server tools).
            native = inject.into_anthropic(call, unsigned_thinking_dropped(body), variables)
            if native.get("max_tokens") is None and provider.default_max_tokens:
                native["max_tokens"] = provider.default_max_tokens
            if betas:
                native[BETA_FIELD] = betas
            return Plan("messages", native, chat_view(native), native=True)
        chat = inject.into_openai(call, to_chat(body, provider.reasoning_effort), "chat", variables)
        if not provider.stream_usage:
            chat.pop("stream_options", None)  # this server refuses it; usage is then estimated
        return Plan("chat", chat, chat)

    def render(self, call, plan: Plan, out: dict) -> dict:
        """Native answers as they are; chat answers translated back."""
        return out if plan.native else wire.openai_chat_to_anthropic_message(out, model=call.public_model)

    def encoder(self, call, plan: Plan):
        """Native events re-framed, or chat chunks translated into Anthropic's event sequence."""
        if plan.native:
            return PassthroughEncoder()
        return AnthropicEncoder(call.public_model, "msg_" + call.request_id.removeprefix("req_"))

    def text(self, plan: Plan):
        """Native messages and events, or the chat answers they were translated from."""
        return TEXT if plan.native else CHAT_TEXT

    def cacheable(self, streamed: bool) -> bool:
        """Messages, whole or streamed."""
        return True

    def replay(self, call, plan: Plan, answer: dict):
        """A message as the events a stream of it would have sent."""
        encoder = PassthroughEncoder()
        return iter([*(encoder.chunk(event) for event in stream_events(answer)), encoder.done(call)])

    def assembler(self, plan: Plan, limit: int):
        """Native events fold into the message; translated streams are chat chunks until the encoder."""
        return MessageAssembler(limit) if plan.native else ChatAssembler(limit)


class AnthropicCountTokens(AnthropicDialect):
    """POST /v1/messages/count_tokens: counted upstream by Anthropic providers, estimated for the others."""

    def plan(self, gw, call, body: dict) -> Plan:
        """Limits see a one-token answer: counting costs no output."""
        body.pop("stream", None)
        plan = super().plan(gw, call, body)
        view = {**plan.view, "max_tokens": 1, "max_completion_tokens": None}
        if plan.native:
            counted = {key: plan.body[key] for key in COUNT_KEYS if key in plan.body}
            return Plan("count_tokens", counted, view, native=True)
        return Plan("count_tokens", plan.body, view, local={"input_tokens": prompt_tokens(plan.body)})

    def render(self, call, plan: Plan, out: dict) -> dict:
        """The count as it is."""
        return out

    def cacheable(self, streamed: bool) -> bool:
        """Counting is free and quick: never cached."""
        return False


def unsigned_thinking_dropped(body: dict) -> dict:
    """Thinking blocks without a signature (ours, from a chat model's reasoning) left out of a native body.

    A Claude Code session that moved from a chat model to a Claude one sends them back, and Anthropic refuses
    thinking blocks it did not sign.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") == "assistant" and isinstance(content, list):
            message["content"] = [block for block in content if not (
                isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking")
                and not block.get("signature") and not block.get("data"))]
    return body


def chat_view(native: dict) -> dict:
    """A native body in chat shape for estimates: the system prompt as a first message."""
    system = native.get("system")
    if not system:
        return native
    return {**native, "messages": [{"role": "system", "content": system}, *native["messages"]]}


def client_betas(header: str | None) -> str | None:
    """The client's anthropic-beta flags (Claude Code needs them passed on), well-formed names only."""
    names = [n.strip() for n in (header or "").split(",")[:20]]
    names = [n for n in names if BETA_RE.fullmatch(n)]
    return ",".join(names) or None


def allowed_betas(flags: str | None, allow) -> str | None:
    """The client's flags on the allow-list (ANTHROPIC_BETA_ALLOW, comma-separated); the rest dropped silently."""
    if not flags:
        return None
    allowed = {a.strip().lower() for a in (allow.split(",") if isinstance(allow, str) else allow or ()) if a.strip()}
    kept = [flag for flag in flags.split(",") if flag.lower() in allowed]
    return ",".join(kept) or None


def to_chat(body: dict, reasoning_effort: bool) -> dict:
    """The OpenAI chat request for an Anthropic one; what cannot be expressed is a 400 naming the field."""
    try:
        return wire.anthropic_to_openai_chat_request(copy.deepcopy(body), upstream_model=str(body.get("model")),
                                                     reasoning_effort=reasoning_effort)
    except wire.TranslationError as exc:
        raise GatewayError(400, exc.message, param=exc.param, code=ErrorCode.INVALID_REQUEST) from None


class AnthropicEncoder:
    """OpenAI chunks from any upstream -> Anthropic's event sequence (message_start ... message_stop)."""

    def __init__(self, model: str, msg_id: str):
        self.translator = wire.OpenAIStreamToAnthropic(model, msg_id)
        self.pinged = False
        self.failed = False

    def chunk(self, chunk: dict) -> bytes:
        """Events for one OpenAI chunk; a ping follows message_start, as Anthropic's own streams have one."""
        events = self.translator.feed(chunk)
        if not self.pinged and events and events[0][0] == "message_start":
            self.pinged = True
            events.insert(1, ("ping", {"type": "ping"}))
        return frame(events)

    def done(self, call) -> bytes:
        """The closing events (nothing after an error event)."""
        return b"" if self.failed else frame(self.translator.finish())

    def error(self, err: GatewayError) -> bytes:
        """An in-band error event; the stream ends after it."""
        self.failed = True
        return frame([("error", anthropic_body(err))])


class PassthroughEncoder:
    """Native Anthropic events (already dicts with `type`) re-framed unchanged."""

    def chunk(self, event: dict) -> bytes:
        """One event."""
        return frame([(event_name(event.get("type") or "message"), event)])

    def done(self, call) -> bytes:
        """message_stop was the last event relayed."""
        return b""

    def error(self, err: GatewayError) -> bytes:
        """An in-band error event."""
        return frame([("error", anthropic_body(err))])


class AnthropicText:
    """Text, thinking and tool input of native Anthropic messages and stream events."""

    @staticmethod
    def whole(out: dict, into: list[str]) -> None:
        """A message's content blocks."""
        for block in out.get("content") if isinstance(out.get("content"), list) else ():
            if isinstance(block, dict):
                for name in ("text", "thinking"):
                    if isinstance(block.get(name), str):
                        into.append(block[name])
                if block.get("type") == "tool_use":
                    into.append(orjson.dumps(block.get("input")).decode())

    @staticmethod
    def chunk(event: dict, into: list[str]) -> None:
        """text_delta, input_json_delta and thinking_delta events."""
        delta = event.get("delta")
        if isinstance(delta, dict):
            for name in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(name), str):
                    into.append(delta[name])


TEXT = AnthropicText()


def stream_events(answer: dict) -> list[dict]:
    """A whole message as the events that stream it (message_start ... message_stop)."""
    usage = answer.get("usage") or {}
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    events = [{"type": "message_start", "message": start}]
    for index, block in enumerate(answer.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            opened, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block.get("text", "")}
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input", {})).decode()}
        elif kind == "thinking":
            opened, delta = {"type": "thinking", "thinking": ""}, {"type": "thinking_delta",
                                                                    "thinking": block.get("thinking", "")}
        else:
            opened, delta = block, None
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        if delta is not None:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": answer.get("stop_reason"),
                                                      "stop_sequence": answer.get("stop_sequence")},
                   "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    events.append({"type": "message_stop"})
    return events
