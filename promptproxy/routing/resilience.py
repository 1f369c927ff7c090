"""Retries, fallbacks and a circuit breaker per provider: all before the first byte reaches the client."""
from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from flask import current_app

from ..alerts.events import CircuitChanged
from ..core.errors import ErrorCode, Fault, GatewayError, UpstreamError

log = logging.getLogger("promptproxy.resilience")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before trying the same model again."""

    max_retries: int = 2
    backoff: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 20.0

    @classmethod
    def from_config(cls, cfg) -> RetryPolicy:
        """Read RETRY_* settings."""
        return cls(int(cfg.get("RETRY_MAX", 2)), float(cfg.get("RETRY_BACKOFF", 0.5)),
                   float(cfg.get("RETRY_BACKOFF_MAX", 8.0)), float(cfg.get("RETRY_AFTER_CAP", 20.0)))

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `retry` (1-based); None when Retry-After exceeds the cap."""
        if retry_after is not None:
            return retry_after if retry_after <= self.retry_after_cap else None
        top = min(self.backoff_max, self.backoff * 2 ** (retry - 1))
        # Jitter, so many clients do not retry in lockstep (not a security use of randomness).
        return random.uniform(top / 2, top)  # nosec B311


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None when absent or bad."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0) if when else None


def retryable(err: UpstreamError) -> bool:
    """May the same model be tried again? Connect failures and retryable statuses, never client errors."""
    if err.fault is Fault.CONNECT:
        return True
    return err.fault is Fault.STATUS and err.upstream_status in RETRYABLE_STATUSES


def fallback_worthy(err: UpstreamError) -> bool:
    """May the next model in the fallback list be tried? Also after a first-byte timeout."""
    return retryable(err) or err.fault is Fault.FIRST_BYTE


def unhealthy(err: UpstreamError) -> bool:
    """Does this failure count against the provider's breaker? (429 means up but busy: it does not.)"""
    if err.fault in (Fault.CONNECT, Fault.FIRST_BYTE, Fault.BAD):
        return True
    status = err.upstream_status or 0
    return err.fault is Fault.STATUS and (status >= 500 or status == 408)


# -- circuit breaker -------------------------------------------------------------------------------
@dataclass(slots=True)
class _State:
    name: str
    pid: int = 0
    outcomes: deque = field(default_factory=deque)  # (time, failed) of counted answers inside the window
    state: str = "closed"  # closed, open, half_open
    opened_at: float = 0.0
    probe_at: float = 0.0
    busy_until: float = 0.0  # an upstream 429's Retry-After: nothing is sent before it
    last_error: str | None = None

    def failures(self) -> int:
        return sum(1 for _, failed in self.outcomes if failed)


