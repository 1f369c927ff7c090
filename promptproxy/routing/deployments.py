"""Deployments of a model: which one serves next (weighted or least-busy), passive health, and their RPM/TPM.

State lives in memory per process, or in Redis when REDIS_URL is set, so every instance sees one ejection, one
in-flight count and one set of deployment limits. Redis trouble never fails a call: routing falls back to weights.
"""
from __future__ import annotations

import logging
import random
import threading
import time

from ..core.catalog import ModelInfo
from ..core.errors import ErrorCode, Fault, GatewayError, UpstreamError

log = logging.getLogger("promptproxy.deployments")
FIELDS = ("fails", "ejections", "ejected_until", "busy_until", "served", "errors")


def _unhealthy(err: UpstreamError) -> bool:
    """Connect failures, timeouts, bad answers and 5xx count against a deployment; client 4xx never do."""
    if err.fault in (Fault.CONNECT, Fault.FIRST_BYTE, Fault.BAD):
        return True
    status = err.upstream_status or 0
    return err.fault is Fault.STATUS and (status >= 500 or status == 408)


class MemoryStore:
    """Per-process state: {deployment id: {field: number}} and minute counters."""

    def __init__(self):
        self._lock = threading.Lock()
        self._state: dict[int, dict] = {}
        self._counters: dict[str, float] = {}

    def read(self, ids) -> list[dict]:
        with self._lock:
            return [dict(self._state.get(i, {})) for i in ids]

    def add(self, ident: int, name: str, amount: float = 1) -> float:
        with self._lock:
            st = self._state.setdefault(ident, {})
            st[name] = st.get(name, 0) + amount
            return st[name]

    def put(self, ident: int, values: dict) -> None:
        with self._lock:
            self._state.setdefault(ident, {}).update(values)

    def count(self, key: str, amount: float, ttl: int) -> float:
        with self._lock:
            if len(self._counters) > 10_000:  # old minutes: drop them all, the current ones refill at once
                self._counters.clear()
            self._counters[key] = self._counters.get(key, 0) + amount
            return self._counters[key]

    def counts(self, keys) -> list[float]:
        with self._lock:
            return [self._counters.get(k, 0) for k in keys]


class RedisStore:
    """The same state in Redis hashes and counters, shared by every instance."""

    def __init__(self, url: str, prefix: str):
        import redis  # only with Redis configured

        self.r = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self.prefix = f"{prefix}:deploy"

    def _key(self, ident) -> str:
        return f"{self.prefix}:{ident}"

    def read(self, ids) -> list[dict]:
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self._key(i))
        return [{k.decode(): float(v) for k, v in found.items()} for found in pipe.execute()]

    def add(self, ident: int, name: str, amount: float = 1) -> float:
        return float(self.r.hincrbyfloat(self._key(ident), name, amount))

    def put(self, ident: int, values: dict) -> None:
        self.r.hset(self._key(ident), mapping=values)

    def count(self, key: str, amount: float, ttl: int) -> float:
        pipe = self.r.pipeline(transaction=False)
        pipe.incrbyfloat(f"{self.prefix}:{key}", amount)
        pipe.expire(f"{self.prefix}:{key}", ttl)
        return float(pipe.execute()[0])

    def counts(self, keys) -> list[float]:
        return [float(v or 0) for v in self.r.mget([f"{self.prefix}:{k}" for k in keys])]


