"""The request path: resolve the model and prompt, build the upstream body, send, relay, record."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import orjson
import requests
from flask import Response
from urllib3.exceptions import HTTPError, ReadTimeoutError

from ..api.errors import ApiError, model_not_found, prompt_not_found
from ..models import utcnow
from ..providers import get_adapter
from . import prompts as P
from .catalog import ModelInfo, Principal, PromptInfo, PromptVersionInfo
from .grammar import parse_model
from .sse import SSEParser
from .upstream import iter_raw, read_body, set_idle_timeout
from .usage import cost, estimate_input

ENDPOINT_KIND = {"chat": "chat", "completion": "completion", "embedding": "embedding"}
# Body keys that could steer an upstream (another gateway, a proxy) to a host of the client's choosing.
ROUTING_KEYS = frozenset({"api_base", "base_url", "api_key", "user_config", "extra_headers", "extra_body",
                          "custom_host", "api_version", "azure_endpoint", "organization"})
SCHEMA_KEYS = frozenset({"tools", "functions", "response_format", "parameters", "input_schema"})


@dataclass(slots=True)
class Call:
    """Everything known about one request; becomes its RequestLog row."""

    endpoint: str
    inbound: str = "openai"
    request_id: str = field(default_factory=lambda: "req_" + uuid.uuid4().hex[:24])
    t0: float = field(default_factory=time.perf_counter)
    created_at: object = field(default_factory=utcnow)
    client_ip: str | None = None
    principal: Principal | None = None
    model_name: str | None = None
    model: ModelInfo | None = None
    prompt: PromptInfo | None = None
    version: PromptVersionInfo | None = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    usage: dict | None = None
    usage_estimated: bool = False
    cost: float | None = None
    ttft_ms: float | None = None
    request_body: str | None = None
    response_body: str | None = None
    headers: dict = field(default_factory=dict)  # extra response headers (rate limits, upstream limits)
    recorded: bool = False

    def fail(self, err: ApiError) -> None:
        """Note an error outcome."""
        self.status = err.status
        self.error_type = err.kind
        self.error_message = err.message[:500]

    def row(self) -> dict:
        """The RequestLog row for this call."""
        usage = self.usage or {}
        model = self.model
        return {
            "request_id": self.request_id, "created_at": self.created_at,
            "user_id": self.principal.user_id if self.principal else None,
            "key_id": self.principal.key_id if self.principal else None,
            "model": (model.slug if model else self.model_name), "model_id": model.id if model else None,
            "upstream_model": model.upstream_model if model else None,
            "provider_id": model.provider.id if model else None,
            "prompt": self.prompt.slug if self.prompt else None,
            "prompt_version": self.version.version if self.version else None,
            "endpoint": self.endpoint, "inbound_format": self.inbound, "stream": self.stream,
            "status": self.status, "error_type": self.error_type, "error_message": self.error_message,
            "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
            "cached_tokens": usage.get("cached_tokens"), "cache_write_tokens": usage.get("cache_write_tokens"),
            "usage_estimated": self.usage_estimated, "cost": self.cost,
            "latency_ms": round((time.perf_counter() - self.t0) * 1000, 3), "ttft_ms": self.ttft_ms,
            "client_ip": self.client_ip, "request_body": self.request_body, "response_body": self.response_body,
        }


# -- resolution ------------------------------------------------------------------------------------
def resolve(gw, call: Call, body: dict, kind: str) -> None:
    """Fill call.model, call.prompt and call.version from the `model` field, enforcing access."""
    raw = body.get("model")
    if not isinstance(raw, str) or not raw:
        raise ApiError(400, "You must provide a model parameter.", param="model", code="missing_model")
    call.model_name = raw
    try:
        ref = parse_model(raw)
    except ValueError as exc:
        raise ApiError(400, f"Invalid `model` value: {exc}.", param="model", code="invalid_model") from None
    principal = call.principal
    model = gw.catalog.model(ref.model)
    if model is None or not principal.may_use_model(model.slug):
        raise model_not_found(ref.model)
    call.model = model
    if model.kind != kind:
        raise ApiError(400, f"The model `{model.slug}` is a {model.kind} model and cannot serve this endpoint.",
                       param="model", code="wrong_model_kind")
    if ref.prompt is None:
        return
    prompt = gw.catalog.prompt(ref.prompt)
    if prompt is None or not principal.may_use_prompt(prompt.slug):
        raise prompt_not_found(ref.prompt)
    call.prompt = prompt
    number = prompt.live if ref.version is None else _version_number(prompt, ref.version)
    version = gw.catalog.version(prompt, number) if number else None
    if version is None:
        raise prompt_not_found(f"{ref.prompt}@{ref.version}")
    call.version = version


def _version_number(prompt: PromptInfo, ref: str) -> int | None:
    if ref.isdigit():
        return int(ref)
    return prompt.labels.get(ref)


def check_routing_keys(value, path: str = "") -> None:
    """Refuse fields that could choose the upstream host, at any depth (JSON schemas excepted)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ROUTING_KEYS:
                raise ApiError(400, f"Unsupported parameter: `{path}{key}` cannot be set by clients.",
                               param=f"{path}{key}", code="unsupported_parameter")
            if key not in SCHEMA_KEYS and isinstance(item, dict | list):
                check_routing_keys(item, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                check_routing_keys(item, path)


def build_body(call: Call, body: dict, kind: str) -> dict:
    """The OpenAI-shaped upstream body: stored prompt injected, model renamed, the rest untouched."""
    variables = body.pop("prompt_variables", None)
    version = call.version
    try:
        if version is not None:
            text = P.render(version.text, variables, version.variables)
            if kind == "chat":
                messages = body.get("messages")
                body["messages"] = P.inject_messages(messages, text, call.prompt.mode)
                P.merge_tools(body, version.tools)
            elif kind == "completion":
                body["prompt"] = P.inject_completion_prompt(body.get("prompt"), text, call.prompt.mode)
            P.apply_params(body, version.params)
        elif variables is not None:
            raise P.PromptError("`prompt_variables` needs a stored prompt in `model`", "prompt_variables")
    except P.PromptError as exc:
        raise ApiError(400, str(exc), param=exc.param, code=exc.code) from None
    body["model"] = call.model.upstream_model
    return body


def validate(body: dict, kind: str) -> None:
    """The few checks the gateway itself needs; everything else is the upstream's to judge."""
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "`messages` must be a non-empty array.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ApiError(400, f"`messages[{i}]` must be an object with a `role`.", param=f"messages.{i}")
    elif kind == "completion":
        if "prompt" not in body:
            raise ApiError(400, "You must provide a `prompt`.", param="prompt")
    elif kind == "embedding" and "input" not in body:
        raise ApiError(400, "You must provide an `input`.", param="input")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, "`stream` must be a boolean.", param="stream")
    if kind == "embedding" and stream:
        raise ApiError(400, "Embeddings cannot be streamed.", param="stream")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ApiError(400, f"`{name}` must be a positive integer.", param=name)


