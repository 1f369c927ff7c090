"""One request pipeline for every inbound dialect: plan, admit, send, relay, settle, record.

The edge authenticates and parses JSON, then calls `run`; from there the pipeline owns the call: every outcome,
error or success, whole or streamed, is settled with the limiter and recorded exactly once, here.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ..core.errors import ErrorCode, GatewayError
from ..extensions import db
from . import send
from .resolve import check_routing_keys, resolve


@dataclass(slots=True)
class Plan:
    """What a dialect decided for one call once its model is known."""

    endpoint: str  # the adapter endpoint, one of an adapter's `endpoints` (chat, completion, messages, ...)
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


class TextReader(Protocol):
    """The text of answers in one wire shape: what token estimates count when the upstream sends no usage."""

    def whole(self, out: dict, into: list[str]) -> None:
        """Append the text and tool arguments of a whole answer."""

    def chunk(self, chunk: dict, into: list[str]) -> None:
        """Append the text and tool arguments of one stream chunk or event."""


class Dialect(Protocol):
    """One inbound API shape: parse and check, plan for the resolved model, render answers.

    Features ask more of dialects where they need it (the stages' hooks get the dialect): see their modules.
    """

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

    def text(self, plan: Plan) -> TextReader:
        """How to read the text of this plan's answers and chunks (token estimates when usage is missing)."""


def run(gw, call, dialect: Dialect, body: dict) -> dict | Iterator[bytes]:
    """Serve one call: a whole answer (dict) or a stream whose first bytes are already pulled.

    Errors before the first byte raise GatewayError (recorded); later ones are encoded in the stream. The features
    run at the lifecycle's stages (proxy/lifecycle.py); this function names none of them.
    """
    call.in_pipeline = True
    stages = gw.lifecycle
    admission, owner = None, True
    try:
        stages.start(call, body)
        dialect.validate(body)
        check_routing_keys(body)
        resolve(gw, call, body, dialect.kind)
        stages.resolved(call, dialect, body)  # before plan: planning may change the body
        plan = dialect.plan(gw, call, body)
        call.stream = bool(plan.body.get("stream")) and plan.local is None
        admission = gw.limiter.admit(call, plan.view)  # an answer from before_send counts like any request
        call.headers.update(admission.headers)
        early = stages.answer(call, dialect, plan)
        if early is not None:
            return early
        if call.stream:
            owner = False  # the stream settles and records, whether its first pull succeeds or not
            return _stream(gw, call, dialect, plan, admission)
        out = plan.local if plan.local is not None else send.complete(gw, call, plan.endpoint, plan.body,
                                                                       dialect.text(plan))
        answer = dialect.render(call, plan, out)
        stages.answered(call, answer)  # in the try: a hook that fails fails the call
        stages.settle(call, answer, admission)
        return answer
    except BaseException as exc:
        _note(call, exc)
        raise
    finally:
        if owner:
            _close(gw, call, admission)


def _stream(gw, call, dialect: Dialect, plan: Plan, admission) -> Iterator[bytes]:
    """Pull the first bytes now (retries and fallbacks happen inside), then relay the rest.

    The database session is released before the stream runs (no connection is held for its length). The answer
    is complete when the stream's end is encoded (on_answered, before its last bytes go out: a client that saw the
    end may rely on what was stored); the call settles at the stream's end (a client may still hang up before it),
    both in a fresh app context.
    """
    def answered():
        with gw.app.app_context():
            gw.lifecycle.answered(call, None)

    encoder = gw.lifecycle.stream(call, dialect, plan, dialect.encoder(call, plan))
    events = send.relay(gw, call, plan.endpoint, plan.body, encoder, dialect.text(plan),
                        answered if gw.lifecycle.on_answered else None)

    def owned():
        try:
            yield from events
        except BaseException as exc:
            _note(call, exc)
            raise
        finally:
            with gw.app.app_context():
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


def _note(call, exc: BaseException) -> None:
    """Note the outcome of an exception on the call (a client disconnect is noted where it happens)."""
    if isinstance(exc, GatewayError):
        call.fail(exc)
    elif isinstance(exc, Exception) and call.status < 400:
        call.status, call.error_type = 500, ErrorCode.INTERNAL_ERROR.value


def _close(gw, call, admission) -> None:
    """Settle the call (unless it already was) and record it, each exactly once, whatever happened."""
    try:
        gw.lifecycle.settle(call, None, admission)
    finally:
        gw.record(call)
