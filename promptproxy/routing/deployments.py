"""Health and traffic per deployment (a provider and its upstream model), on the shared state.

A deployment is where a model runs: each row of `model deploy`, or the model's own provider and upstream name
when it has none (an implicit deployment). Its state is keyed `dep:<provider id>:<upstream model>`, so two models
on the same upstream model share it, as they share the upstream's limits. It holds a 429's Retry-After
(`busy_until`) and passive ejection (`fails`, `ejections`, `ejected_until`). A deployment row's own traffic and
limits are keyed `deploy:<row id>`: in-flight, served and failed counts; its rpm is an atomic take on
`deploy:<id>:rpm:<minute>`, so it is exact across workers and instances, and tokens are counted into
`deploy:<id>:tpm:<minute>` once the call ends. A store that cannot be reached never fails a call: routing
falls back to weights.
"""
from __future__ import annotations

import logging
import random
import threading
import time

from ..core.catalog import ModelInfo
from ..core.errors import UpstreamError
from ..core.state import MemoryState

log = logging.getLogger("promptproxy.deployments")


# A row's traffic is counters, not a hash: writing one does not make every process re-read the health hashes
# (core/state_file.py keeps a copy of those while no hash changes), so a call costs no health read from the file.
TRAFFIC = ("inflight", "served", "errors")
FOREVER = 10 * 365 * 86400  # counters of a row's life (ttl of the store's expiring counters)


def _counts_flight(dep: ModelInfo) -> bool:
    """In-flight calls are counted in the shared state for least-busy rows only: the only routing that reads them."""
    return dep.deployment_id is not None and dep.strategy == "least-busy"


def health_key(dep: ModelInfo) -> str:
    """The state key of a deployment's health: its provider and upstream model."""
    return f"dep:{dep.provider.id}:{dep.upstream_model}"


def traffic_key(dep: ModelInfo) -> str:
    """The state key of a deployment row's own traffic and limits (in flight, served, errors, rpm, tpm)."""
    return f"deploy:{dep.deployment_id}"