# -- upstream errors -------------------------------------------------------------------------------
def upstream_error(adapter, provider, status: int, raw: bytes) -> ApiError:
    """An upstream 4xx/5xx in our envelope with its status; auth failures become 502."""
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    message, typ, code = adapter.error(status, data)
    if status in (401, 403):
        return ApiError(502, "The upstream rejected the gateway's credentials for this provider.",
                        code="upstream_auth_failed", type="server_error")
    message = scrub(message, provider) or f"The upstream answered HTTP {status}."
    if status == 529:
        return ApiError(503, message, code="overloaded", type="overloaded_error")
    return ApiError(status if 400 <= status <= 599 else 502, message, type=typ, code=code or "upstream_error")


def scrub(text: str, provider) -> str:
    """Remove the provider's secrets (key, extra header values) and address from an upstream message."""
    text = (text or "")[:1000]
    # Extra headers are stored encrypted because they often carry credentials; very short values are skipped
    # so that a header like `X-Flag: 1` does not blank every digit.
    headers = [str(v) for v in (provider.headers or {}).values() if len(str(v)) >= 8]
    for secret in (provider.api_key, provider.base_url, *headers):
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


PASS_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "retry-after", "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining")


def upstream_headers(resp: requests.Response) -> dict:
    """Upstream rate-limit headers to pass on (upstream-prefixed where our own limits use the name)."""
    return {name: resp.headers[name] for name in PASS_HEADERS if name in resp.headers}


# -- sending ---------------------------------------------------------------------------------------
def open_upstream(gw, call: Call, kind: str, body: dict):
    """Send to the model's provider; returns (adapter, response) with a 2xx status, else raises ApiError."""
    model = call.model
    provider = model.provider
    if provider.broken:
        raise ApiError(502, "This provider's stored secret cannot be used; an administrator must re-enter it.",
                       code="provider_misconfigured", type="server_error")
    adapter = get_adapter(provider.kind)
    req = adapter.build(provider, kind, body)
    resp = gw.upstreams.send(provider, req, provider.first_byte_timeout)
    call.headers.update(upstream_headers(resp))
    if resp.status_code >= 300:
        try:
            raw = read_body(resp, 1024 * 1024)
        except (ApiError, HTTPError, OSError, requests.RequestException):
            raw = b""
        finally:
            resp.close()
        if 300 <= resp.status_code < 400:
            raise ApiError(502, "The upstream answered with a redirect, which the gateway does not follow.",
                           code="bad_upstream_response", type="server_error")
        raise upstream_error(adapter, provider, resp.status_code, raw)
    return adapter, resp


