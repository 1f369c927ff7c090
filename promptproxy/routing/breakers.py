"""A circuit breaker per provider (the host), on the shared state: one breaker for every worker and instance.

It counts one outcome per request, never per retry attempt, in buckets of an expiring window. It opens when,
inside `window` seconds, at least `min_requests` requests were counted and at least `failure_rate` of them failed.
Connect failures and timeouts always count (the host is down whatever was asked); 5xx answers and unusable
answers count only once they came from at least `min_keys` distinct API keys in the window, so one caller's
poison request cannot pause a provider for everyone. Client 4xx and 429s are not failures (a 429 pauses its
deployment only: routing/deployments.py). Open, one probe per `cooldown` is let through (half-open), taken as
a token so that only one worker probes; its answer closes the breaker or opens it again. docs/routing.md
compares the rule with Envoy's outlier detection.

State keys: `breaker:<provider id>` (a hash: state, opened_at, last_error, epoch), `breaker:<id>:keys` (key id ->
last 5xx time), counters `breaker:<id>:<epoch>:<bucket>:<ok|soft|hard>`, and `breakers` (provider id -> name).
"""
from __future__ import annotations

import logging
import math
import threading
import time

from flask import current_app

from ..alerts.events import CircuitChanged
from ..core.errors import UpstreamError
from ..core.state import MemoryState

log = logging.getLogger("promptproxy.breakers")
KINDS = ("ok", "soft", "hard")
MAX_KEYS = 256  # failing key ids remembered per provider; past that the list starts again (a quorum is 2)


