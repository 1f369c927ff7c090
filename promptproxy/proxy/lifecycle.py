"""The named stages of one call, which features register hooks on (cache, tracing, tags, Responses store, metrics).

Each stage is a tuple of hooks, empty unless a feature that is on registered one, so a feature that is off costs a
loop over an empty tuple. The pipeline (/v1) and the MCP hub (/mcp) run the same stages, in this order
(signature; who registers, where):

- `on_start(call, body or None)`: the gateway took the call. Tags (proxy/tags.py), the trace's server span
  (observe/tracing.py).
- `before_plan(call, dialect, body)`: model and prompt resolved, body as the client sent it. Cache key
  (cache/response_cache.py).
- `before_send(call, dialect, plan) -> answer or None`: admitted, nothing sent yet; the first answer a hook gives
  is served (a whole dict or a stream of bytes). Cache hit.
- `on_stream(call, dialect, plan, encoder) -> encoder`: a stream is about to be relayed. Cache fill.
- `around_attempt(call, target, endpoint, request) -> context manager`: each upstream attempt, to a deployment
  or an MCP server. The trace's client span (which puts its context on the request).
- `on_answered(call, answer or None)`: the upstream's whole answer is complete (rendered, or its stream's end
  encoded without an in-band error), in an app context, before the client has its last bytes; not for an answer
  a before_send hook gave. Responses store (dialects/responses_store.py).
- `on_settled(call, answer or None)`: the outcome is final, exactly once, in an app context, before the
  admission settles (streams: at their end). Deployment release (proxy/gateway.py), cache store.
- `on_recorded(call)`: exactly once, when the row is queued. Log row (proxy/gateway.py), metrics and the access
  log (ops.py), the trace's end.
- `on_close()`: gateway shutdown. Tracing flushes its spans.

A hook that raises fails the call as any error at that point would (a tag error is a 400 from `on_start`).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager, nullcontext

STAGES = ("on_start", "before_plan", "before_send", "on_stream", "around_attempt", "on_answered", "on_settled",
          "on_recorded", "on_close")
_NOTHING = nullcontext()  # reusable: entering and leaving it does nothing


class Lifecycle:
    """The hooks registered on each stage, and the loops that run them."""

    __slots__ = STAGES

    def __init__(self):
        for stage in STAGES:
            setattr(self, stage, ())

    def add(self, stage: str, hook) -> None:
        """Register `hook` on `stage` (after the hooks already there); an unknown stage is a bug, so it raises."""
        if stage not in STAGES:
            raise ValueError(f"unknown lifecycle stage {stage!r}; the stages are {', '.join(STAGES)}")
        setattr(self, stage, (*getattr(self, stage), hook))

    def registered(self) -> dict[str, tuple]:
        """Every stage's hooks by stage name (for tests and docs)."""
        return {stage: getattr(self, stage) for stage in STAGES}

    def start(self, call, body: dict | None) -> None:
        """on_start: the gateway took the call."""
        for hook in self.on_start:
            hook(call, body)

    def resolved(self, call, dialect, body: dict) -> None:
        """before_plan: the model and stored prompt are known; the body is still as the client sent it."""
        for hook in self.before_plan:
            hook(call, dialect, body)

    def answer(self, call, dialect, plan):
        """before_send: the first answer a hook gives (a whole dict or a stream of bytes), else None."""
        for hook in self.before_send:
            found = hook(call, dialect, plan)
            if found is not None:
                return found
        return None

    def stream(self, call, dialect, plan, encoder):
        """on_stream: the encoder the stream is relayed through, as the hooks wrapped it."""
        for hook in self.on_stream:
            encoder = hook(call, dialect, plan, encoder)
        return encoder

    def attempt(self, call, target, endpoint: str, request):
        """around_attempt: one context around one upstream attempt (nothing at all when no hook is registered)."""
        hooks = self.around_attempt
        if not hooks:
            return _NOTHING
        if len(hooks) == 1:
            return hooks[0](call, target, endpoint, request)
        return _all(hooks, call, target, endpoint, request)

    def answered(self, call, answer: dict | None) -> None:
        """on_answered: the whole answer is complete (a stream's end is encoded), before the client has it all."""
        for hook in self.on_answered:
            hook(call, answer)

    def settle(self, call, answer: dict | None = None, admission=None) -> None:
        """on_settled, then the admission's settlement: exactly once per call, whatever happens in the hooks."""
        if call.settled:
            return
        call.settled = True
        try:
            for hook in self.on_settled:
                hook(call, answer)
        finally:
            if admission is not None:
                admission.finish(call)

    def recorded(self, call) -> None:
        """on_recorded: the call is final (the caller makes sure this runs once)."""
        for hook in self.on_recorded:
            hook(call)

    def close(self) -> None:
        """on_close: the gateway is shutting down."""
        for hook in self.on_close:
            hook()


@contextmanager
def _all(hooks: tuple, call, target, endpoint: str, request):
    """Several around_attempt contexts nested in registration order (the first is outermost)."""
    with ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook(call, target, endpoint, request))
        yield
