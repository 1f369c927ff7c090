"""POST /v1/messages in Anthropic's format, served by any model, and /v1/messages/count_tokens."""
from __future__ import annotations

import copy
import re

import orjson
from flask import g, request

from ..dialects import anthropic_wire as wire
from ..providers import get_adapter
from ..providers.anthropic import BETA_FIELD
from ..providers.anthropic_wire import anthropic_tools
from ..proxy import prompts as P
from ..proxy import service
from ..proxy.usage import count_tokens as tiktoken_count
from ..proxy.usage import estimate_input
from .auth import authenticate
from .errors import ApiError, anthropic_body
from .routes import bp, gateway, json_body, json_response, start_stream

# Stored-prompt parameters under their Anthropic names; OpenAI-only ones (penalties, seed...) are not sent.
PARAM_NAMES = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "max_tokens": "max_tokens",
               "max_completion_tokens": "max_tokens", "stop": "stop_sequences", "stop_sequences": "stop_sequences",
               "metadata": "metadata", "thinking": "thinking", "tool_choice": "tool_choice"}
COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", BETA_FIELD)
BETA_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@bp.post("/messages")
def messages():
    """Anthropic Messages API: passed through to Anthropic providers, translated for the others."""
    gw, call = gateway(), g.call
    prepared = prepare(gw, call)
    native, chat = prepared["native"], prepared["chat"]
    call.stream = bool(chat.get("stream"))
    admission = gw.limiter.admit(call, chat)
    call.headers.update(admission.headers)
    kind, body = ("messages", native) if native is not None else ("chat", chat)
    if call.stream:
        encoder = (PassthroughEncoder() if native is not None
                   else AnthropicEncoder(service.public_model(call), message_id(call)))
        return start_stream(gw, call, service.stream_events(gw, call, kind, body, encoder), admission)
    try:
        out = service.complete(gw, call, kind, body)
    finally:
        admission.finish(call)
    if native is None:
        out = wire.openai_chat_to_anthropic_message(out, model=service.public_model(call))
    return json_response(out)


@bp.post("/messages/count_tokens")
def count_tokens():
    """Anthropic providers count upstream; for the others a tiktoken estimate of the prompt as sent."""
    gw, call = gateway(), g.call
    prepared = prepare(gw, call)
    native, chat = prepared["native"], prepared["chat"]
    if native is not None:
        body = {key: native[key] for key in COUNT_KEYS if key in native}
        return json_response(service.complete(gw, call, "count_tokens", body))
    total = estimate_input(chat)
    if chat.get("tools"):
        total += tiktoken_count(orjson.dumps(chat["tools"]).decode())
    return json_response({"input_tokens": total})


def prepare(gw, call) -> dict:
    """Authenticate, parse, resolve the model; the body for its provider plus an OpenAI-shaped view for limits."""
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    body = json_body()
    service.validate(body, "chat")  # the checks it makes (messages, stream, max_tokens) hold for both formats
    service.check_routing_keys(body)
    variables = body.pop("prompt_variables", None)
    service.resolve(gw, call, body, "chat")
    provider = call.model.provider
    if getattr(get_adapter(provider.kind), "native_messages", False):
        # Translated only to check it is well-formed would refuse what Claude accepts (documents, server tools).
        if variables is not None and call.version is None:
            raise ApiError(400, "`prompt_variables` needs a stored prompt in `model`", param="prompt_variables",
                           code="invalid_prompt_request")
        native = native_body(call, body, variables, provider.default_max_tokens)
        beta = client_betas(request.headers.get("anthropic-beta"))
        if beta:
            native[BETA_FIELD] = beta
        system = native.get("system")
        view = {**native, "messages": [{"role": "system", "content": system}, *native["messages"]]} if system \
            else native
        return {"chat": view, "native": native}
    chat = to_chat(body)
    if variables is not None:
        chat["prompt_variables"] = variables
    chat = service.build_body(call, chat, "chat")
    if not provider.stream_usage:
        chat.pop("stream_options", None)  # this server refuses it; usage is then estimated
    return {"chat": chat, "native": None}


