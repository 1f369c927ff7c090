"""Sending one planned call upstream: retries and fallbacks, the whole answer, or the relayed stream."""
from __future__ import annotations

import re
import time

import orjson
from urllib3.exceptions import HTTPError, ReadTimeoutError

from ..core.catalog import ModelInfo
from ..core.errors import ErrorCode, Fault, GatewayError, UpstreamError
from ..core.sse import SSEParser
from ..core.usage import cost, count_tokens, estimate_input
from ..providers import get_adapter
from ..providers.base import UpstreamText
from ..providers.openai import UpstreamStreamError
from ..providers.wire_common import TranslationError
from ..providers.wire_common import UpstreamStreamError as WireStreamError
from ..routing import resilience, route
from ..transport.upstream import UpstreamResponse, drain, iter_raw, read_body, set_idle_timeout

PASS_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "retry-after", "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining")
OPENAI_STREAMING = ("chat", "completion")


# -- upstream errors -------------------------------------------------------------------------------
IDENTIFIER = re.compile(r"[a-z0-9_.-]{1,64}")
# Fields in which an upstream reports an error inside a 200 answer or event: Responses `error` and
# `incomplete_details` (top level, or in an event's `response` snapshot), an OpenAI chunk's `error`.
REPORTS = ("error", "incomplete_details")
# Inside them: words are scrubbed; names are kept only if short identifiers, else the gateway's own (None: dropped).
REPORT_WORDS = ("message", "param")
REPORT_NAMES = {"type": "server_error", "code": ErrorCode.UPSTREAM_ERROR.value, "reason": None}


def upstream_error(adapter, provider, status: int, raw: bytes, retry_after: float | None,
                   headers: dict | None = None) -> UpstreamError:
    """An upstream 4xx/5xx in our terms with its status; auth failures become 502."""
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    message, typ, code = adapter.error(status, data)
    # vLLM and llama.cpp send `"code": 400`, some servers objects, a hostile one its key: see `identifier`.
    typ, code = identifier(typ, provider), identifier(code, provider)
    fault = {"fault": Fault.STATUS, "upstream_status": status, "retry_after": retry_after, "headers": headers}
    if status in (401, 403):
        return UpstreamError(502, "The upstream rejected the gateway's credentials for this provider.",
                             code=ErrorCode.UPSTREAM_AUTH_FAILED, **fault)
    message = scrub(message, provider) or f"The upstream answered HTTP {status}."
    if status == 529:
        return UpstreamError(503, message, code=ErrorCode.OVERLOADED, type="overloaded_error", **fault)
    return UpstreamError(status if 400 <= status <= 599 else 502, message, type=typ,
                         code=code or ErrorCode.UPSTREAM_ERROR, **fault)


def in_band_error(err: GatewayError, provider) -> GatewayError:
    """An error an upstream reported inside its answer, rebuilt from scrubbed parts (see `identifier`)."""
    return GatewayError(err.status, scrub(err.message, provider) or "The upstream reported an error.",
                        type=identifier(err.type, provider), code=identifier(err.code, provider)
                        or ErrorCode.UPSTREAM_ERROR)


def identifier(value, provider) -> str | None:
    """An upstream error type or code, scrubbed, if it is a short identifier (`[a-z0-9_.-]{1,64}`); else None.

    Our codes and types are short strings: an integer code (vLLM's 400) is kept as text; an object, a sentence
    or anything that held a secret (now `[redacted]`) is not an identifier and gives way to the gateway's own.
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    text = scrub(_as_text(value), provider)
    return text if IDENTIFIER.fullmatch(text) else None


def scrub_reports(obj: dict, provider) -> dict:
    """An answer or event with every error the upstream reported inside it made safe, in place (REPORTS)."""
    for holder in (obj, obj.get("response")):
        if isinstance(holder, dict):
            for name in REPORTS:
                if holder.get(name):
                    holder[name] = _safe_report(holder[name], provider)
    return obj


def _safe_report(report, provider):
    """One reported error rebuilt from the fields we know (others are dropped: nobody knows what they carry)."""
    if not isinstance(report, dict):
        return scrub(_as_text(report), provider)
    out = {}
    for name, value in report.items():
        if name in REPORT_WORDS:
            out[name] = None if value is None else scrub(_as_text(value), provider)
        elif name in REPORT_NAMES:
            out[name] = None if value is None else identifier(value, provider) or REPORT_NAMES[name]
    return out


def _as_text(value) -> str:
    """A JSON value as text: strings as they are, anything else as its JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


