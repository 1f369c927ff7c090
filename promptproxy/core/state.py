"""The gateway's shared state: one store, chosen once at start, for everything counted across requests.

Limits, breakers, deployment health/rpm/in-flight, the login throttle and the cache index all keep their state here:
in this process (one process), in the workers' shared file (`serve --workers N` without Redis), or in Redis (several
instances), with one client. Keys are strings the caller namespaces (`deploy:12`, `breaker:3`); values are numbers,
or short strings where a number will not do. A store that cannot be reached raises one of `errors`: callers fail
open on those (routing falls back to weights, limits follow LIMITS_FAIL_OPEN).
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class State(Protocol):
    """What every backend offers; each operation is atomic on its own."""

    kind: str  # "memory", "file" or "redis"
    errors: tuple  # exception types a broken store raises

    def read(self, keys: list[str]) -> list[dict]:
        """The hashes at `keys` ({} for a missing one): numbers as float, other values as str."""

    def add(self, key: str, name: str, amount: float = 1) -> float:
        """Add to one field of a hash; the new value."""

    def put(self, key: str, values: dict) -> None:
        """Set fields of a hash."""

    def drop(self, key: str) -> None:
        """Forget a hash or a counter."""

    def count(self, key: str, amount: float, ttl: float) -> float:
        """Add to an expiring counter (it starts again at 0 `ttl` seconds after it was created); the new value."""

    def counts(self, keys: list[str]) -> list[float]:
        """The current values of counters (0 for missing or expired ones)."""

    def take(self, key: str, limit: float, amount: float, ttl: float) -> bool:
        """Add `amount` to an expiring counter only if the result stays within `limit`: check-and-take in one step."""

    def limits_storage(self):
        """The `limits` library's storage on this store (rate-limit windows), made once and shared."""


class MemoryState:
    """State for one process: dicts under one lock."""

    kind = "memory"
    errors: tuple = (OSError,)

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._hashes: dict[str, dict] = {}
        self._counters: dict[str, list] = {}  # key -> [value, expires]
        self._limits = None

    def read(self, keys: list[str]) -> list[dict]:
        """As State.read."""
        with self._lock:
            return [dict(self._hashes.get(k, {})) for k in keys]

    def add(self, key: str, name: str, amount: float = 1) -> float:
        """As State.add."""
        with self._lock:
            found = self._hashes.setdefault(key, {})
            found[name] = float(found.get(name, 0)) + amount
            return found[name]

    def put(self, key: str, values: dict) -> None:
        """As State.put."""
        with self._lock:
            self._hashes.setdefault(key, {}).update(
                {k: (float(v) if isinstance(v, int | float) else str(v)) for k, v in values.items()})

    def drop(self, key: str) -> None:
        """As State.drop."""
        with self._lock:
            self._hashes.pop(key, None)
            self._counters.pop(key, None)

    def _live(self, key: str, now: float) -> list | None:
        found = self._counters.get(key)
        if found is not None and found[1] <= now:
            del self._counters[key]
            return None
        return found

    def count(self, key: str, amount: float, ttl: float) -> float:
        """As State.count."""
        with self._lock:
            now = self.clock()
            if len(self._counters) > 10_000:  # bound memory: drop the expired ones
                for k in [k for k, (_, exp) in self._counters.items() if exp <= now]:
                    del self._counters[k]
            found = self._live(key, now) or self._counters.setdefault(key, [0.0, now + ttl])
            found[0] += amount
            return found[0]

    def counts(self, keys: list[str]) -> list[float]:
        """As State.counts."""
        with self._lock:
            now = self.clock()
            return [(self._live(k, now) or (0.0,))[0] for k in keys]

    def take(self, key: str, limit: float, amount: float, ttl: float) -> bool:
        """As State.take."""
        with self._lock:
            now = self.clock()
            found = self._live(key, now)
            if (found[0] if found else 0.0) + amount > limit:
                return False
            found = found or self._counters.setdefault(key, [0.0, now + ttl])
            found[0] += amount
            return True

    def limits_storage(self):
        """As State.limits_storage: the `limits` library's in-process storage."""
        with self._lock:
            if self._limits is None:
                from limits.storage import MemoryStorage

                self._limits = MemoryStorage()
            return self._limits


def make_state(app) -> State:
    """The store for this app, chosen once at start: Redis (REDIS_URL), else the workers' file, else this process.

    `app` is a Flask app or a config mapping. Redis is imported only when configured: redis-py alone adds ~8 MB to
    every process.
    """
    cfg = getattr(app, "config", app)
    if cfg.get("REDIS_URL"):
        from .state_redis import RedisState

        return RedisState(cfg["REDIS_URL"], cfg.get("REDIS_PREFIX") or "promptproxy")
    if cfg.get("SHARED_STORE"):  # set by `serve --workers N` for its workers (workers.py)
        from .sharedstore import shared_file
        from .state_file import FileState

        return FileState(shared_file(cfg["SHARED_STORE"]))
    return MemoryState()
