"""Operations: readiness, Prometheus metrics, structured access-log lines."""
from __future__ import annotations

import ast
import collections
import hmac
import ipaddress
import logging
import sys
import threading
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from werkzeug.middleware.proxy_fix import ProxyFix

from .extensions import MIGRATIONS_DIR, db

access_log = logging.getLogger("promptproxy.access")
API_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/chat/completion", "/v1/completions", "/v1/completion",
                           "/v1/embeddings", "/v1/messages", "/v1/models", "/v1/messages/count_tokens"})
LIMIT_CODES = frozenset({"rate_limit_exceeded", "insufficient_quota", "limits_unavailable", "budget_exceeded"})
UPSTREAM_CODES = frozenset({"bad_upstream_response", "overloaded", "overloaded_error", "provider_misconfigured",
                            "upstream_circuit_open"})
LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Prometheus series for one app; labels are model, provider, endpoint, status — never a key or user."""

    def __init__(self, gateway):
        disable_created_metrics()  # no *_created series: half the scrape size, nothing lost for counters
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("promptproxy_requests", "Requests answered under /v1.",
                                ["endpoint", "model", "provider", "status"], registry=r)
        self.latency = Histogram("promptproxy_request_duration_seconds", "Time from request to last byte.",
                                 ["endpoint", "model", "provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("promptproxy_time_to_first_token_seconds", "Streams: time to the first chunk.",
                              ["model", "provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("promptproxy_tokens", "Tokens by direction (input, output, cached).",
                              ["model", "provider", "direction"], registry=r)
        self.cost = Counter("promptproxy_cost_usd", "Cost in US dollars at the configured prices.",
                            ["model", "provider"], registry=r)
        self.upstream_errors = Counter("promptproxy_upstream_errors", "Failed upstream calls by error type.",
                                       ["model", "provider", "error_type"], registry=r)
        self.refusals = Counter("promptproxy_limit_refusals", "Requests refused by rate limits or budgets.",
                                ["endpoint", "model", "reason"], registry=r)
        r.register(_GatewayCollector(gateway))

        self._children: dict[tuple, tuple] = {}

    def _series(self, endpoint: str, model: str, provider: str, status: str) -> tuple:
        """The labelled children for one label set, cached: `labels()` costs more than the increments."""
        key = (endpoint, model, provider, status)
        found = self._children.get(key)
        if found is None:
            found = (self.requests.labels(endpoint, model, provider, status),
                     self.latency.labels(endpoint, model, provider), self.ttft.labels(model, provider),
                     self.tokens.labels(model, provider, "input"), self.tokens.labels(model, provider, "output"),
                     self.tokens.labels(model, provider, "cached"), self.cost.labels(model, provider))
            self._children[key] = found
        return found

    def observe(self, call) -> None:
        """Record a finished call (a Gateway.record hook)."""
        endpoint = call.endpoint if call.endpoint in API_ENDPOINTS else "other"
        model = call.serving.slug if call.model is not None else "-"  # never the raw, client-chosen name
        provider = call.serving.provider.name if call.model is not None else "-"
        requests, latency, ttft, tin, tout, tcached, cost = self._series(endpoint, model, provider, str(call.status))
        requests.inc()
        latency.observe(max(time.perf_counter() - call.t0, 0.0))
        if call.ttft_ms is not None:
            ttft.observe(call.ttft_ms / 1000)
        usage = call.usage
        if usage:
            for counter, name in ((tin, "input_tokens"), (tout, "output_tokens"), (tcached, "cached_tokens")):
                if usage.get(name):
                    counter.inc(usage[name])
        if call.cost:
            cost.inc(call.cost)
        kind = call.error_type
        if kind:
            if kind in LIMIT_CODES:
                self.refusals.labels(endpoint, model, kind).inc()
            if kind.startswith("upstream_") or kind in UPSTREAM_CODES:
                self.upstream_errors.labels(model, provider, kind).inc()


class _GatewayCollector:
    """Gauges read at scrape time: the request-log queue."""

    def __init__(self, gateway):
        self.gateway = gateway

    def describe(self):
        """No fixed description (collected on demand)."""
        return []

    def collect(self):
        """Queued and written log rows."""
        logs = self.gateway.logs
        yield GaugeMetricFamily("promptproxy_log_queue_rows", "Request-log rows waiting to be written.",
                                value=logs.queued)
        yield GaugeMetricFamily("promptproxy_log_rows_written", "Request-log rows written by this process.",
                                value=logs.written)
        yield CounterMetricFamily("promptproxy_log_rows_unstorable", "Request-log rows refused by the database "
                                  "and written in reduced form.", value=logs.unstorable)
        yield CounterMetricFamily("promptproxy_log_rows_dropped", "Request-log rows not storable even in reduced "
                                  "form.", value=logs.dropped)


# -- readiness -------------------------------------------------------------------------------------
_HEADS: dict[str, frozenset] = {}


def migration_heads(directory: str) -> frozenset:
    """The head revision(s) of the migration scripts, read once per process from their literal `revision` and
    `down_revision` assignments (Alembic's ScriptDirectory would load Alembic, ~11 MB, into every serving
    process for a readiness probe; a test checks both agree)."""
    if directory not in _HEADS:
        revisions, parents = set(), set()
        for path in Path(directory, "versions").glob("*.py"):
            found = {}
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value:
                    found[target.id] = ast.literal_eval(node.value)
            if "revision" in found:
                revisions.add(found["revision"])
                down = found.get("down_revision")
                parents.update(down if isinstance(down, tuple | list) else [down] if down else [])
        _HEADS[directory] = frozenset(revisions - parents)
    return _HEADS[directory]


def readiness(app: Flask) -> tuple[dict, int]:
    """({status, checks}, HTTP status): the database answers and its schema is at the migrations' head."""
    gw = app.extensions["promptproxy"]
    if getattr(gw, "draining", False):
        return {"status": "unavailable", "reason": "shutting down"}, 503
    try:
        current = frozenset(db.session.scalars(sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        return {"status": "unavailable", "database": "unreachable or not set up"}, 503
    finally:
        db.session.remove()
    heads = migration_heads(MIGRATIONS_DIR)
    checks = {"database": "ok", "migrations": {"current": sorted(current), "head": sorted(heads)}}
    if current != heads:
        return {"status": "unavailable", **checks, "reason": "run `promptproxy db upgrade`"}, 503
    return {"status": "ok", **checks}, 200


# -- access log --------------------------------------------------------------------------------------
WORKER = 0  # this process's worker number under `serve --workers N` (N > 1), added to its access-log lines


def access_line(call=None, status: int | None = None, method: str | None = None, path: str | None = None,
                started: float | None = None) -> None:
    """One JSON line per request on `promptproxy.access` (request id, method, path, status, latency, model)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    now = time.time()  # ISO 8601 UTC with milliseconds, like every timestamp the CLI prints
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    if call is not None:
        line = {"time": stamp, "request_id": call.request_id, "method": method or "POST", "path": call.endpoint,
                "status": call.status, "latency_ms": round((time.perf_counter() - call.t0) * 1000, 2),
                "model": call.serving.slug if call.model is not None else call.model_name,
                "prompt": call.prompt.slug if call.prompt is not None else None, "stream": call.stream,
                "user_id": call.principal.user_id if call.principal else None, "error": call.error_type}
    else:
        line = {"time": stamp, "request_id": None, "method": method, "path": path, "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started else None}
    if WORKER:
        line["worker"] = WORKER
    access_log.info(orjson.dumps(line).decode())


class BatchedStreamHandler(logging.Handler):
    """Request threads append lines; one thread writes them every `interval` seconds in a single write.

    A plain StreamHandler writes to stderr under its lock on the request thread: under concurrency every request
    queued on that lock (and paid a syscall), which capped throughput. logging.shutdown() flushes what is left.
    """

    def __init__(self, stream, interval: float = 0.1):
        super().__init__()
        self.stream, self.interval = stream, interval
        self._lines: collections.deque[str] = collections.deque()
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="promptproxy-accesslog", daemon=True).start()

    def createLock(self) -> None:
        """No lock: deque.append is atomic, and emit does nothing else."""
        self.lock = None

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the formatted line."""
        self._lines.append(self.format(record))

    def flush(self) -> None:
        """Write every queued line now."""
        lines, popleft = [], self._lines.popleft
        while True:
            try:
                lines.append(popleft())
            except IndexError:  # empty (another flush may have taken the rest)
                break
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # noqa: S110  # nosec B110
                pass  # stderr went away; nothing else to tell

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self.flush()
        super().close()


def configure_logging() -> None:
    """Server logging to stderr: plain lines for promptproxy.*, bare JSON lines for the access log."""
    root = logging.getLogger("promptproxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    # The documented logging speed-ups: no caller lookup, thread or process names on each record.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if not access_log.handlers:
        handler = BatchedStreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False


# -- wiring ----------------------------------------------------------------------------------------
def install(app: Flask) -> None:
    """Routes /readyz and /metrics; metrics and the access log on the lifecycle's on_recorded stage."""
    from .rollups import install_orm_hook

    install_orm_hook()
    gw = app.extensions["promptproxy"]
    metrics = Metrics(gw)
    app.extensions["promptproxy.metrics"] = metrics
    gw.lifecycle.add("on_recorded", metrics.observe)
    gw.lifecycle.add("on_recorded", _access_from_call)
    if not app.config.get("ACCESS_LOG", True):
        access_log.disabled = True

    @app.get("/readyz")
    def readyz():
        """Ready: the database answers and migrations are at head (503 JSON otherwise)."""
        body, status = readiness(current_app._get_current_object())
        return Response(orjson.dumps(body), status=status, mimetype="application/json")

    @app.get("/metrics")
    def metrics_view():
        """Prometheus text format; see metrics_refusal for who may read it."""
        refused = metrics_refusal(current_app.config, request)
        if refused is not None:
            return refused
        data = generate_latest(current_app.extensions["promptproxy.metrics"].registry)
        return Response(data, mimetype=CONTENT_TYPE_LATEST)

    app.before_request(_start_timer)
    app.after_request(_access_non_api)
    trusted = int(app.config.get("TRUSTED_PROXIES") or 0)
    if trusted and not isinstance(app.wsgi_app, ProxyFix):
        # behind nginx or a load balancer: the client address and scheme come from the last `trusted` hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted, x_proto=trusted, x_host=0)


METRICS_REFUSED = ("set PROMPTPROXY_METRICS_TOKEN to serve /metrics on a non-loopback address, then send it as "
                      "a bearer token")


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; False for 0.0.0.0, ::, any other address or nothing."""
    address = (address or "").strip().strip("[]").lower()
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def metrics_refusal(config, req) -> Response | None:
    """None when the caller may read /metrics, else the JSON refusal.

    With PROMPTPROXY_METRICS_TOKEN set: `Authorization: Bearer <token>`, wherever the server listens. Without it:
    only when the server listens on loopback and the client is loopback too (a proxy that rewrites the client
    address with TRUSTED_PROXIES makes the server reachable from the network), so model names, providers, counts
    and cost are never open to the network by default.
    """
    token = config.get("METRICS_TOKEN") or ""
    if token:
        scheme, _, value = req.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return Response(orjson.dumps({"error": "metrics need a valid bearer token"}), status=401,
                            mimetype="application/json", headers={"WWW-Authenticate": "Bearer"})
        return None
    if is_loopback(config.get("HOST")) and is_loopback(req.remote_addr):
        return None
    return Response(orjson.dumps({"error": METRICS_REFUSED}), status=403, mimetype="application/json")


def _access_from_call(call) -> None:
    """/v1 lines are written when the call is recorded, so streams log their final status and duration."""
    from flask import has_request_context

    access_line(call, method=request.method if has_request_context() else "POST")


def _start_timer() -> None:
    if not request.path.startswith("/v1"):
        g.access_t0 = time.perf_counter()


def _access_non_api(response):
    started = g.get("access_t0")
    if started is not None and request.path not in ("/healthz", "/readyz", "/metrics"):
        access_line(status=response.status_code, method=request.method, path=request.path[:200], started=started)
    return response