class Deployments:
    """Choose, track and eject the deployments of every model."""

    def __init__(self, cfg, state=None, clock=time.time):
        self.clock = clock
        self.state = state if state is not None else MemoryState()
        self.eject_after = int(cfg.get("DEPLOYMENT_EJECT_AFTER", 3))  # consecutive failures
        self.eject_base = float(cfg.get("DEPLOYMENT_EJECT_SECONDS", 10.0))  # doubled on each ejection in a row
        self.eject_max = float(cfg.get("DEPLOYMENT_EJECT_MAX_SECONDS", 300.0))  # also the longest Retry-After kept
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # served/errors counters not yet written (see _tally)
        self._timer: threading.Timer | None = None

    # -- reading and choosing --------------------------------------------------------------------------
    def read(self, deps: list[ModelInfo], traffic: bool = False) -> list[dict]:
        """Each deployment's health, with `tpm_used` this minute where it has a tpm limit, and its row's counted
        traffic (`inflight`, `served`, `errors`) with `traffic` — in flight always for least-busy rows (routing
        reads it)."""
        try:
            states = self.state.read([health_key(d) for d in deps])
            minute = int(self.clock() // 60)
            wanted = [(i, name) for i, d in enumerate(deps) if d.deployment_id is not None
                      for name in (TRAFFIC if traffic else ("inflight",) if d.strategy == "least-busy" else ())]
            wanted += [(i, "tpm_used") for i, d in enumerate(deps) if d.tpm]
            if wanted:
                values = self.state.counts([f"{traffic_key(deps[i])}:tpm:{minute}" if name == "tpm_used"
                                            else f"{traffic_key(deps[i])}:{name}" for i, name in wanted])
                for (i, name), value in zip(wanted, values, strict=True):
                    states[i][name] = value
            return states
        except self.state.errors as exc:
            log.warning("deployment state unavailable (%s): choosing by weight only", type(exc).__name__)
            return [{} for _ in deps]

    def order(self, model: ModelInfo, deps: list[ModelInfo], states: list[dict]) -> list[tuple]:
        """A model's deployments in the order to try them, as (deployment, state, spare).

        Healthy ones first, by priority and weight (or least busy). Spares (ejected or drained ones) follow: the
        walk tries them only when no healthy one of the model was tried (all passed over for their limits, or
        none left), so a model always has somewhere to go. Throttled and token-full ones come last: the walk
        passes over them, and they decide its answer when nothing else was tried.
        """
        now = self.clock()
        if len(deps) == 1:  # the common case, without the sorting
            dep, st = deps[0], states[0]
            waits = self.waiting(dep, st, now) is not None
            return [(dep, st, not waits and (dep.weight <= 0 or st.get("ejected_until", 0) > now))]
        pairs = list(zip(deps, states, strict=True))
        waiting = [(d, st, False) for d, st in pairs if self.waiting(d, st, now)]
        usable = [(d, st) for d, st in pairs if not self.waiting(d, st, now)]
        ready = [(d, st) for d, st in usable if d.weight > 0 and st.get("ejected_until", 0) <= now]
        spares = [(d, st, True) for d, st in _weighted_order([p for p in usable if p not in ready])]
        if model.strategy == "least-busy":
            # Random tie-break: equal counts must not always favour the first deployment.
            ready.sort(key=lambda p: (p[0].priority, p[1].get("inflight", 0), random.random()))  # nosec B311
        else:
            ready = _weighted_order(ready)
        return [(d, st, False) for d, st in ready] + spares + waiting

    def waiting(self, dep: ModelInfo, st: dict, now: float) -> str | None:
        """"throttled" (a 429's Retry-After runs) or "limited" (its tpm is spent this minute), else None."""
        if st.get("busy_until", 0) > now:
            return "throttled"
        if dep.tpm and st.get("tpm_used", 0) >= dep.tpm:
            return "limited"
        return None

    def minute_left(self) -> float:
        """Seconds until the rpm/tpm minute turns."""
        return 60 - self.clock() % 60

    # -- one attempt -----------------------------------------------------------------------------------
    def begin(self, dep: ModelInfo) -> bool:
        """An attempt is about to go to `dep`: take one of its rpm (False when none is left), count it in flight."""
        try:
            if dep.rpm and not self.state.take(f"{traffic_key(dep)}:rpm:{int(self.clock() // 60)}", dep.rpm, 1,
                                               120):
                return False
            if _counts_flight(dep):
                self.state.count(f"{traffic_key(dep)}:inflight", 1, FOREVER)
        except self.state.errors as exc:
            log.warning("deployment state not updated (%s)", type(exc).__name__)
        return True

    def succeeded(self, dep: ModelInfo, st: dict) -> None:
        """The attempt got an answer: the failure streak ends (the call stays in flight until `release`)."""
        if st.get("fails") or st.get("ejections"):
            self._safe(self.state.put, health_key(dep), {"fails": 0, "ejections": 0})

    def abandoned(self, dep: ModelInfo) -> None:
        """The attempt ended without an upstream answer to judge (the gateway's own error): out of flight."""
        if _counts_flight(dep):
            self._safe(self.state.count, f"{traffic_key(dep)}:inflight", -1, FOREVER)

    def failed(self, dep: ModelInfo, siblings: tuple, err: UpstreamError) -> None:
        """The attempt failed: out of flight; a 429 pauses the deployment, the upstream's faults may eject it."""
        self.abandoned(dep)
        self._safe(self._failed, dep, siblings, err)

    def release(self, dep: ModelInfo, usage: dict | None, failed: bool = False) -> None:
        """The call a deployment served has ended: out of flight; its tokens count toward its TPM."""
        if dep is None or dep.deployment_id is None:
            return  # an implicit deployment has no row to count traffic on
        self._safe(self._release, dep, usage or {}, failed)

    def _release(self, dep: ModelInfo, usage: dict, failed: bool) -> None:
        key = traffic_key(dep)
        if _counts_flight(dep):
            self.state.count(f"{key}:inflight", -1, FOREVER)
        self._tally(f"{key}:{'errors' if failed else 'served'}")
        tokens = (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
        if tokens and dep.tpm:
            self.state.count(f"{key}:tpm:{int(self.clock() // 60)}", tokens, 120)

    def _tally(self, key: str) -> None:
        """Count one served or failed call, written with this process's others within a second.

        One write per call to the workers' file made every worker wait on its lock at c=32 (p99 ×5); the counts are
        for `model show` and the dashboard, which may be a second behind.
        """
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._timer is not None:
                return
            self._timer = threading.Timer(1.0, self._flush)
            self._timer.daemon = True
        self._timer.start()

    def _flush(self) -> None:
        """Write the counts tallied since the last flush."""
        with self._lock:
            pending, self._pending, self._timer = self._pending, {}, None
        for key, amount in pending.items():
            self._safe(self.state.count, key, amount, FOREVER)

    def close(self) -> None:
        """Write what is still tallied (graceful shutdown)."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
        self._flush()

    def _failed(self, dep: ModelInfo, siblings: tuple, err: UpstreamError) -> None:
        key = health_key(dep)
        if err.throttled:  # up but busy: wait out its Retry-After, never eject it
            if err.retry_after:
                self.state.put(key, {"busy_until": self.clock() + min(err.retry_after, self.eject_max)})
            return
        if not err.counts_against_health:
            return
        if dep.deployment_id is not None:
            self.state.count(f"{traffic_key(dep)}:errors", 1, FOREVER)
        others = [d for d in siblings if health_key(d) != key and d.weight > 0]
        if not others or self.state.add(key, "fails", 1) < self.eject_after:
            return
        if not any(st.get("ejected_until", 0) <= self.clock() for st in self.state.read([health_key(d)
                                                                                          for d in others])):
            return  # never eject the last healthy deployment: it keeps serving (and failing over to fallbacks)
        ejections = self.state.add(key, "ejections", 1)
        seconds = min(self.eject_base * 2 ** (ejections - 1), self.eject_max)
        self.state.put(key, {"ejected_until": self.clock() + seconds, "fails": 0})
        log.warning("deployment %s of model %s (%s / %s) ejected for %.0f s after %s",
                    dep.deployment_id, dep.slug, dep.provider.name, dep.upstream_model, seconds, err.kind)

    def _safe(self, fn, *args) -> None:
        try:
            fn(*args)
        except self.state.errors as exc:
            log.warning("deployment state not updated (%s)", type(exc).__name__)

    # -- the dashboard and `model show` ----------------------------------------------------------------
    def states(self, model: ModelInfo) -> list[dict]:
        """Health and traffic of each deployment row of a model."""
        deps = [d for d in model.deployments if d.deployment_id is not None]
        self._flush()  # this process's own tallies are shown at once
        states = self.read(deps, traffic=True)
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


def _weighted_order(pairs: list[tuple[ModelInfo, dict]]) -> list[tuple[ModelInfo, dict]]:
    """Best priority first; inside a priority, a weighted random order (Efraimidis-Spirakis keys)."""
    # Routing randomness, not security: random is right here. Weight 0 (draining) sorts last.
    return sorted(pairs, key=lambda p: (p[0].priority, -random.random() ** (1.0 / p[0].weight)  # nosec B311
                                        if p[0].weight > 0 else 0.0))