def complete(gw, call: Call, kind: str, body: dict) -> dict:
    """A non-streamed call: the OpenAI-shaped response body."""
    adapter, resp = open_upstream(gw, call, kind, body)
    try:
        raw = read_body(resp, gw.max_response_bytes)
    except (ReadTimeoutError, TimeoutError, requests.exceptions.ReadTimeout):
        raise ApiError(504, "The upstream did not answer in time.", code="upstream_timeout",
                       type="server_error") from None
    except (HTTPError, OSError, requests.RequestException):
        raise ApiError(502, "The upstream connection failed mid-response.", code="upstream_disconnect",
                       type="server_error") from None
    finally:
        resp.close()
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        out, usage = adapter.parse(kind, data, call.model.slug)
    except (ValueError, KeyError, TypeError):
        raise ApiError(502, "The upstream sent a response the gateway could not understand.",
                       code="bad_upstream_response", type="server_error") from None
    call.usage = usage
    call.cost = cost(call.model, usage)
    if gw.log_bodies:
        call.response_body = raw.decode("utf-8", "replace")
    return out


def stream_events(gw, call: Call, kind: str, body: dict, encoder):
    """Generator of encoded bytes for a streamed call; raises ApiError only before its first byte."""
    strip_usage = False
    if call.model.provider.stream_usage and call.model.provider.kind == "openai":
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage")):
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            strip_usage = True
    adapter, resp = open_upstream(gw, call, kind, body)
    provider = call.model.provider
    translator = adapter.stream(kind, call.model.slug, strip_usage)
    set_idle_timeout(resp, provider.idle_timeout)
    deadline = call.t0 + provider.total_timeout
    parser = SSEParser()
    sent = False
    text_out: list[str] = []
    try:
        for raw in iter_raw(resp):
            for event in parser.feed(raw):
                out = translator.feed(event)
                for chunk in out.chunks:
                    _collect_text(chunk, text_out)
                    if call.ttft_ms is None:
                        call.ttft_ms = round((time.perf_counter() - call.t0) * 1000, 3)
                    sent = True
                    yield encoder.chunk(chunk)
                if out.done:
                    yield encoder.done()
                    return
                if event.comment is not None and sent:
                    yield b": " + event.comment.encode() + b"\n\n"
            if time.perf_counter() > deadline:
                raise ApiError(504, "The upstream stream exceeded the total time limit.",
                               code="upstream_timeout", type="server_error")
        raise ApiError(502, "The upstream ended the stream early.", code="upstream_disconnect",
                       type="server_error")
    except GeneratorExit:
        call.status, call.error_type, call.error_message = 499, "client_disconnected", "Client closed the stream."
        raise
    except Exception as exc:
        err = _stream_error(exc)
        call.fail(err)
        if not sent:
            raise err from None
        yield encoder.error(err)
        yield encoder.done()
    finally:
        resp.close()
        if call.usage is None and translator.usage is not None:
            call.usage = translator.usage
        if call.usage is None or call.usage.get("output_tokens") is None:
            call.usage = _estimate(body, text_out, call.usage)
            call.usage_estimated = True
        call.cost = cost(call.model, call.usage)


def _stream_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ReadTimeoutError | TimeoutError | requests.exceptions.Timeout):
        return ApiError(504, "The upstream stopped sending in the middle of the stream.", code="upstream_timeout",
                        type="server_error")
    if isinstance(exc, HTTPError | requests.RequestException | OSError):
        return ApiError(502, "The upstream connection failed in the middle of the stream.",
                        code="upstream_disconnect", type="server_error")
    return ApiError(502, "The upstream sent a stream the gateway could not understand.",
                    code="bad_upstream_response", type="server_error")


def _collect_text(chunk: dict, out: list[str]) -> None:
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str):
            out.append(text)


def _estimate(body: dict, text_out: list[str], usage: dict | None) -> dict:
    from .usage import count_tokens

    usage = dict(usage or {})
    if usage.get("input_tokens") is None:
        usage["input_tokens"] = estimate_input(body)
    usage["output_tokens"] = count_tokens("".join(text_out))
    return usage


class OpenAIEncoder:
    """SSE framing in OpenAI's dialect."""

    def chunk(self, chunk: dict) -> bytes:
        """One data event."""
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def done(self) -> bytes:
        """The end marker."""
        return b"data: [DONE]\n\n"

    def error(self, err: ApiError) -> bytes:
        """An in-band error event."""
        return b"data: " + orjson.dumps({"error": {"message": err.message, "type": err.type, "param": None,
                                                   "code": err.code}}) + b"\n\n"


def stream_response(gen, headers: dict) -> Response:
    """A streaming response that waitress flushes event by event."""
    resp = Response(gen, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    for name, value in headers.items():
        resp.headers[name] = value
    return resp
