"""OpenTelemetry traces of gateway calls (GenAI semantic conventions), exported over OTLP/HTTP when configured.

`install(gw)` registers the tracer on the call lifecycle's stages (proxy/lifecycle.py) only when
OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; then, and only then, opentelemetry is imported. With
tracing off nothing of this module runs on a call. Spans are queued to a BatchSpanProcessor: exporting happens on
its own thread.

One call is one SERVER span (started when the pipeline or the MCP hub takes the call, or at record time for calls
the edge refused), with one CLIENT child span per upstream attempt (a provider or an MCP server); the incoming W3C
`traceparent` is continued and the child's context is sent to providers. Bodies become attributes only when
LOG_BODIES is on.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

from flask import has_request_context, request

log = logging.getLogger("promptproxy.tracing")
TRACE_HEADERS = ("traceparent", "tracestate")
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/chat/completion": "chat", "/v1/messages": "chat",
              "/v1/responses": "chat", "/v1/completions": "text_completion", "/v1/completion": "text_completion",
              "/v1/embeddings": "embeddings"}
HTTP_PROTOBUF = "http/protobuf"


def enabled(environ=os.environ) -> bool:
    """True when the standard OpenTelemetry variables ask for OTLP trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def install(gw, lifecycle) -> None:
    """When tracing is configured: gw.tracer, and its hooks on the stages (start, each attempt, record, close)."""
    gw.tracer = tracer = make_tracer(gw.log_bodies)
    if tracer is None:
        return
    lifecycle.add("on_start", lambda call, body: tracer.start(call))
    lifecycle.add("around_attempt", tracer.attempt)
    lifecycle.add("on_recorded", tracer.finish)
    lifecycle.add("on_close", tracer.close)


def make_tracer(log_bodies: bool = False) -> Tracer | None:
    """A Tracer exporting to the configured OTLP/HTTP endpoint, or None when tracing is not configured."""
    if not enabled():
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip().lower() != HTTP_PROTOBUF:
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; exporting traces as %s", protocol,
                    HTTP_PROTOBUF)
    return Tracer(log_bodies)


def _epoch_ns(perf: float) -> int:
    """A perf_counter() reading as wall-clock nanoseconds (span times are epoch-based)."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


class _Trace:
    """One call's spans: the server span and the open upstream span of the attempt that answered."""

    __slots__ = ("span", "upstream")

    def __init__(self, span):
        self.span = span
        self.upstream = None


