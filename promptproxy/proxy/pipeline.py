"""One request pipeline for every inbound dialect: plan, admit, send, relay, settle, record.

The edge authenticates and parses JSON, then calls `run`; from there the pipeline owns the call: every outcome,
error or success, whole or streamed, is settled with the limiter and recorded exactly once, here.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ..cache import assemble
from ..cache import response_cache as cache
from ..core.errors import ErrorCode, GatewayError
from ..extensions import db
from . import send, tags
from .resolve import check_routing_keys, resolve


@dataclass(slots=True)
class Plan:
    """What a dialect decided for one call once its model is known."""

    endpoint: str  # the adapter endpoint: chat, completion, embedding, messages, responses, count_tokens
    body: dict  # what the provider adapter gets
    view: dict  # the call in OpenAI chat shape, for token and budget estimates
    native: bool = False  # the upstream speaks the client's dialect: answers pass through untouched
    local: dict | None = None  # answered by the gateway itself (token counts): no upstream call


class Encoder(Protocol):
    """Frames a stream in the client's dialect."""

    def chunk(self, chunk: dict) -> bytes:
        """One upstream chunk or event."""

    def done(self, call) -> bytes:
        """The end of the stream (usage is settled on the call by now)."""

    def error(self, err: GatewayError) -> bytes:
        """An in-band error after the first byte."""


class Dialect(Protocol):
    """One inbound API shape: parse and check, plan for the resolved model, render answers."""

    name: str  # recorded as the row's inbound format; chooses the error envelope
    kind: str  # the model kind it needs: chat, completion or embedding

    def validate(self, body: dict) -> None:
        """Checks the gateway itself needs (400 on failure); the rest is the upstream's to judge."""

    def plan(self, gw, call, body: dict) -> Plan:
        """The upstream body for call.model, with the stored prompt injected."""

    def render(self, call, plan: Plan, out: dict) -> dict:
        """A whole answer in the client's dialect."""

    def encoder(self, call, plan: Plan) -> Encoder:
        """The stream framing for this call."""


def run(gw, call, dialect: Dialect, body: dict) -> dict | Iterator[bytes]:
    """Serve one call: a whole answer (dict) or a stream whose first bytes are already pulled.

    Errors before the first byte raise GatewayError (recorded); later ones are encoded in the stream.
    """
    call.in_pipeline = True
    if gw.tracer is not None:
        gw.tracer.start(call)
    admission, owner = None, True
    try:
        tags.apply(call, body, call.tag_header)
        dialect.validate(body)
        check_routing_keys(body)
        resolve(gw, call, body, dialect.kind)
        key, read, store = _cache_key(call, dialect, body)  # before plan: planning may change the body
        plan = dialect.plan(gw, call, body)
        call.stream = bool(plan.body.get("stream")) and plan.local is None
        admission = gw.limiter.admit(call, plan.view)  # a hit counts against the limits like any request
        call.headers.update(admission.headers)
        hit = gw.cache.get(key) if read else None
        if hit is not None:
            return _replay(call, dialect, plan, hit)
        if call.stream:
            owner = False  # the stream settles and records, whether its first pull succeeds or not
            return _stream(gw, call, dialect, plan, admission, key if store else None)
        out = plan.local if plan.local is not None else send.complete(gw, call, plan.endpoint, plan.body)
        answer = dialect.render(call, plan, out)
        if store and call.status < 300:
            gw.cache.put(key, cache.settings(call)[0], answer, call.usage, call.cost)
        return answer
    except BaseException as exc:
        _note(call, exc)
        raise
    finally:
        if owner:
            _close(gw, call, admission)


def _stream(gw, call, dialect: Dialect, plan: Plan, admission, key: str | None) -> Iterator[bytes]:
    """Pull the first bytes now (retries and fallbacks happen inside), then relay the rest.

    The database session is released before the stream runs (no connection is held for its length); settling
    at the end gets a fresh app context. With a cache `key`, a stream that ends cleanly is stored whole.
    """
    encoder = dialect.encoder(call, plan)
    if key is not None and assemble.supported(plan.endpoint):
        encoder = assemble.Filling(encoder, plan.endpoint, gw.cache.max_entry)
    events = send.relay(gw, call, plan.endpoint, plan.body, encoder)

    def owned():
        finished = False
        try:
            yield from events
            finished = True  # not cut by the client (that raises GeneratorExit at a yield)
        except BaseException as exc:
            _note(call, exc)
            raise
        finally:
            with gw.app.app_context():
                try:
                    if finished and isinstance(encoder, assemble.Filling):
                        _store_stream(gw, call, dialect, plan, key, encoder)
                finally:
                    _close(gw, call, admission)

    gen = owned()
    try:
        first = next(gen)
    except StopIteration:
        first = b""
    db.session.remove()

    def rest():
        yield first
        yield from gen

    return rest()


def _store_stream(gw, call, dialect: Dialect, plan: Plan, key: str, filling) -> None:
    """Cache a stream that ended cleanly (2xx, no in-band error, finished) as the whole answer it adds up to."""
    out = filling.whole(call.usage) if call.status < 300 else None
    if out is None:
        return
    try:
        answer = dialect.render(call, plan, out)
    except (KeyError, TypeError, ValueError, AttributeError):
        return  # an answer the dialect cannot render whole is not worth caching; the client already has it
    gw.cache.put(key, cache.settings(call)[0], answer, call.usage, call.cost)


def _cache_key(call, dialect: Dialect, body: dict) -> tuple[str | None, bool, bool]:
    """(key, read it, store the answer): `no-cache` skips the read, `no-store` both."""
    streamed = bool(body.get("stream"))
    if not cache.cacheable(call, dialect) or (streamed and dialect.kind != "chat"):
        return None, False, False
    asked = cache.directives(call.cache_control)
    call.headers["x-cache"] = "MISS"
    return cache.cache_key(call, dialect, body), not asked & {"no-cache", "no-store"}, "no-store" not in asked


def _replay(call, dialect: Dialect, plan: Plan, hit: dict):
    """A cache hit: the stored answer, whole or as a stream in the client's dialect; nothing is charged."""
    call.cache_hit, call.headers["x-cache"] = True, "HIT"
    call.usage, call.cost, call.cost_saved = hit.get("usage"), 0.0, hit.get("cost") or 0.0
    if not call.stream:
        return hit["answer"]
    options = plan.body.get("stream_options")
    events = cache.stream_events(dialect.name, hit["answer"], isinstance(options, dict)
                                 and bool(options.get("include_usage")))
    encoder = dialect.encoder(call, Plan(plan.endpoint, plan.body, plan.view, native=True))
    return iter([*(encoder.chunk(event) for event in events), encoder.done(call)])


def _note(call, exc: BaseException) -> None:
    """Note the outcome of an exception on the call (a client disconnect is noted where it happens)."""
    if isinstance(exc, GatewayError):
        call.fail(exc)
    elif isinstance(exc, Exception) and call.status < 400:
        call.status, call.error_type = 500, ErrorCode.INTERNAL_ERROR.value


def _close(gw, call, admission) -> None:
    """Settle the admission and record the call, each exactly once, whatever happened."""
    try:
        if call.served is not None:
            gw.deployments.release(call.served, call.usage, failed=call.status >= 500)
        if admission is not None:
            admission.finish(call)
    finally:
        gw.record(call)