class Breakers:
    """The providers' circuit breakers; `min_requests` 0 switches them off."""

    def __init__(self, min_requests: int = 10, cooldown: float = 30.0, clock=time.time, *, state=None,
                 failure_rate: float = 0.5, window: float = 30.0, min_keys: int = 2, threshold: int | None = None):
        self.min_requests = min_requests if threshold is None else threshold  # `threshold`: the old name
        self.cooldown = max(cooldown, 0.001)
        self.failure_rate = failure_rate
        self.window = window
        self.min_keys = min_keys
        self.bucket = max(window / 10, 1.0)  # seconds per counter: 10 of them cover the window
        self.clock = clock  # wall time: workers and instances compare each other's timestamps
        self.state = state if state is not None else MemoryState()
        self.listener = None  # callable(CircuitChanged) on open and close (the alerts queue: no I/O)
        self._seen: set[int] = set()
        # Successes are written at most once a second per process (one write per request would double the
        # shared store's writes); a worker deciding to open sees the others' successes up to a second late.
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._flushed = 0.0

    @classmethod
    def from_config(cls, cfg, state=None) -> Breakers:
        """Read BREAKER_* settings; BREAKER_THRESHOLD 0 (the old switch) still turns breakers off."""
        volume = int(cfg.get("BREAKER_MIN_REQUESTS", 10))
        if int(cfg.get("BREAKER_THRESHOLD", 1)) == 0:
            volume = 0
        return cls(volume, float(cfg.get("BREAKER_COOLDOWN", 30.0)), state=state,
                   failure_rate=float(cfg.get("BREAKER_FAILURE_RATE", 0.5)),
                   window=float(cfg.get("BREAKER_WINDOW", 30.0)), min_keys=int(cfg.get("BREAKER_MIN_KEYS", 2)))

    @property
    def on(self) -> bool:
        """Are breakers switched on?"""
        return self.min_requests > 0

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, providers: list) -> dict[int, dict]:
        """{provider id: its breaker hash} in one read; {} each when off or when the store is unreachable."""
        ids = list(dict.fromkeys(p.id for p in providers))
        if not self.on:
            return {pid: {} for pid in ids}
        try:
            return dict(zip(ids, self.state.read([f"breaker:{pid}" for pid in ids]), strict=True))
        except self.state.errors as exc:
            log.warning("breaker state unavailable (%s): every provider allowed", type(exc).__name__)
            return {pid: {} for pid in ids}

    def admit(self, provider, st: dict) -> str | None:
        """"go", "probe" (this request is the one half-open probe: take it as one attempt), or None (shut)."""
        if not self.on or st.get("state", "closed") == "closed":
            return "go"
        opened = float(st.get("opened_at", 0))
        elapsed = self.clock() - opened
        if elapsed < self.cooldown:
            return None
        period = int(elapsed // self.cooldown)  # one probe per cool-down, so a probe that never reports expires
        try:
            if not self.state.take(f"breaker:{provider.id}:probe:{opened:.3f}:{period}", 1, 1,
                                   self.cooldown + 1):
                return None
            self.state.put(f"breaker:{provider.id}", {"state": "half_open", "probe_at": self.clock()})
        except self.state.errors:
            return "go"
        return "probe"

    def allow(self, provider) -> bool:
        """May a request go to this provider now? In half-open, one probe at a time across all workers."""
        return self.admit(provider, self.read([provider])[provider.id]) is not None

    def retry_after(self, provider, st: dict | None = None) -> float:
        """Seconds until this provider may be probed again."""
        return self._wait(self.read([provider])[provider.id] if st is None else st)

    def _wait(self, st: dict) -> float:
        if st.get("state", "closed") == "closed":
            return 0.0
        elapsed = self.clock() - float(st.get("opened_at", 0))
        return self.cooldown - elapsed if elapsed < self.cooldown else self.cooldown - elapsed % self.cooldown

    # -- one outcome per request -----------------------------------------------------------------------
    def success(self, provider, st: dict | None = None) -> None:
        """The provider answered this request: counted; a breaker that was not closed closes."""
        self._safe(self._success, provider, st)

    def neutral(self, provider, st: dict | None = None) -> None:
        """A client error or a 429: not counted; a probe that got one shows the host is up, so it closes."""
        self._safe(self._neutral, provider, st)

    def failure(self, provider, err: UpstreamError, key=None, *, probe: bool = False,
                after_success: bool = False) -> None:
        """This request failed on the provider (`key`: the caller's key id); may open the breaker.

        `after_success`: the request was counted a success when its answer began and failed mid-stream.
        """
        self._safe(self._failure, provider, err, key, probe, after_success)

    def _success(self, provider, st: dict | None) -> None:
        st = self._current(provider, st)
        if st.get("state", "closed") != "closed":
            self.state.count(self._counter(provider.id, st, "ok"), 1, self.window + self.bucket + 1)
            self._close(provider)
            return
        key = self._counter(provider.id, st, "ok")
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            due = self.clock() - self._flushed >= 1.0
        if due:
            self._flush()

    def _flush(self) -> None:
        """Write this process's pending successes."""
        with self._lock:
            pending, self._pending, self._flushed = self._pending, {}, self.clock()
        for key, amount in pending.items():
            self.state.count(key, amount, self.window + self.bucket + 1)

    def _neutral(self, provider, st: dict | None) -> None:
        if self._current(provider, st).get("state", "closed") == "half_open":
            self._close(provider)

    def _failure(self, provider, err: UpstreamError, key, probe: bool, after_success: bool) -> None:
        st = self._current(provider, None)
        now = self.clock()
        self.state.put(f"breaker:{provider.id}", {"last_error": err.kind})
        state = st.get("state", "closed")
        if probe or state == "half_open":
            self.state.put(f"breaker:{provider.id}", {"state": "open", "opened_at": now})
            log.warning("circuit breaker for provider %s: probe failed (%s), open again", provider.name, err.kind)
            return
        ttl = self.window + self.bucket + 1
        if after_success:
            self.state.count(self._counter(provider.id, st, "ok"), -1, ttl)
        self.state.count(self._counter(provider.id, st, "hard" if err.host_down else "soft"), 1, ttl)
        if not err.host_down:
            self._remember_key(provider.id, key, now)
        if state == "closed":
            self._maybe_open(provider, st, err.kind, now)

    def _maybe_open(self, provider, st: dict, kind: str, now: float) -> None:
        self._flush()
        ok, soft, hard = self._window(provider.id, st, now)
        keys = self._keys(provider.id, now)
        total = ok + soft + hard
        counted = hard + (soft if keys >= self.min_keys else 0)
        if total < self.min_requests or counted <= 0 or counted < self.failure_rate * total:
            return
        epoch = int(float(st.get("epoch", 0)))
        if not self.state.take(f"breaker:{provider.id}:open:{epoch}", 1, 1, self.window + self.cooldown):
            return  # another worker opened it just now
        self.state.put(f"breaker:{provider.id}", {"state": "open", "opened_at": now})
        reason = f"{counted:.0f} of {total:.0f} requests failed in {self.window:.0f} s ({kind}; {keys} keys)"
        log.warning("circuit breaker for provider %s opened: %s", provider.name, reason)
        self._changed(provider, "open", reason)

    def _close(self, provider) -> None:
        # A new epoch: the window's counters start again from nothing, as after a fresh start.
        self.state.put(f"breaker:{provider.id}", {"state": "closed", "epoch": int(self.clock() * 1000)})
        self.state.drop(f"breaker:{provider.id}:keys")
        log.info("circuit breaker for provider %s closed", provider.name)
        self._changed(provider, "closed", None)

    # -- the window ------------------------------------------------------------------------------------
    def _current(self, provider, st: dict | None) -> dict:
        if provider.id not in self._seen:  # the list `states()` shows: every provider this process counted
            self.state.put("breakers", {str(provider.id): provider.name})
            self._seen.add(provider.id)
        return self.state.read([f"breaker:{provider.id}"])[0] if st is None else st

    def _counter(self, pid: int, st: dict, kind: str, bucket: int | None = None) -> str:
        bucket = int(self.clock() // self.bucket) if bucket is None else bucket
        return f"breaker:{pid}:{int(float(st.get('epoch', 0)))}:{bucket}:{kind}"

    def _window(self, pid: int, st: dict, now: float) -> tuple[float, float, float]:
        """(ok, soft, hard) requests counted by every worker in the last `window` seconds."""
        last = int(now // self.bucket)
        buckets = range(last - math.ceil(self.window / self.bucket) + 1, last + 1)
        values = self.state.counts([self._counter(pid, st, kind, b) for b in buckets for kind in KINDS])
        return tuple(max(sum(values[i::3]), 0.0) for i in range(3))

    def _remember_key(self, pid: int, key, now: float) -> None:
        self.state.put(f"breaker:{pid}:keys", {f"k{key if key is not None else '-'}": now})

    def _keys(self, pid: int, now: float) -> int:
        """Distinct keys whose requests got a 5xx (or an unusable answer) inside the window."""
        [found] = self.state.read([f"breaker:{pid}:keys"])
        if len(found) > MAX_KEYS:  # bounded: forget them all (the window refills it in seconds if it matters)
            self.state.drop(f"breaker:{pid}:keys")
        return sum(1 for at in found.values() if now - float(at) <= self.window)

    def _changed(self, provider, state: str, reason: str | None) -> None:
        if self.listener is not None:
            try:
                self.listener(CircuitChanged(provider.id, provider.name, state, time.time(), reason))
            except Exception:  # an alert must never break a request
                log.exception("circuit breaker listener failed")

    def _safe(self, fn, *args) -> None:
        if not self.on:
            return
        try:
            fn(*args)
        except self.state.errors as exc:
            log.warning("breaker state not updated (%s)", type(exc).__name__)

    # -- the dashboard ---------------------------------------------------------------------------------
    def states(self) -> dict:
        """{provider_id: {name, state, failures, retry_in, last_error}} for every provider counted."""
        try:
            self._flush()
            [names] = self.state.read(["breakers"])
            ids = sorted(int(pid) for pid in names)
            found = self.state.read([f"breaker:{pid}" for pid in ids])
        except self.state.errors:
            return {}
        now, out = self.clock(), {}
        for pid, st in zip(ids, found, strict=True):
            _, soft, hard = self._window(pid, st, now)
            state = st.get("state", "closed")
            out[pid] = {"name": str(names[str(pid)]), "state": state, "failures": int(soft + hard),
                        "retry_in": round(max(self._wait(st), 0.0), 1),
                        "last_error": st.get("last_error")}
        return out


def breaker_states(app=None) -> dict:
    """Every provider's breaker (for the dashboard): {provider_id: {name, state, failures, ...}}."""
    app = app or current_app
    return app.extensions["promptproxy"].breakers.states()
