"""Per-app gateway state: catalog, upstream pools, limiter, request-log writer, and the call lifecycle's features."""
from __future__ import annotations

from ..alerts.worker import AlertWorker
from ..cache import response_cache
from ..cache.response_cache import ResponseCache
from ..core.catalog import Catalog
from ..core.sse import MAX_EVENT_BYTES
from ..core.state import make_state
from ..crypto import Box
from ..observe import tracing
from ..observe.logwriter import LogWriter
from ..ratelimit.admission import NullLimiter
from ..routing.breakers import Breakers
from ..routing.deployments import Deployments
from ..routing.resilience import RetryPolicy
from ..transport.upstream import Upstreams
from . import tags
from .lifecycle import Lifecycle


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
        # Health lives in the shared state, so every worker sees one breaker and one rpm count per deployment.
        self.breakers = Breakers.from_config(cfg, self.state)
        self.deployments = Deployments(cfg, self.state)
        self.cache = ResponseCache(cfg, self.state)
        # Alerts: the breakers and the limiter only put small events on this queue; its thread does the rest.
        self.alerts = AlertWorker(app, self.box)
        self.breakers.listener = self.alerts.events.put
        self.limiter.alerts = self.alerts.events
        self.lifecycle = Lifecycle()
        self._wire(self.lifecycle)

    def _wire(self, lifecycle: Lifecycle) -> None:
        """The features of every call, on the lifecycle's stages (others add theirs: ops.py, api/responses.py)."""
        lifecycle.add("on_recorded", self._log_row)
        lifecycle.add("on_settled", self._release)
        tags.install(lifecycle)
        response_cache.install(self, lifecycle)
        tracing.install(self, lifecycle)  # registers nothing (gw.tracer None) unless OTEL_EXPORTER_OTLP_* is set

    def _log_row(self, call) -> None:
        """on_recorded: queue the request-log row."""
        self.logs.submit(call.row())

    def _release(self, call, answer) -> None:
        """on_settled: free the in-flight slot of the deployment that served, counting its outcome."""
        if call.served is not None:
            self.deployments.release(call.served, call.usage, failed=call.status >= 500)

    def record(self, call) -> None:
        """Run the on_recorded stage (the log row first) exactly once per call."""
        if call.recorded:
            return
        call.recorded = True
        self.lifecycle.recorded(call)

    def close(self) -> None:
        """Flush the log and the traces, stop the alerts thread and close upstream pools (graceful shutdown)."""
        self.logs.close()
        self.deployments.close()
        self.alerts.close()
        self.lifecycle.close()
        self.upstreams.close()
