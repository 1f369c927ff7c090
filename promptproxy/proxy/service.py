"""The request path: resolve the model and prompt, build the upstream body, send, relay, record."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import orjson
import requests
from flask import Response
from urllib3.exceptions import HTTPError, ReadTimeoutError

from ..api.errors import ApiError, model_not_found, prompt_not_found
from ..models import utcnow
from ..providers import get_adapter
from ..providers.anthropic_wire import TranslationError
from ..providers.openai import UpstreamStreamError
from . import prompts as P
from . import resilience
from .catalog import ModelInfo, Principal, PromptInfo, PromptVersionInfo
from .grammar import parse_model
from .sse import SSEParser
from .upstream import drain, iter_raw, read_body, set_idle_timeout
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
    request_id: str = field(default_factory=lambda: "req_" + secrets.token_hex(12))
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
    requested: ModelInfo | None = None  # the model the client asked for, when a fallback served it
    strip_usage: bool = False  # we asked the upstream for stream usage the client did not want
    deadline: float | None = None  # perf_counter time by which the whole call must end
    note: str | None = None  # e.g. which fallback served the call and why

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
            "status": self.status, "error_type": self.error_type,
            "error_message": self.error_message or (self.note[:500] if self.note else None),
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
            if kind not in ("chat", "completion"):
                raise P.PromptError(f"The stored prompt `{call.prompt.slug}` cannot be used with {kind} models.",
                                    "model", "prompt_not_supported")
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
def public_model(call: Call) -> str:
    """The model name the client sees: the one it asked for, even when a fallback served it."""
    return (call.requested or call.model).slug


def upstream_body(model: ModelInfo, body: dict, kind: str) -> tuple[dict, bool]:
    """The body for one model: its upstream name, and stream usage requested when the provider allows it."""
    sent = dict(body)
    sent["model"] = model.upstream_model
    strip = False
    provider = model.provider
    if sent.get("stream") and kind in ("chat", "completion") and provider.stream_usage and provider.kind == "openai":
        options = sent.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage")):
            sent["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            strip = True
    elif sent.get("stream") and provider.kind != "openai":  # translating adapters always know usage
        options = sent.get("stream_options")
        strip = not (isinstance(options, dict) and options.get("include_usage"))
    return sent, strip


def _supports(kind: str):
    def check(model: ModelInfo) -> bool:
        try:
            return kind in get_adapter(model.provider.kind).endpoints and not model.provider.broken
        except KeyError:
            return False
    return check


def open_upstream(gw, call: Call, kind: str, body: dict):
    """Send to the model, retrying and then falling back; returns (adapter, response) with a 2xx status.

    On success call.model is the model that served (call.requested keeps the one asked for). Raises ApiError.
    """
    primary = call.requested or call.model
    if call.deadline is None:
        call.deadline = call.t0 + primary.provider.total_timeout
    models = resilience.candidates(gw, primary, kind, _supports(kind))

    def attempt(model: ModelInfo, remaining: float):
        return _attempt(gw, model, kind, body, remaining)

    if not models:
        if not primary.provider.broken and kind not in get_adapter(primary.provider.kind).endpoints:
            raise ApiError(400, f"The model `{primary.slug}` cannot serve this endpoint.", param="model",
                           code="unsupported_for_provider")
        raise ApiError(502, "This provider's stored secret cannot be used; an administrator must re-enter it.",
                       code="provider_misconfigured", type="server_error")
    model, (adapter, resp, headers, strip), failures = resilience.send_with_fallbacks(
        gw, models, call.deadline, attempt)
    for name, value in headers.items():
        # Our own limit headers win; the upstream's same-named ones stay visible as x-upstream-*.
        call.headers["x-upstream-" + name[2:] if name in call.headers and name.startswith("x-") else name] = value
    call.strip_usage = strip
    if model.id != primary.id:
        call.requested, call.model = primary, model
        tried = ", ".join(f"{slug} {kind}" for slug, kind in failures)
        call.note = f"served by fallback `{model.slug}` after: {tried}"
    return adapter, resp


def _attempt(gw, model: ModelInfo, kind: str, body: dict, remaining: float):
    """One upstream request; ApiErrors carry `fault` (and `upstream_status`, `retry_after`) for the retry loop."""
    provider = model.provider
    adapter = get_adapter(provider.kind)
    sent, strip = upstream_body(model, body, kind)
    try:
        req = adapter.build(provider, kind, sent)
    except TranslationError as exc:  # a request the provider's wire format cannot express
        raise ApiError(400, exc.message, param=exc.param, code="unsupported_for_provider") from None
    resp = gw.upstreams.send(provider, req, min(provider.first_byte_timeout, remaining),
                             min(provider.connect_timeout, remaining))
    headers = upstream_headers(resp)
    if resp.status_code >= 300:
        try:
            raw = read_body(resp, 1024 * 1024)
        except (ApiError, HTTPError, OSError, requests.RequestException):
            raw = b""
        finally:
            resp.close()
        if 300 <= resp.status_code < 400:
            err = ApiError(502, "The upstream answered with a redirect, which the gateway does not follow.",
                           code="bad_upstream_response", type="server_error")
            err.fault = "bad"
        else:
            err = upstream_error(adapter, provider, resp.status_code, raw)
            err.fault, err.upstream_status = "status", resp.status_code
            err.retry_after = resilience.parse_retry_after(resp.headers)
        err.headers = {**headers, **err.headers}
        raise err
    if sent.get("stream") and not _is_event_stream(resp):
        resp.close()
        err = ApiError(502, "The upstream answered a streaming request without an event stream.",
                       code="bad_upstream_response", type="server_error")
        err.fault = "bad"
        raise err
    return adapter, resp, headers, strip


def _is_event_stream(resp: requests.Response) -> bool:
    return resp.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


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
        out, usage = adapter.parse(kind, data, public_model(call))
    except (ValueError, KeyError, TypeError):
        raise ApiError(502, "The upstream sent a response the gateway could not understand.",
                       code="bad_upstream_response", type="server_error") from None
    call.usage = usage
    call.cost = cost(call.model, usage)
    if gw.log_bodies:
        call.response_body = raw.decode("utf-8", "replace")
    return out


def stream_events(gw, call: Call, kind: str, body: dict, encoder):
    """Generator of encoded bytes for a streamed call; raises ApiError only before its first byte.

    `encoder` frames the client's dialect: chunk(dict) -> bytes, done() -> bytes, error(ApiError) -> bytes.
    """
    adapter, resp = open_upstream(gw, call, kind, body)
    provider = call.model.provider
    translator = adapter.stream(kind, public_model(call), call.strip_usage)
    deadline = call.deadline or call.t0 + provider.total_timeout
    # Later reads wait at most the idle gap (and never past the overall deadline).
    set_idle_timeout(resp, max(min(provider.idle_timeout, deadline - time.perf_counter()), 0.001))
    parser = SSEParser()
    sent = False
    received = 0
    text_out: list[str] = []
    try:
        for raw in iter_raw(resp):
            received += len(raw)
            if received > gw.max_response_bytes:
                raise ApiError(502, "The upstream stream exceeded the gateway's response size limit.",
                               code="bad_upstream_response", type="server_error")
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
                    drain(resp)
                    return
                if event.comment is not None and sent:
                    yield b": " + event.comment.encode() + b"\n\n"
            left = deadline - time.perf_counter()
            if left <= 0:
                raise ApiError(504, "The upstream stream exceeded the total time limit.",
                               code="upstream_timeout", type="server_error")
            if left < provider.idle_timeout:  # near the end, the next read may only wait until the deadline
                set_idle_timeout(resp, left)
        raise ApiError(502, "The upstream ended the stream before it was complete.", code="upstream_disconnect",
                       type="server_error")
    except GeneratorExit:
        call.status, call.error_type, call.error_message = 499, "client_disconnected", "Client closed the stream."
        raise
    except Exception as exc:
        err = _stream_error(exc, provider, deadline)
        call.fail(err)
        gw.breakers.failure(provider, err.kind)
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


def _stream_error(exc: Exception, provider, deadline: float) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    timed_out = isinstance(exc, ReadTimeoutError | TimeoutError | requests.exceptions.Timeout)
    if timed_out and time.perf_counter() >= deadline - 0.01:  # the read wait was cut to the deadline
        return ApiError(504, "The upstream stream exceeded the total time limit.", code="upstream_timeout",
                        type="server_error")
    if isinstance(exc, UpstreamStreamError):
        return ApiError(502, scrub(str(exc), provider) or "The upstream reported an error mid-stream.",
                        code="upstream_error", type="server_error")
    if timed_out:
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
        for call in (delta.get("tool_calls") or ()) if isinstance(delta, dict) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                out.append(function["arguments"])


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