SCRUB_LIMIT = 1000  # characters of upstream text kept, after redaction
SCRUB_SCAN = 16_000  # characters looked at (bounds the work on a huge upstream message)
PARTIAL = 8  # a run of this many characters of a secret is redacted wherever it appears
REDACTED = "[redacted]"


def scrub(text: str, provider, limit: int | None = SCRUB_LIMIT) -> str:
    """Upstream text made safe to show: secrets redacted first, then truncated.

    The provider's key and extra header values are redacted case-insensitively, and so is any run of 8 or
    more of their characters (a key cut or re-cased by the upstream); its base URL is redacted whole.
    Every path that carries upstream text to a client or the request log goes through here (MCP servers too:
    their `url` is their base URL). `limit=None` keeps the whole text (an MCP result the client needs whole).
    """
    text = str(text or "")
    if limit is not None:
        text = text[:SCRUB_SCAN]
    # Extra headers are stored encrypted because they often carry credentials; very short values are skipped
    # so that a header like `X-Flag: 1` does not blank every digit.
    secrets = [str(v) for v in (provider.headers or {}).values() if len(str(v)) >= PARTIAL]
    if provider.api_key:
        secrets.append(str(provider.api_key))
    if provider.base_url:
        text = re.sub(re.escape(str(provider.base_url)), REDACTED, text, flags=re.IGNORECASE)
    text = _redact_runs(text, secrets)
    return text if limit is None else text[:limit]


SHORT_SECRET = 4  # a key shorter than PARTIAL is redacted whole from this length (below, it would blank words)


def _redact_runs(text: str, secrets: list[str]) -> str:
    """Replace every stretch of text made of >= PARTIAL-character runs of a secret (case-insensitive).

    Each run is found with str.find, so a multi-megabyte MCP result costs a few scans, not a Python loop per
    character.
    """
    grams = {s.lower()[i:i + PARTIAL] for s in secrets for i in range(len(s) - PARTIAL + 1)}
    grams.update(s.lower() for s in secrets if SHORT_SECRET <= len(s) < PARTIAL)
    if not grams or len(text) < SHORT_SECRET:
        return text
    low = text.lower()
    if len(low) != len(text):  # a few characters lower to two ("İ"): keep positions aligned with the text
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    covered = bytearray(len(text))
    for gram in grams:
        at = low.find(gram)
        while at >= 0:
            covered[at:at + len(gram)] = b"\x01" * len(gram)
            at = low.find(gram, at + 1)
    out, i = [], 0
    while i < len(text):
        start = covered.find(1, i)
        if start < 0:
            out.append(text[i:])
            break
        end = covered.find(0, start)
        end = len(text) if end < 0 else end
        out.append(text[i:start] + REDACTED)
        i = end
    return "".join(out)


def upstream_headers(resp: UpstreamResponse) -> dict:
    """Upstream rate-limit headers to pass on (upstream-prefixed where our own limits use the name)."""
    return {name: resp.headers[name] for name in PASS_HEADERS if name in resp.headers}