class Breakers:
    """One breaker per provider, in memory per process, shared by every caller (Envoy/Hystrix style).

    It opens only when, inside the last `window` seconds, at least `min_requests` answers were counted and at
    least `failure_rate` of them were failures (connect errors, timeouts, 5xx): one caller's bad requests never
    pause a provider that answers others. Client errors (4xx but 408/429) are not counted at all; a 429 only
    makes the provider wait out its Retry-After. Open, it lets one probe through every `cooldown` seconds
    (half-open), so a model without fallbacks keeps trying at a low rate. `min_requests` 0 switches it off.
    """

    def __init__(self, min_requests: int = 10, cooldown: float = 30.0, clock=time.monotonic, *,
                 failure_rate: float = 0.5, window: float = 30.0, threshold: int | None = None):
        self.min_requests = min_requests if threshold is None else threshold  # `threshold`: the old name
        self.cooldown = cooldown
        self.failure_rate = failure_rate
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[int, _State] = {}
        self.listener = None  # callable(CircuitChanged) on open and close (the alerts queue: no I/O)

    @classmethod
    def from_config(cls, cfg) -> Breakers:
        """Read BREAKER_* settings; BREAKER_THRESHOLD 0 (the old switch) still turns breakers off."""
        volume = int(cfg.get("BREAKER_MIN_REQUESTS", 10))
        if int(cfg.get("BREAKER_THRESHOLD", 1)) == 0:
            volume = 0
        options = {"failure_rate": float(cfg.get("BREAKER_FAILURE_RATE", 0.5)),
                   "window": float(cfg.get("BREAKER_WINDOW", 30.0))}
        if cfg.get("SHARED_STORE") and cls is Breakers:  # `serve --workers N`: one breaker per provider, not N
            from ..core.sharedstore import shared_file

            return SharedBreakers(shared_file(cfg["SHARED_STORE"]), volume, float(cfg.get("BREAKER_COOLDOWN", 30.0)),
                                  **options)
        return cls(volume, float(cfg.get("BREAKER_COOLDOWN", 30.0)), **options)

    def _get(self, provider) -> _State:
        found = self._states.get(provider.id)
        if found is None:
            found = self._states[provider.id] = _State(provider.name, provider.id)
        return found

    def _trim(self, st: _State, now: float) -> None:
        while st.outcomes and now - st.outcomes[0][0] > self.window:
            st.outcomes.popleft()

    def allow(self, provider) -> bool:
        """May a request go to this provider now? In half-open, only one probe at a time is let through."""
        if self.min_requests <= 0:
            return True
        with self._lock:
            st = self._get(provider)
            now = self.clock()
            if now < st.busy_until:
                return False
            if st.state == "closed":
                return True
            if st.state == "open" and now - st.opened_at >= self.cooldown:
                st.state, st.probe_at = "half_open", now
                return True
            # A probe that never reported (its thread died) must not keep the breaker shut forever.
            if st.state == "half_open" and now - st.probe_at >= self.cooldown:
                st.probe_at = now
                return True
            return False

    def busy(self, provider) -> bool:
        """Is this provider waiting out an upstream 429's Retry-After?"""
        with self._lock:
            found = self._states.get(provider.id)
            return found is not None and self.clock() < found.busy_until

    def retry_after(self, provider) -> float:
        """Seconds until this provider may be tried (or probed) again."""
        with self._lock:
            st = self._get(provider)
            now = self.clock()
            if st.state == "closed":
                return max(st.busy_until - now, 0.0)
            start = st.opened_at if st.state == "open" else st.probe_at
            return max(self.cooldown - (now - start), st.busy_until - now, 0.0)

    def success(self, provider) -> None:
        """The provider answered: counted in the window; a successful probe closes the breaker."""
        self._record(provider, False, None)

    def neutral(self, provider) -> None:
        """A client error (4xx): not counted; a probe that got one shows the provider is up, so it closes."""
        if self.min_requests <= 0:
            return
        with self._lock:
            st = self._get(provider)
            if st.state == "half_open":
                self._close(st)

    def throttle(self, provider, seconds: float | None) -> None:
        """An upstream 429: send nothing to this provider before its Retry-After (not counted as a failure)."""
        if self.min_requests <= 0 or not seconds:
            return
        with self._lock:
            st = self._get(provider)
            st.busy_until = max(st.busy_until, self.clock() + seconds)
            if st.state == "half_open":
                self._close(st)

    def failure(self, provider, kind: str | None = None) -> None:
        """Count a failure (connect, timeout, 5xx); open on volume and rate, or at once when a probe fails."""
        self._record(provider, True, kind)

    def _record(self, provider, failed: bool, kind: str | None) -> None:
        if self.min_requests <= 0:
            return
        with self._lock:
            st = self._get(provider)
            now = self.clock()
            if not failed:
                if st.state != "closed":
                    self._close(st)
                st.outcomes.append((now, False))
                self._trim(st, now)
                return
            st.last_error = kind
            if st.state == "half_open":
                st.state, st.opened_at = "open", now
                log.warning("circuit breaker for provider %s: probe failed (%s), open again", st.name, kind)
                return
            st.outcomes.append((now, True))
            self._trim(st, now)
            total, failures = len(st.outcomes), st.failures()
            if st.state == "closed" and total >= self.min_requests and failures >= self.failure_rate * total:
                st.state, st.opened_at = "open", now
                log.warning("circuit breaker for provider %s opened: %d of %d answers failed in %.0f s (%s)",
                            st.name, failures, total, self.window, kind)
                self._changed(st, "open", f"{failures} of {total} answers failed in {self.window:.0f} s ({kind})")

    def _close(self, st: _State) -> None:
        log.info("circuit breaker for provider %s closed", st.name)
        st.state = "closed"
        st.outcomes.clear()
        self._changed(st, "closed", None)

    def _changed(self, st: _State, state: str, reason: str | None) -> None:
        if self.listener is not None:
            try:
                self.listener(CircuitChanged(st.pid, st.name, state, time.time(), reason))
            except Exception:  # an alert must never break a request
                log.exception("circuit breaker listener failed")

    def states(self) -> dict:
        """{provider_id: {name, state, failures, retry_in, last_error}} for every provider seen."""
        with self._lock:
            now = self.clock()
            out = {}
            for pid, st in self._states.items():
                self._trim(st, now)
                start = st.opened_at if st.state == "open" else st.probe_at
                retry_in = max(self.cooldown - (now - start), 0.0) if st.state != "closed" else 0.0
                out[pid] = {"name": st.name, "state": st.state, "failures": st.failures(),
                            "retry_in": round(retry_in, 1), "last_error": st.last_error}
            return out


