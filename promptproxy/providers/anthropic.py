"""Anthropic Messages API as an upstream: OpenAI chat translated both ways, or native bodies passed through."""
from __future__ import annotations

import orjson

from ..core.catalog import ProviderInfo
from ..core.sse import Event
from . import anthropic_wire as wire
from .anthropic_stream import AnthropicStreamToOpenAI
from .base import StreamOutput, UpstreamRequest, UpstreamText
from .wire_common import UpstreamStreamError, upstream_stream_error

DEFAULT_VERSION = "2023-06-01"
BETA_FIELD = "_anthropic_beta"  # set by /v1/messages from the client's header; never sent as a body field
FALLBACK_MAX_TOKENS = 4096  # only if neither the provider nor the config gives a default
PATHS = {"chat": "/v1/messages", "messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
# Status we answer when an Anthropic stream reports an error after it started (its HTTP status was 200).
STREAM_ERROR_STATUS = {"overloaded_error": 503, "rate_limit_error": 429, "api_error": 502,
                       "invalid_request_error": 400, "timeout_error": 504, "request_too_large": 413}


def base_root(base_url: str) -> str:
    """The host root: the Messages path carries its own /v1, so a configured trailing /v1 is dropped."""
    return base_url.rstrip("/").removesuffix("/v1")


def stream_error(exc: UpstreamStreamError) -> UpstreamText:
    """An error event inside an Anthropic stream as our GatewayError."""
    status = STREAM_ERROR_STATUS.get(exc.error_type, 502)
    _, body = wire.anthropic_error_to_openai(status, {"error": {"type": exc.error_type, "message": exc.message}})
    err = body["error"]
    return UpstreamText(status, exc.message or "The upstream reported an error.", type=err["type"],
                        code=err["code"] or "upstream_error")


def _named_event(event: Event) -> tuple[str, dict] | None:
    """(event name, JSON data) of an upstream event; None for one without data."""
    if event.data is None:
        return None
    data = orjson.loads(event.data)
    if not isinstance(data, dict):
        raise ValueError("stream event is not a JSON object")
    return event.event or data.get("type") or "", data


class AnthropicChatStream:
    """Anthropic events -> OpenAI chat.completion.chunk dicts; the stream ends at message_stop."""

    def __init__(self, public_model: str, include_usage: bool):
        self.inner = AnthropicStreamToOpenAI(public_model, include_usage=include_usage)
        self.usage: dict | None = None

    def feed(self, event: Event) -> StreamOutput:
        """Translate one upstream event."""
        named = _named_event(event)
        if named is None:
            return StreamOutput()
        name, data = named
        try:
            chunks = self.inner.feed(name, data)
        except UpstreamStreamError as exc:
            raise stream_error(exc) from None
        finally:
            self.usage = self.inner.usage if self.inner.usage["input_tokens"] is not None else None
        return StreamOutput(chunks, done=name == "message_stop")


class AnthropicNativeStream:
    """Anthropic events passed through as dicts (model renamed), for /v1/messages clients."""

    def __init__(self, public_model: str):
        self.public_model = public_model
        self._raw_usage: dict = {}
        self.usage: dict | None = None

    def feed(self, event: Event) -> StreamOutput:
        """Relay one upstream event, noting usage; errors raise."""
        named = _named_event(event)
        if named is None:
            return StreamOutput()
        name, data = named
        data.setdefault("type", name)
        if name == "error":
            raise stream_error(upstream_stream_error(data.get("error")))
        if name == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            message["model"] = self.public_model
            self._merge(message.get("usage"))
        elif name == "message_delta":
            self._merge(data.get("usage"))
        return StreamOutput([data], done=name == "message_stop")

    def _merge(self, usage) -> None:
        if isinstance(usage, dict):
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self.usage = wire.anthropic_usage(self._raw_usage)


class AnthropicAdapter:
    """Adapter for kind `anthropic` (api.anthropic.com or anything speaking its Messages API)."""

    kind = "anthropic"
    endpoints = frozenset(PATHS)  # OpenAI chat (translated), native messages and count_tokens
    native_messages = True  # /v1/messages bodies go upstream as they are (endpoint "messages")

    def build(self, provider: ProviderInfo, endpoint: str, body: dict) -> UpstreamRequest:
        """POST to /v1/messages: an OpenAI chat body is translated; "messages"/"count_tokens" are native."""
        if endpoint not in PATHS:
            raise wire.TranslationError(f"Anthropic providers serve chat models only, not {endpoint} models.",
                                        "model")
        if endpoint == "chat":
            max_tokens = provider.default_max_tokens or FALLBACK_MAX_TOKENS
            body = wire.openai_chat_to_anthropic(body, upstream_model=body["model"], default_max_tokens=max_tokens)
        client_beta = body.pop(BETA_FIELD, None) if endpoint != "chat" else None
        headers = {"content-type": "application/json", "anthropic-version": provider.anthropic_version
                   or DEFAULT_VERSION, **provider.headers}
        if client_beta:
            own = [headers.pop(k) for k in list(headers) if k.lower() == "anthropic-beta"]
            headers["anthropic-beta"] = ",".join([*own, client_beta])
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
        if body.get("stream"):
            headers["accept"] = "text/event-stream"
            headers["accept-encoding"] = "identity"
        return UpstreamRequest(base_root(provider.base_url) + PATHS[endpoint], headers, orjson.dumps(body))

    def parse(self, endpoint: str, data: dict, public_model: str) -> tuple[dict, dict | None]:
        """An OpenAI chat.completion (or, native, the message itself renamed) and normalized usage."""
        if endpoint == "count_tokens":
            if not isinstance(data.get("input_tokens"), int):
                raise ValueError("count_tokens response has no `input_tokens`")
            return data, None
        if data.get("type") != "message" or not isinstance(data.get("content"), list):
            raise ValueError("response is not an Anthropic message")
        usage = wire.anthropic_usage(data.get("usage"))
        if endpoint == "messages":
            data["model"] = public_model
            return data, usage
        return wire.anthropic_to_openai_chat(data, model=public_model), usage

    def stream(self, endpoint: str, public_model: str, strip_usage: bool):
        """A translator for Anthropic events (OpenAI chunks, or native events for /v1/messages)."""
        if endpoint == "messages":
            return AnthropicNativeStream(public_model)
        return AnthropicChatStream(public_model, include_usage=not strip_usage)

    def error(self, status: int, data: dict | None) -> tuple[str, str | None, str | None]:
        """Message, OpenAI type and code from an Anthropic error body."""
        _, body = wire.anthropic_error_to_openai(status, data)
        err = body["error"]
        if not (isinstance(data, dict) and isinstance(data.get("error"), dict) and data["error"].get("message")):
            return "", err["type"], err["code"]
        return err["message"], err["type"], err["code"]
