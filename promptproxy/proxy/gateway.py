"""Per-app gateway state: catalog, upstream pools, limiter, request-log writer."""
from __future__ import annotations

from ..alerts.worker import AlertWorker
from ..cache.response_cache import ResponseCache
from ..core.catalog import Catalog
from ..core.sse import MAX_EVENT_BYTES
from ..core.state import make_state
from ..crypto import Box
from ..observe.logwriter import LogWriter
from ..observe.tracing import make_tracer
from ..ratelimit.admission import NullLimiter
from ..routing.deployments import Deployments
from ..routing.resilience import Breakers, RetryPolicy
from ..transport.upstream import Upstreams


def make_limiter(app, state):
    """The real limiter, counting in the gateway's shared state, unless LIMITS_ENABLED is off."""
    if not app.config.get("LIMITS_ENABLED", True):
        return NullLimiter()
    from ..ratelimit.limiter import Limiter

    return Limiter(app, state=state)


class Gateway:
    """Everything the request path shares across requests in one process."""

    def __init__(self, app):
        cfg = app.config
        self.app = app  # streams settle in a fresh app context after the request has returned
        # The shared state every feature counts in (core/state.py): one store, chosen once, one Redis client.
        self.state = make_state(app)
        self.box = Box(cfg["ENCRYPTION_KEY"], tuple(k for k in cfg.get("OLD_ENCRYPTION_KEYS", ()) if k))
        self.catalog = Catalog(self.box, ttl=cfg["CACHE_TTL"])
        self.logs = LogWriter(app, interval=cfg["LOG_FLUSH_INTERVAL"], batch_size=cfg["LOG_BATCH_SIZE"],
                              max_queue=cfg.get("LOG_QUEUE_MAX", 50_000), retention_days=cfg["RETENTION_DAYS"])
        self.upstreams = Upstreams(pool_size=max(int(cfg["THREADS"]), 10),
                                   allow_private=bool(cfg["ALLOW_PRIVATE_UPSTREAMS"]))
        self.limiter = make_limiter(app, self.state)
        self.log_bodies = cfg["LOG_BODIES"]
        self.max_response_bytes = cfg.get("MAX_RESPONSE_BYTES", 64 * 1024 * 1024)
        self.max_event_bytes = cfg.get("MAX_EVENT_BYTES", MAX_EVENT_BYTES)  # for SSEParser(gw.max_event_bytes)
        self.retry = RetryPolicy.from_config(cfg)
        self.breakers = Breakers.from_config(cfg)
        self.deployments = Deployments(cfg)
        self.cache = ResponseCache(cfg, self.state)
        self.record_hooks: list = []  # callables(call) run when a call is recorded (metrics)
        # Alerts: the breakers and the limiter only put small events on this queue; its thread does the rest.
        self.alerts = AlertWorker(app, self.box)
        self.breakers.listener = self.alerts.events.put
        self.limiter.alerts = self.alerts.events
        self.tracer = make_tracer(self.log_bodies)  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set

    def record(self, call) -> None:
        """Queue the call's log row exactly once."""
        if call.recorded:
            return
        call.recorded = True
        self.logs.submit(call.row())
        for hook in self.record_hooks:
            hook(call)
        if self.tracer is not None:
            self.tracer.finish(call)

    def close(self) -> None:
        """Flush the log and the traces, stop the alerts thread and close upstream pools (graceful shutdown)."""
        self.logs.close()
        self.alerts.close()
        if self.tracer is not None:
            self.tracer.close()
        self.upstreams.close()