class Deployments:
    """Choose, track and eject the deployments of every model."""

    def __init__(self, cfg, clock=time.time):
        self.clock = clock
        self.eject_after = int(cfg.get("DEPLOYMENT_EJECT_AFTER", 3))  # consecutive failures
        self.eject_base = float(cfg.get("DEPLOYMENT_EJECT_SECONDS", 10.0))  # doubled on each ejection in a row
        self.eject_max = float(cfg.get("DEPLOYMENT_EJECT_MAX_SECONDS", 300.0))
        url = cfg.get("REDIS_URL")
        self.store = RedisStore(url, cfg.get("REDIS_PREFIX") or "promptproxy") if url else MemoryStore()
        self.errors: tuple = (OSError,)
        if url:
            from redis.exceptions import RedisError

            self.errors = (OSError, RedisError)

    # -- choosing ------------------------------------------------------------------------------------
    def order(self, model: ModelInfo) -> list[ModelInfo]:
        """The model's deployments in the order to try them: the chosen one first, then the other healthy ones.

        Ejected, throttled (429) and over-limit deployments are left out while another one is available; when
        none is, all of them are returned (never ejecting the last one means a model always has somewhere to go).
        """
        deps = list(model.deployments) or [model]
        if len(deps) == 1 and not (deps[0].rpm or deps[0].tpm):
            return deps
        try:
            states = self.store.read([d.deployment_id for d in deps])
            minute = int(self.clock() // 60)
            used = self.store.counts([f"{d.deployment_id}:{kind}:{minute}" for d in deps for kind in ("rpm", "tpm")])
        except self.errors as exc:
            log.warning("deployment state unavailable (%s): choosing by weight only", type(exc).__name__)
            states, used = [{} for _ in deps], [0.0] * (2 * len(deps))
        now = self.clock()
        ready, limited = [], 0
        for i, (dep, st) in enumerate(zip(deps, states, strict=True)):
            if (dep.rpm and used[2 * i] >= dep.rpm) or (dep.tpm and used[2 * i + 1] >= dep.tpm):
                limited += 1
            elif dep.weight > 0 and st.get("ejected_until", 0) <= now and st.get("busy_until", 0) <= now:
                ready.append((dep, st))
        if limited == len(deps):
            return []  # every deployment is at its own RPM/TPM this minute: the model is full
        if not ready:
            return [d for i, d in enumerate(deps) if not (d.rpm and used[2 * i] >= d.rpm)
                    and not (d.tpm and used[2 * i + 1] >= d.tpm)]
        if model.strategy == "least-busy":
            # Random tie-break: equal counts must not always favour the first deployment.
            ready.sort(key=lambda pair: (pair[0].priority, pair[1].get("inflight", 0), random.random()))  # nosec B311
            return [dep for dep, _ in ready]
        return _weighted_order([dep for dep, _ in ready])

    # -- tracking ------------------------------------------------------------------------------------
    def attempt(self, dep: ModelInfo, siblings: tuple, send):
        """Run one upstream attempt on a deployment, counting it in flight and noting its health.

        `siblings` are all deployments of its model (so the last healthy one is never ejected).
        """
        tracked = dep.deployment_id is not None
        if tracked:
            self._safe(self._begin, dep)
        try:
            result = send()
        except UpstreamError as err:
            if tracked:
                self._safe(self._failed, dep, siblings, err)
            raise
        except BaseException:
            if tracked:
                self._safe(self.store.add, dep.deployment_id, "inflight", -1)
            raise
        if tracked:
            self._safe(self.store.put, dep.deployment_id, {"fails": 0, "ejections": 0})
        return result

    def release(self, dep: ModelInfo, usage: dict | None, failed: bool = False) -> None:
        """The call a deployment served has ended: out of flight; its tokens count toward the deployment's TPM."""
        if dep is None or dep.deployment_id is None:
            return
        self._safe(self._release, dep, usage or {}, failed)

    def _begin(self, dep: ModelInfo) -> None:
        self.store.add(dep.deployment_id, "inflight", 1)
        self.store.count(f"{dep.deployment_id}:rpm:{int(self.clock() // 60)}", 1, 120)

    def _release(self, dep: ModelInfo, usage: dict, failed: bool) -> None:
        self.store.add(dep.deployment_id, "inflight", -1)
        self.store.add(dep.deployment_id, "errors" if failed else "served", 1)
        tokens = (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
        if tokens:
            self.store.count(f"{dep.deployment_id}:tpm:{int(self.clock() // 60)}", tokens, 120)

    def _failed(self, dep: ModelInfo, siblings: tuple, err: UpstreamError) -> None:
        ident = dep.deployment_id
        self.store.add(ident, "inflight", -1)
        if err.upstream_status == 429:  # up but busy: pause it for its Retry-After, never eject it
            self.store.put(ident, {"busy_until": self.clock() + min(err.retry_after or 1.0, self.eject_max)})
            return
        if not _unhealthy(err):
            return
        self.store.add(ident, "errors", 1)
        if self.store.add(ident, "fails", 1) < self.eject_after:
            return
        if not self._others_healthy(dep, siblings):
            return  # never eject the last healthy deployment: it keeps serving (and failing over to fallbacks)
        ejections = self.store.add(ident, "ejections", 1)
        seconds = min(self.eject_base * 2 ** (ejections - 1), self.eject_max)
        self.store.put(ident, {"ejected_until": self.clock() + seconds, "fails": 0})
        log.warning("deployment %s of model %s (%s / %s) ejected for %.0f s after %s",
                    ident, dep.slug, dep.provider.name, dep.upstream_model, seconds, err.kind)

    def _others_healthy(self, dep: ModelInfo, siblings: tuple) -> bool:
        siblings = [d for d in siblings if d.deployment_id != dep.deployment_id and d.weight > 0]
        if not siblings:
            return False
        now = self.clock()
        states = self.store.read([d.deployment_id for d in siblings])
        return any(st.get("ejected_until", 0) <= now for st in states)

    def _safe(self, fn, *args) -> None:
        try:
            fn(*args)
        except self.errors as exc:
            log.warning("deployment state not updated (%s)", type(exc).__name__)

    def states(self, model: ModelInfo) -> list[dict]:
        """Health and traffic of each deployment, for `model show` and the dashboard."""
        deps = [d for d in model.deployments if d.deployment_id is not None]
        try:
            states = self.store.read([d.deployment_id for d in deps])
        except self.errors:
            states = [{} for _ in deps]
        now = self.clock()
        out = []
        for dep, st in zip(deps, states, strict=True):
            health = "ejected" if st.get("ejected_until", 0) > now else (
                "throttled" if st.get("busy_until", 0) > now else "healthy")
            out.append({"deployment_id": dep.deployment_id, "health": health,
                        "retry_in": round(max(st.get("ejected_until", 0), st.get("busy_until", 0)) - now, 1)
                        if health != "healthy" else 0.0,
                        "in_flight": int(st.get("inflight", 0)), "served": int(st.get("served", 0)),
                        "errors": int(st.get("errors", 0))})
        return out


def _weighted_order(deps: list[ModelInfo]) -> list[ModelInfo]:
    """Best priority first; inside a priority, a weighted random order (Efraimidis-Spirakis keys)."""
    # Routing randomness, not security: random is right here.
    return sorted(deps, key=lambda d: (d.priority, -random.random() ** (1.0 / d.weight)))  # nosec B311


def expand(deployments: Deployments, models: list[ModelInfo]) -> list[ModelInfo]:
    """The model and its fallbacks, each replaced by its deployments in the order to try them."""
    out = [dep for model in models for dep in deployments.order(model)]
    if not out:
        seconds = 60 - int(deployments.clock()) % 60
        raise GatewayError(429, f"Every deployment of `{models[0].slug}` is at its own rate limit this minute; "
                           "try again later.", code=ErrorCode.RATE_LIMITED, type="requests",
                           headers={"Retry-After": str(seconds)})
    return out