class Tracer:
    """Creates, annotates and ends the spans of gateway calls."""

    def __init__(self, log_bodies: bool = False):
        from opentelemetry import propagate, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "promptproxy"}))
        self.provider = TracerProvider(resource=resource)  # our own: never replaces a host app's global one
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("promptproxy")
        self.log_bodies = log_bodies
        self._trace, self._propagate = trace, propagate
        self._kinds = trace.SpanKind

    def start(self, call) -> None:
        """Open the call's server span, continuing the caller's trace when it sent a `traceparent`."""
        if call.trace is not None:
            return
        parent = self._parent()
        operation = OPERATIONS.get(call.endpoint)
        span = self.tracer.start_span(operation or call.endpoint, context=parent, kind=self._kinds.SERVER,
                                      start_time=_epoch_ns(call.t0))
        if operation:
            span.set_attribute("gen_ai.operation.name", operation)
        call.trace = _Trace(span)

    def _parent(self):
        """The caller's trace context from the request's W3C headers, if it sent one."""
        if not has_request_context():
            return None
        carrier = {name: request.headers[name] for name in TRACE_HEADERS if name in request.headers}
        return self._propagate.extract(carrier) if carrier else None

    @contextmanager
    def attempt(self, call, target, endpoint: str, req):
        """around_attempt: a child span for the attempt; a failed one ends with its error, a served one at finish."""
        span = self.upstream(call, target, endpoint, req)
        try:
            yield span
        except BaseException as exc:
            self.attempt_failed(call, span, exc)
            raise

    def upstream(self, call, target, endpoint: str, req) -> object:
        """Open a child span for one upstream attempt and put its trace context on the request's headers.

        `target` is the deployment (a ModelInfo) or an MCP server; `req` the upstream request (None: not sent on).
        """
        if call.trace is None:
            self.start(call)
        if call.trace.upstream is not None:  # an MCP list reaches several servers: the last one's ends at finish
            call.trace.upstream.end()
        provider = getattr(target, "provider", None)
        if provider is None:  # an MCP server: the method is the operation, the server its peer
            name, attrs = f"{endpoint} {target.name}", {"mcp.method.name": endpoint, "promptproxy.mcp_server":
                                                        target.name}
            if endpoint == "tools/call" and call.model_name:
                attrs.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.model_name})
            url = urlsplit(target.url)
        else:
            operation = OPERATIONS.get(call.endpoint, endpoint)
            name = f"{operation} {target.upstream_model}"
            attrs = {"gen_ai.operation.name": operation, "gen_ai.request.model": target.upstream_model,
                     "gen_ai.provider.name": provider.kind, "gen_ai.system": provider.kind,
                     "promptproxy.deployment": provider.name, "promptproxy.model": target.slug}
            url = urlsplit(provider.base_url)
        attrs.update({"server.address": url.hostname or "", "server.port": url.port or (443 if url.scheme == "https"
                                                                                         else 80)})
        span = self.tracer.start_span(name, kind=self._kinds.CLIENT,
                                      context=self._trace.set_span_in_context(call.trace.span), attributes=attrs)
        if req is not None:
            carrier: dict = {}
            self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
            req.headers = {**req.headers, **carrier}
        call.trace.upstream = span
        return span

    def attempt_failed(self, call, span, exc: BaseException) -> None:
        """End a failed attempt's span with what went wrong (a retry or fallback may follow)."""
        status = getattr(exc, "upstream_status", None) or getattr(exc, "status", None)
        if status:
            span.set_attribute("http.response.status_code", status)
        span.set_attribute("error.type", getattr(exc, "kind", None) or type(exc).__name__)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()
        if call.trace is not None and call.trace.upstream is span:
            call.trace.upstream = None

    def finish(self, call) -> None:
        """Annotate and end the call's spans (the call is settled: usage, cost and status are final)."""
        if call.trace is None:
            self.start(call)
        state, call.trace = call.trace, False  # False: finished, never started again
        if not state:
            return
        try:
            self._finish(call, state)
        except Exception:  # a tracing fault must never fail or lose the call it describes
            log.exception("could not finish the trace of request %s", call.request_id)

    def _finish(self, call, state: _Trace) -> None:
        attrs = self._attributes(call)
        operation = OPERATIONS.get(call.endpoint)
        if operation and attrs.get("gen_ai.request.model"):  # the model is known only once resolved
            state.span.update_name(f"{operation} {attrs['gen_ai.request.model']}")
        if state.upstream is not None:
            self._end(state.upstream, call, {k: v for k, v in attrs.items() if k.startswith("gen_ai.")
                                             and k not in ("gen_ai.request.model", "gen_ai.operation.name")})
        self._end(state.span, call, attrs)

    def _end(self, span, call, attrs: dict) -> None:
        span.set_attributes(attrs)
        if call.status >= 500 or (call.status >= 400 and span.kind == self._kinds.CLIENT):
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, call.error_message))
        span.end()

    def _attributes(self, call) -> dict:
        """The call's attributes: GenAI conventions first, then PromptProxy's own."""
        usage = call.usage or {}
        serving = call.serving
        attrs = {"gen_ai.request.model": call.model.slug if call.model else call.model_name,
                 "http.response.status_code": call.status, "promptproxy.request_id": call.request_id,
                 "promptproxy.stream": call.stream, "promptproxy.tags": list(call.tags)}
        if serving is not None:
            attrs.update({"gen_ai.response.model": serving.upstream_model, "gen_ai.provider.name":
                          serving.provider.kind, "gen_ai.system": serving.provider.kind,
                          "promptproxy.deployment": serving.provider.name, "promptproxy.served_model": serving.slug})
        for name, key in (("gen_ai.usage.input_tokens", "input_tokens"),
                          ("gen_ai.usage.output_tokens", "output_tokens"),
                          ("promptproxy.usage.cached_tokens", "cached_tokens")):
            if usage.get(key) is not None:
                attrs[name] = usage[key]
        if call.principal is not None:
            attrs.update({"promptproxy.user": call.principal.user_name, "promptproxy.user_id": call.principal.user_id,
                          "promptproxy.key_id": call.principal.key_id})
        if call.prompt is not None:
            attrs["promptproxy.prompt"] = call.prompt.slug
        if call.version is not None:
            attrs["promptproxy.prompt_version"] = call.version.version
        for name, value in (("promptproxy.cost_usd", call.cost), ("promptproxy.usage_estimated", call.usage_estimated
                            if call.usage else None), ("promptproxy.cache_hit", getattr(call, "cache_hit", None)),
                            ("error.type", call.error_type if call.status >= 400 else None),
                            ("promptproxy.note", call.note)):
            if value is not None:
                attrs[name] = value
        if self.log_bodies:
            for name, value in (("promptproxy.request.body", call.request_body),
                                ("promptproxy.response.body", call.response_body)):
                if value:
                    attrs[name] = value
        return {k: v for k, v in attrs.items() if v is not None}

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Export every finished span now (tests, shutdown)."""
        return self.provider.force_flush(timeout_ms)

    def close(self) -> None:
        """Export what is left and stop the export thread."""
        self.provider.shutdown()