class SharedBreakers(Breakers):
    """Breakers whose state and counts live in the workers' shared file (`serve --workers N`).

    State changes (open, half-open probe, close, an upstream's Retry-After) are made in one transaction on the
    file and seen by every worker on its next call (a shared generation number tells it to reload). Failures are
    written at once; successes are added in one write per second per worker, so a worker deciding to open sees
    the other workers' successes up to a second late. The clock must be system-wide (time.monotonic is on Linux).
    """

    def __init__(self, shared, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shared = shared
        self._lock = threading.RLock()  # the base methods run inside our locked sections
        self._generation = -1
        self._pending: dict[tuple[int, int], int] = {}  # (provider id, second) -> successes not yet written
        self._flushed_at = 0

    # -- the file ----------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Reload every provider's state when another worker changed one."""
        generation = self.shared.generation()
        if generation == self._generation:
            return
        rows = self.shared._conn().execute("SELECT key, value FROM state WHERE key LIKE 'breaker:%'").fetchall()
        for key, value in rows:
            self._apply(int(key.split(":")[1]), value)
        self._generation = generation

    def _apply(self, pid: int, value: str) -> _State:
        data = json.loads(value)
        st = self._states.get(pid) or self._states.setdefault(pid, _State(data["name"], pid))
        st.state, st.opened_at, st.probe_at = data["state"], data["opened_at"], data["probe_at"]
        st.busy_until, st.last_error = data["busy_until"], data["last_error"]
        return st

    def _load(self, conn, provider) -> _State:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (f"breaker:{provider.id}",)).fetchone()
        return self._apply(provider.id, row[0]) if row else self._get(provider)

    def _save(self, conn, pid: int, st: _State, reset: bool = False) -> None:
        value = json.dumps({"name": st.name, "state": st.state, "opened_at": st.opened_at, "probe_at": st.probe_at,
                            "busy_until": st.busy_until, "last_error": st.last_error})
        conn.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                     "excluded.value", (f"breaker:{pid}", value))
        if reset:  # closed just now: the window starts empty, as in memory
            conn.execute("DELETE FROM counters WHERE key >= ? AND key < ?", (f"breaker:{pid}:", f"breaker:{pid};"))
        self.shared.bump()

    def _add(self, conn, pid: int, second: int, kind: str, amount: int) -> None:
        conn.execute("INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                     "value = value + excluded.value", (f"breaker:{pid}:{second}:{kind}", amount,
                                                        second + self.window + 1))

    def _flush(self, conn) -> None:
        pending, self._pending = self._pending, {}
        for (pid, second), amount in pending.items():
            self._add(conn, pid, second, "ok", amount)
        self._flushed_at = int(self.clock())

    def _window(self, conn, pid: int, now: float) -> tuple[int, int]:
        """(answers, failures) counted by all workers in the last `window` seconds."""
        conn.execute("DELETE FROM counters WHERE key >= ? AND key < ? AND expires <= ?",
                     (f"breaker:{pid}:", f"breaker:{pid};", now))
        total = failures = 0
        for key, value in conn.execute("SELECT key, value FROM counters WHERE key >= ? AND key < ?",
                                       (f"breaker:{pid}:", f"breaker:{pid};")):
            _, _, second, kind = key.split(":")
            if now - int(second) <= self.window:
                total += value
                failures += value if kind == "fail" else 0
        return total, failures

    def _changing(self, provider, fn):
        """Run a base-class method on the provider's current shared state and write back what it changed."""
        with self._lock, self.shared.tx() as conn:
            st = self._load(conn, provider)
            before = (st.state, st.opened_at, st.probe_at, st.busy_until, st.last_error)
            result = fn(provider)
            if (st.state, st.opened_at, st.probe_at, st.busy_until, st.last_error) != before:
                self._save(conn, provider.id, st, reset=st.state == "closed" and before[0] != "closed")
            return result

    # -- the Breakers interface --------------------------------------------------------------------
    def allow(self, provider) -> bool:
        """As Breakers.allow; only the open/half-open path takes the file lock (one probe among all workers)."""
        if self.min_requests <= 0:
            return True
        with self._lock:
            self._sync()
            st = self._get(provider)
            if st.state == "closed" and self.clock() >= st.busy_until:
                return True
        return self._changing(provider, super().allow)

    def busy(self, provider) -> bool:
        """As Breakers.busy, on the shared state."""
        with self._lock:
            self._sync()
            return super().busy(provider)

    def retry_after(self, provider) -> float:
        """As Breakers.retry_after, on the shared state."""
        with self._lock:
            self._sync()
            return super().retry_after(provider)

    def neutral(self, provider) -> None:
        """As Breakers.neutral, written to the file when it closes a half-open breaker."""
        if self.min_requests > 0:
            self._changing(provider, super().neutral)

    def throttle(self, provider, seconds: float | None) -> None:
        """As Breakers.throttle, for every worker."""
        if self.min_requests > 0 and seconds:
            self._changing(provider, lambda p: Breakers.throttle(self, p, seconds))

    def _record(self, provider, failed: bool, kind: str | None) -> None:
        if self.min_requests <= 0:
            return
        now = self.clock()
        if not failed:
            with self._lock:
                self._sync()
                if self._get(provider).state == "closed":
                    key = (provider.id, int(now))
                    self._pending[key] = self._pending.get(key, 0) + 1
                    if int(now) == self._flushed_at:
                        return
                    with self.shared.tx() as conn:  # at most once a second per worker
                        self._flush(conn)
                    return
        with self._lock, self.shared.tx() as conn:
            self._flush(conn)
            st = self._load(conn, provider)
            if not failed:
                self._close(st)  # a successful probe
                self._save(conn, provider.id, st, reset=True)
                return
            st.last_error = kind
            if st.state == "half_open":
                st.state, st.opened_at = "open", now
                log.warning("circuit breaker for provider %s: probe failed (%s), open again", st.name, kind)
            else:
                self._add(conn, provider.id, int(now), "fail", 1)
                total, failures = self._window(conn, provider.id, now)
                if st.state == "closed" and total >= self.min_requests and failures >= self.failure_rate * total:
                    st.state, st.opened_at = "open", now
                    log.warning("circuit breaker for provider %s opened: %d of %d answers failed in %.0f s (%s)",
                                st.name, failures, total, self.window, kind)
                    self._changed(st, "open", f"{failures} of {total} answers failed in {self.window:.0f} s ({kind})")
            self._save(conn, provider.id, st)

    def states(self) -> dict:
        """As Breakers.states, with failures counted by all workers."""
        with self._lock, self.shared.tx() as conn:
            self._flush(conn)
            self._generation = -1
            self._sync()
            now = self.clock()
            out = {}
            for pid, st in self._states.items():
                start = st.opened_at if st.state == "open" else st.probe_at
                retry_in = max(self.cooldown - (now - start), 0.0) if st.state != "closed" else 0.0
                out[pid] = {"name": st.name, "state": st.state, "failures": self._window(conn, pid, now)[1],
                            "retry_in": round(retry_in, 1), "last_error": st.last_error}
            return out