# -- sending ---------------------------------------------------------------------------------------
def upstream_body(model: ModelInfo, body: dict, endpoint: str) -> tuple[dict, bool]:
    """The body for one model: its upstream name, and stream usage requested when the provider allows it."""
    sent = dict(body)
    sent["model"] = model.upstream_model
    strip = False
    provider = model.provider
    if not sent.get("stream") or endpoint not in OPENAI_STREAMING:
        return sent, strip
    options = sent.get("stream_options")
    wanted = isinstance(options, dict) and bool(options.get("include_usage"))
    if provider.kind != "openai":  # translating adapters always know usage
        return sent, not wanted
    if provider.stream_usage and not wanted:
        sent["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        strip = True
    return sent, strip


# The model endpoint an adapter endpoint needs (messages, responses and token counts need a chat model).
NEEDS = {"completion": "completions", "embedding": "embeddings"}


def _supports(endpoint: str):
    def check(model: ModelInfo) -> bool:
        try:
            return (endpoint in get_adapter(model.provider.kind).endpoints and not model.provider.broken
                    and NEEDS.get(endpoint, "chat") in model.endpoints)
        except KeyError:
            return False
    return check


def open_upstream(gw, call, endpoint: str, body: dict):
    """Send to the model's targets (its deployments, then its fallbacks'); returns (adapter, response), a 2xx.

    On success call.served is the deployment that served (call.model stays the one asked for).
    """
    primary = call.model
    if call.deadline is None:
        call.deadline = call.t0 + primary.provider.total_timeout
    models = route.candidates(gw, primary, _supports(endpoint))
    if not models:
        if not primary.provider.broken and endpoint not in get_adapter(primary.provider.kind).endpoints:
            raise GatewayError(400, f"The model `{primary.slug}` cannot serve this endpoint.", param="model",
                               code=ErrorCode.UNSUPPORTED_FOR_PROVIDER)
        raise GatewayError(502, "This provider's stored secret cannot be used; an administrator must re-enter it.",
                           code=ErrorCode.PROVIDER_MISCONFIGURED, type="server_error")
    target, (adapter, resp, headers, strip), failures = route.walk(
        gw, call, route.targets(gw, models),
        lambda target, remaining: _attempt(gw, call, target.dep, endpoint, body, remaining))
    for name, value in headers.items():
        # Our own limit headers win; the upstream's same-named ones stay visible as x-upstream-*.
        call.headers["x-upstream-" + name[2:] if name in call.headers and name.startswith("x-") else name] = value
    call.strip_usage = strip
    call.served = target.dep  # the deployment that answered; pipeline._close releases its in-flight slot
    if target.model.id != primary.id:
        tried = ", ".join(f"{slug} {kind}" for slug, kind in failures)
        call.note = f"served by fallback `{target.model.slug}` after: {tried}"
    return adapter, resp


def _attempt(gw, call, model: ModelInfo, endpoint: str, body: dict, remaining: float):
    """One upstream request: (adapter, response, headers to pass on, strip usage) or an UpstreamError."""
    call.attempted = model
    provider = model.provider
    adapter = get_adapter(provider.kind)
    sent, strip = upstream_body(model, body, endpoint)
    try:
        req = adapter.build(provider, endpoint, sent)
    except TranslationError as exc:  # a request the provider's wire format cannot express
        raise GatewayError(400, exc.message, param=exc.param, code=ErrorCode.UNSUPPORTED_FOR_PROVIDER) from None
    with gw.lifecycle.attempt(call, model, endpoint, req):  # e.g. a span, whose context goes on req's headers
        return _exchange(gw, adapter, provider, req, sent, strip, remaining)


def _exchange(gw, adapter, provider, req, sent: dict, strip: bool, remaining: float):
    """Send a built request and check its status and content type (see _attempt)."""
    resp = gw.upstreams.send(provider, req, min(provider.first_byte_timeout, remaining),
                             min(provider.connect_timeout, remaining))
    headers = upstream_headers(resp)
    if resp.status_code >= 300:
        try:
            raw = read_body(resp, 1024 * 1024, time.perf_counter() + remaining)
        except (GatewayError, HTTPError, OSError):
            raw = b""
        finally:
            resp.close()
        if 300 <= resp.status_code < 400:
            raise UpstreamError(502, "The upstream answered with a redirect, which the gateway does not follow.",
                                code=ErrorCode.BAD_UPSTREAM_RESPONSE, fault=Fault.BAD, headers=headers)
        raise upstream_error(adapter, provider, resp.status_code, raw, resilience.parse_retry_after(resp.headers),
                             headers)
    if sent.get("stream") and not _is_event_stream(resp):
        resp.close()
        raise UpstreamError(502, "The upstream answered a streaming request without an event stream.",
                            code=ErrorCode.BAD_UPSTREAM_RESPONSE, fault=Fault.BAD)
    return adapter, resp, headers, strip


def _is_event_stream(resp: UpstreamResponse) -> bool:
    return resp.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def complete(gw, call, endpoint: str, body: dict, text) -> dict:
    """A non-streamed call: the adapter's parsed response body (OpenAI-shaped, or native for native endpoints).

    `text` reads the answer's text (the dialect's TextReader for this plan) when usage must be estimated.
    """
    adapter, resp = open_upstream(gw, call, endpoint, body)
    try:
        raw = read_body(resp, gw.max_response_bytes, call.deadline)
    except (ReadTimeoutError, TimeoutError):
        raise GatewayError(504, "The upstream did not answer in time.", code=ErrorCode.UPSTREAM_TIMEOUT,
                           type="server_error") from None
    except (HTTPError, OSError):
        raise GatewayError(502, "The upstream connection failed mid-response.", code=ErrorCode.UPSTREAM_DISCONNECT,
                           type="server_error") from None
    finally:
        resp.close()
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        out, usage = adapter.parse(endpoint, data, call.public_model)
        scrub_reports(out, call.serving.provider)  # a native Response that failed or stopped short
    except (ValueError, KeyError, TypeError):
        raise GatewayError(502, "The upstream sent a response the gateway could not understand.",
                           code=ErrorCode.BAD_UPSTREAM_RESPONSE, type="server_error") from None
    call.usage = usage
    if endpoint == "count_tokens":  # counting is free upstream: nothing to estimate
        pass
    elif call.model.kind != "embedding" and (not usage or usage.get("input_tokens") is None
                                           or usage.get("output_tokens") is None):
        # No usage in the answer: estimate it (and flag the row), as streams do, so it is not free.
        found: list[str] = []
        text.whole(out, found)
        _settle_estimate(call, body, found)
    elif call.model.kind == "embedding" and not (usage or {}).get("input_tokens"):
        call.usage, call.usage_estimated = {"input_tokens": estimate_input(body), "output_tokens": 0}, True
    call.cost = cost(call.serving, call.usage)
    if gw.log_bodies:
        call.response_body = raw.decode("utf-8", "replace")
    return out


def relay(gw, call, endpoint: str, body: dict, encoder, text, answered=None):
    """Generator of encoded bytes for a streamed call; raises GatewayError only before its first byte.

    `encoder` frames the client's dialect: chunk(dict) -> bytes, done(call) -> bytes, error(err) -> bytes;
    `text` (the dialect's TextReader) collects the chunks' text for an estimate when the upstream sends no usage;
    `answered()`, if given, runs once a clean end is encoded, before its bytes are yielded (the lifecycle's
    on_answered stage).
    Usage and cost are settled on the call before `done` is encoded, so a closing event can carry them.
    """
    adapter, resp = open_upstream(gw, call, endpoint, body)
    provider = call.serving.provider
    translator = adapter.stream(endpoint, call.public_model, call.strip_usage)
    deadline = call.deadline or call.t0 + provider.total_timeout
    # Later reads wait at most the idle gap (and never past the overall deadline).
    set_idle_timeout(resp, max(min(provider.idle_timeout, deadline - time.perf_counter()), 0.001))
    parser = SSEParser(gw.max_event_bytes)
    sent = False
    received = 0
    text_out: list[str] = []
    try:
        for raw in iter_raw(resp):
            received += len(raw)
            if received > gw.max_response_bytes:
                raise GatewayError(502, "The upstream stream exceeded the gateway's response size limit.",
                                   code=ErrorCode.BAD_UPSTREAM_RESPONSE, type="server_error")
            for event in parser.feed(raw):
                out = translator.feed(event)
                for chunk in out.chunks:
                    scrub_reports(chunk, provider)  # a relayed response.failed, an error next to choices
                    text.chunk(chunk, text_out)
                    if call.ttft_ms is None:
                        call.ttft_ms = round((time.perf_counter() - call.t0) * 1000, 3)
                    sent = True
                    yield encoder.chunk(chunk)
                if out.done:
                    _settle(call, translator, body, text_out)
                    end = encoder.done(call)
                    if answered is not None and call.status < 400:
                        answered()
                    yield end
                    drain(resp)
                    return
                if event.comment is not None and sent:
                    yield b": " + event.comment.encode() + b"\n\n"
            left = deadline - time.perf_counter()
            if left <= 0:
                raise GatewayError(504, "The upstream stream exceeded the total time limit.",
                                   code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
            if left < provider.idle_timeout:  # near the end, the next read may only wait until the deadline
                set_idle_timeout(resp, left)
        raise GatewayError(502, "The upstream ended the stream before it was complete.",
                           code=ErrorCode.UPSTREAM_DISCONNECT, type="server_error")
    except GeneratorExit:
        call.status, call.error_type = 499, ErrorCode.CLIENT_DISCONNECTED.value
        call.error_message = "Client closed the stream."
        raise
    except Exception as exc:
        err = _stream_error(exc, provider, deadline)
        if isinstance(err, UpstreamText):  # an upstream's in-band error, in its own words
            err = in_band_error(err, provider)
        call.fail(err)
        fault = UpstreamError.mid_stream(err)
        if fault.counts_against_health:  # an in-band client error says nothing about health
            gw.breakers.failure(provider, fault, call.principal.key_id if call.principal else None,
                                after_success=True)
        if not sent:
            raise err from None
        _settle(call, translator, body, text_out)
        yield encoder.error(err)
        yield encoder.done(call)
    finally:
        resp.close()
        _settle(call, translator, body, text_out)


def _settle(call, translator, body: dict, text_out: list[str]) -> None:
    """Usage from the upstream, else estimated (and flagged); cost from usage."""
    if call.usage is None and translator.usage is not None:
        call.usage = translator.usage
    if call.usage is None or call.usage.get("output_tokens") is None:
        _settle_estimate(call, body, text_out)
    call.cost = cost(call.serving, call.usage)


def _settle_estimate(call, body: dict, text_out: list[str]) -> None:
    """Fill missing usage with tiktoken estimates of the prompt and the answer's text; flag the row."""
    usage = dict(call.usage or {})
    if usage.get("input_tokens") is None:
        usage["input_tokens"] = estimate_input(body)
    if usage.get("output_tokens") is None:
        usage["output_tokens"] = count_tokens("".join(text_out))
    call.usage, call.usage_estimated = usage, True


def _stream_error(exc: Exception, provider, deadline: float) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    timed_out = isinstance(exc, ReadTimeoutError | TimeoutError)
    if timed_out and time.perf_counter() >= deadline - 0.01:  # the read wait was cut to the deadline
        return GatewayError(504, "The upstream stream exceeded the total time limit.",
                            code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
    if isinstance(exc, UpstreamStreamError | WireStreamError):
        return GatewayError(502, scrub(getattr(exc, "message", None) or str(exc), provider)
                            or "The upstream reported an error mid-stream.",
                            code=ErrorCode.UPSTREAM_ERROR, type="server_error")
    if timed_out:
        return GatewayError(504, "The upstream stopped sending in the middle of the stream.",
                            code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
    if isinstance(exc, HTTPError | OSError):
        return GatewayError(502, "The upstream connection failed in the middle of the stream.",
                            code=ErrorCode.UPSTREAM_DISCONNECT, type="server_error")
    return GatewayError(502, "The upstream sent a stream the gateway could not understand.",
                        code=ErrorCode.BAD_UPSTREAM_RESPONSE, type="server_error")
