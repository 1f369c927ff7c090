"""Retries, fallbacks and a circuit breaker per provider: all before the first byte reaches the client."""
from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from dataclasses import dataclass

from flask import current_app

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
    failures: int = 0
    state: str = "closed"  # closed, open, half_open
    opened_at: float = 0.0
    probe_at: float = 0.0
    last_error: str | None = None


class Breakers:
    """One breaker per provider, in memory per process: opens after N consecutive failures, probes after a cool-down."""

    def __init__(self, threshold: int = 3, cooldown: float = 30.0, clock=time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[int, _State] = {}

    def _get(self, provider) -> _State:
        found = self._states.get(provider.id)
        if found is None:
            found = self._states[provider.id] = _State(provider.name)
        return found

    def allow(self, provider) -> bool:
        """May a request go to this provider now? In half-open, only one probe at a time is let through."""
        if self.threshold <= 0:
            return True
        with self._lock:
            st = self._get(provider)
            now = self.clock()
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

    def retry_after(self, provider) -> float:
        """Seconds until this provider may be probed again."""
        with self._lock:
            st = self._get(provider)
            start = st.opened_at if st.state == "open" else st.probe_at
            return max(self.cooldown - (self.clock() - start), 0.0)

    def success(self, provider) -> None:
        """The provider answered: close the breaker."""
        with self._lock:
            st = self._get(provider)
            if st.state != "closed":
                log.info("circuit breaker for provider %s closed", st.name)
            st.failures, st.state = 0, "closed"

    def failure(self, provider, kind: str | None = None) -> None:
        """Count a failure; open after `threshold` in a row, or at once when a half-open probe fails."""
        if self.threshold <= 0:
            return
        with self._lock:
            st = self._get(provider)
            st.failures += 1
            st.last_error = kind
            if st.state == "half_open" or (st.state == "closed" and st.failures >= self.threshold):
                st.state, st.opened_at = "open", self.clock()
                log.warning("circuit breaker for provider %s opened after %d failures (%s)", st.name,
                            st.failures, kind)

    def states(self) -> dict:
        """{provider_id: {name, state, failures, retry_in, last_error}} for every provider seen."""
        with self._lock:
            now = self.clock()
            out = {}
            for pid, st in self._states.items():
                start = st.opened_at if st.state == "open" else st.probe_at
                retry_in = max(self.cooldown - (now - start), 0.0) if st.state != "closed" else 0.0
                out[pid] = {"name": st.name, "state": st.state, "failures": st.failures,
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
                else:
                    breakers.success(provider)
                if not fallback_worthy(err):
                    raise
                last = err
                failures.append((model.slug, err.kind))
                if not retryable(err) or retry == policy.max_retries:
                    break
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
    raise GatewayError(503, "The upstream for this model is failing; the gateway paused requests to it. "
                       "Try again later.", code=ErrorCode.UPSTREAM_UNAVAILABLE, type="server_error",
                   headers={"Retry-After": str(max(math.ceil(wait), 1))})


def _deadline_error() -> GatewayError:
    return GatewayError(504, "The upstream did not answer within the total time limit.",
                        code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