def client_betas(header: str | None) -> str | None:
    """The client's anthropic-beta flags (Claude Code needs them passed on), well-formed names only."""
    names = [n.strip() for n in (header or "").split(",")[:20]]
    names = [n for n in names if BETA_RE.fullmatch(n)]
    return ",".join(names) or None


def to_chat(body: dict) -> dict:
    """The OpenAI chat request for an Anthropic one; what cannot be expressed is a 400 naming the field."""
    try:
        effort = bool(getattr(g.call.model.provider, "reasoning_effort", False))  # a provider flag, once there is one
        return wire.anthropic_to_openai_chat_request(copy.deepcopy(body), upstream_model=str(body.get("model")),
                                                     reasoning_effort=effort)
    except wire.TranslationError as exc:
        raise ApiError(400, exc.message, param=exc.param, code="invalid_request") from None


def native_body(call, body: dict, variables, default_max_tokens: int | None) -> dict:
    """The client's Anthropic body with the stored prompt first in `system` and the upstream model name."""
    version = call.version
    try:
        if version is not None:
            text = P.render(version.text, variables, version.variables)
            body["system"] = inject_system(body.get("system"), text, call.prompt.mode)
            if version.tools:
                P.merge_tools(body, anthropic_tools(version.tools))
            apply_params(body, version.params)
    except (P.PromptError, wire.TranslationError) as exc:
        raise ApiError(400, str(exc), param=exc.param, code=getattr(exc, "code", "invalid_prompt_request")) from None
    body["model"] = call.model.upstream_model
    if body.get("max_tokens") is None and default_max_tokens:
        body["max_tokens"] = default_max_tokens
    return body


def inject_system(system, text: str, mode: str) -> list:
    """Stored text as the first system block; the client's system kept, dropped or refused by mode."""
    has_own = bool(system)
    if mode == "reject" and has_own:
        raise P.PromptError("This stored prompt does not allow a system prompt in the request", "system",
                            "system_not_allowed")
    first = {"type": "text", "text": text}
    if mode == "replace" or not has_own:
        return [first]
    if isinstance(system, str):
        return [first, {"type": "text", "text": system}]
    if not isinstance(system, list):
        raise P.PromptError("`system` must be a string or an array of text blocks", "system")
    return [first, *system]


def apply_params(body: dict, params) -> None:
    """Stored parameters under their Anthropic names: defaults fill gaps, locked values win."""
    renamed = {}
    for name, spec in (params or {}).items():
        target = PARAM_NAMES.get(name)
        if target is None or not isinstance(spec, dict) or "value" not in spec:
            continue
        value = spec["value"]
        if target == "stop_sequences" and isinstance(value, str):
            value = [value]
        renamed[target] = {**spec, "value": value}
    P.apply_params(body, renamed)


def message_id(call) -> str:
    """An Anthropic-looking message id tied to the request id."""
    return "msg_" + call.request_id.removeprefix("req_")


def frame(events) -> bytes:
    """SSE frames with `event:` lines, as Anthropic sends them."""
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events)


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

    def done(self) -> bytes:
        """The closing events (nothing after an error event)."""
        return b"" if self.failed else frame(self.translator.finish())

    def error(self, err: ApiError) -> bytes:
        """An in-band error event; the stream ends after it."""
        self.failed = True
        return frame([("error", anthropic_body(err))])


class PassthroughEncoder:
    """Native Anthropic events (already dicts with `type`) re-framed unchanged."""

    def chunk(self, event: dict) -> bytes:
        """One event."""
        return frame([(event.get("type") or "message", event)])

    def done(self) -> bytes:
        """message_stop was the last event relayed."""
        return b""

    def error(self, err: ApiError) -> bytes:
        """An in-band error event."""
        return frame([("error", anthropic_body(err))])