def breaker_states(app=None) -> dict:
    """This process's breaker per provider (for the dashboard): {provider_id: {name, state, failures, ...}}."""
    app = app or current_app
    return app.extensions["promptproxy"].breakers.states()


# -- the send loop ---------------------------------------------------------------------------------
def candidates(gw, model, kind: str, supports) -> list:
    """The model, then its fallbacks in order; only those of the same kind whose provider can serve the call."""
    out, seen = ([model] if supports(model) else []), {model.id}
    for slug in model.fallbacks:
        found = gw.catalog.model(slug)
        if found is None or found.id in seen or found.kind != kind or not supports(found):
            continue
        seen.add(found.id)
        out.append(found)
    return out


def send_with_fallbacks(gw, models: list, deadline: float, attempt):
    """Try each model in turn, retrying retryable failures with backoff, all within the deadline.

    `attempt(model, remaining)` returns a result or raises GatewayError (UpstreamError for upstream faults).
    Returns (model, result, failures) where failures lists (model slug, error kind) of the attempts that failed.
    """
    policy, breakers = gw.retry, gw.breakers
    failures: list[tuple[str, str]] = []
    last: UpstreamError | None = None
    shut: list = []
    for model in models:
        provider = model.provider
        for retry in range(policy.max_retries + 1):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise last or _deadline_error()
            if not breakers.allow(provider):
                shut.append(provider)
                break
            try:
                result = attempt(model, remaining)
            except UpstreamError as err:
                if unhealthy(err):
                    breakers.failure(provider, err.kind)
                elif err.upstream_status == 429:
                    breakers.throttle(provider, min(err.retry_after or 0.0, policy.retry_after_cap))
                else:
                    breakers.neutral(provider)
                if not fallback_worthy(err):
                    raise
                last = err
                failures.append((model.slug, err.kind))
                if not retryable(err) or retry == policy.max_retries or _sibling_next(models, model):
                    break  # another deployment of the same model is tried before this one again
                wait = policy.delay(retry + 1, err.retry_after)
                if wait is None or time.perf_counter() + wait >= deadline:
                    break
                time.sleep(wait)
                continue
            breakers.success(provider)
            return model, result, failures
    if last is not None:
        raise last
    wait = min(breakers.retry_after(p) for p in shut) if shut else 1.0
    if shut and all(breakers.busy(p) for p in shut):
        raise GatewayError(429, "The upstream asked the gateway to slow down; try again after the Retry-After "
                           "delay.", code=ErrorCode.RATE_LIMITED, type="requests",
                           headers={"Retry-After": str(max(math.ceil(wait), 1))})
    raise GatewayError(503, "The upstream for this model is failing; the gateway paused requests to it. "
                       "Try again later.", code=ErrorCode.UPSTREAM_UNAVAILABLE, type="server_error",
                   headers={"Retry-After": str(max(math.ceil(wait), 1))})


def _sibling_next(models: list, model) -> bool:
    """Is another deployment of the same model still ahead in the list?"""
    index = models.index(model)
    return any(later.id == model.id for later in models[index + 1:])


def _deadline_error() -> GatewayError:
    return GatewayError(504, "The upstream did not answer within the total time limit.",
                        code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
