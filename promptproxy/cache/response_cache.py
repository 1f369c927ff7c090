"""The exact response cache: identical requests answered again without an upstream call.

Off unless the model, or the stored prompt the call uses, has a TTL: a prompt with a TTL sets the TTL and scope of
every call that uses it, whatever its model; otherwise the model's apply. The key covers the scope (the user unless
shared), the dialect, the model and its upstream name, the stored prompt as injected (its id, mode and the version's
number and whole content) and the whole body except `stream` and `user`. Only 2xx answers are stored: whole ones as
rendered, streams once they finished cleanly, assembled into the same whole answer (cache/assemble.py). Entries live
in the database (pruned as they expire and when the total passes its cap) or in Redis when REDIS_URL is set;
each process keeps the entries it read or wrote lately in a small memory front (`Front`), for at most CACHE_TTL.

The cache works on the call lifecycle's stages (proxy/lifecycle.py), registered by `install`: the key before the body
is planned, a hit before anything is sent (replayed by the dialect when streamed), a stream's fold, the store once
the call settles. What is dialect-shaped (which calls may be cached, replaying, folding) the dialect answers.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ..core.state import make_state
from ..extensions import db
from ..models import ResponseCacheEntry, utcnow
from .assemble import Filling

log = logging.getLogger("promptproxy.cache")
TABLE = ResponseCacheEntry.__table__
SKIPPED = ("stream", "stream_options", "user")  # how an answer is delivered and who asked: not what is asked
FRONT_MAX_BYTES = 8 * 1024 * 1024  # per process; never more than RESPONSE_CACHE_MAX_BYTES


def settings(call) -> tuple[int | None, str]:
    """(TTL, scope) for a call: its stored prompt's when that prompt has a TTL, else its model's."""
    prompt = call.prompt
    if prompt is not None and prompt.cache_ttl:
        return prompt.cache_ttl, prompt.cache_scope
    model = call.model
    return (model.cache_ttl, model.cache_scope) if model is not None else (None, "user")


def cacheable(call, dialect, streamed: bool) -> bool:
    """Is this call served from and stored in the cache? Its model or prompt has a TTL and its dialect allows it."""
    return bool(call.model and settings(call)[0]) and dialect.cacheable(streamed)


def directives(value: str | None) -> set[str]:
    """The client's Cache-Control directives, lower-cased."""
    return {part.strip().split("=")[0].lower() for part in (value or "").split(",") if part.strip()}


def cache_key(call, dialect, body: dict) -> str:
    """A SHA-256 of everything that decides the answer, and of who may see it."""
    model = call.model
    scope = "shared" if settings(call)[1] == "shared" else f"user:{call.principal.user_id}"
    what = {"scope": scope, "dialect": dialect.name, "endpoint": call.endpoint, "model": model.slug,
            "upstream": [(d.provider.id, d.upstream_model) for d in model.deployments] or model.upstream_model,
            "prompt": injected(call), "body": {k: v for k, v in body.items() if k not in SKIPPED}}
    return hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS)).hexdigest()


def injected(call) -> list | None:
    """The stored prompt as the upstream gets it: prompt id, mode, and the version's number and whole content.

    Slug and version number are not enough: a prompt deleted and created again under its old name starts at
    version 1 again, and a mode change makes no new version. Either must be a miss, never the old prompt's answer.
    """
    if call.prompt is None:
        return None
    version = call.version
    return [call.prompt.id, call.prompt.mode, version.version, version.text, version.variables, version.tools,
            version.params]


class Front:
    """The entries a process read or wrote lately, in memory: encoded bytes, least recently used dropped first.

    A hit read from the store costs a database query (or a Redis round trip) per call; at c=32 on SQLite that made a
    hit cost more CPU than the upstream call it saves. An entry stays here until the earlier of its own expiry and
    `fresh` seconds after the store gave it (CACHE_TTL, the delay every process already allows for seeing a change
    made elsewhere): so an entry another process pruned or an operator deleted stops being served within that.
    """

    def __init__(self, max_bytes: int, fresh: float):
        self.max_bytes, self.fresh = max_bytes, fresh
        self.size = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (served until, value)
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> bytes | None:
        """The value while it may still be served, else None (and it is dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: bytes, expires: float, now: float) -> None:
        """Keep value until expires (epoch seconds) or for `fresh` seconds, whichever is earlier."""
        if self.fresh <= 0 or len(value) > self.max_bytes:
            return
        with self._lock:
            self._drop(key)
            self._entries[key] = (min(expires, now + self.fresh), value)
            self.size += len(value)
            while self.size > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def discard(self, keys=None) -> None:
        """Forget these keys, or every entry."""
        with self._lock:
            if keys is None:
                self._entries.clear()
                self.size = 0
            for key in keys or ():
                self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry[1])


def _epoch(naive_utc) -> float:
    """A naive UTC timestamp of the database as epoch seconds."""
    return naive_utc.replace(tzinfo=UTC).timestamp()


class ResponseCache:
    """Get and put cached answers, in the database or in Redis, behind a memory front per process."""

    def __init__(self, cfg, state=None):
        self.max_entry = int(cfg.get("RESPONSE_CACHE_MAX_ENTRY_BYTES", 256 * 1024))
        self.max_total = int(cfg.get("RESPONSE_CACHE_MAX_BYTES", 64 * 1024 * 1024))
        self.prune_every = int(cfg.get("RESPONSE_CACHE_PRUNE_EVERY", 100))
        self.front = Front(min(self.max_total, FRONT_MAX_BYTES), float(cfg.get("CACHE_TTL", 1.0)))
        self._writes = 0
        # Entries go to Redis when the gateway's state is Redis (its client), else to the database.
        state = state if state is not None else make_state(cfg)
        self.redis = state.client if state.kind == "redis" else None
        self.errors: tuple = (SQLAlchemyError, OSError, *state.errors)
        if self.redis is not None:
            self.prefix = f"{state.prefix}:cache:"

    def get(self, key: str) -> dict | None:
        """The cached entry ({answer, usage, cost}) or None; a store error is a miss."""
        now = time.time()
        raw = self.front.get(key, now)
        if raw is None:
            try:
                raw, expires = self._read(key)
            except self.errors as exc:
                log.warning("response cache unavailable (%s): a miss", type(exc).__name__)
                return None
            if raw:
                self.front.put(key, raw, expires, now)
        return orjson.loads(raw) if raw else None  # decoded per call: the caller may change what it gets

    def _read(self, key: str) -> tuple[bytes | str | None, float]:
        """(value, expiry in epoch seconds) from the store; (None, 0) when absent or expired."""
        if self.redis is not None:
            pipe = self.redis.pipeline(transaction=False)
            raw, ttl_ms = pipe.get(self.prefix + key).pttl(self.prefix + key).execute()
            return raw, time.time() + ttl_ms / 1000 if ttl_ms >= 0 else math.inf  # -1: no expiry
        with db.engine.connect() as conn:
            row = conn.execute(sa.select(TABLE.c.value, TABLE.c.expires_at)
                               .where(TABLE.c.key == key, TABLE.c.expires_at > utcnow())).first()
        return (row.value.encode(), _epoch(row.expires_at)) if row else (None, 0.0)

    def put(self, key: str, ttl: int, answer: dict, usage: dict | None, cost: float | None) -> bool:
        """Store one answer unless it is over the entry cap; False when not stored."""
        value = orjson.dumps({"answer": answer, "usage": usage, "cost": cost or 0.0})
        if len(value) > self.max_entry:
            return False
        self.front.discard([key])  # a failed write must not leave the old answer in front of the store
        try:
            if self.redis is not None:
                self.redis.set(self.prefix + key, value, ex=ttl)
            else:
                now = utcnow()
                with db.engine.begin() as conn:
                    conn.execute(sa.delete(TABLE).where(TABLE.c.key == key))
                    conn.execute(sa.insert(TABLE).values(key=key, created_at=now,
                                                         expires_at=now + timedelta(seconds=ttl),
                                                         size=len(value), value=value.decode()))
        except self.errors as exc:
            log.warning("response cache not written (%s)", type(exc).__name__)
            return False
        self.front.put(key, value, time.time() + ttl, time.time())
        if self.redis is None:
            self._writes += 1
            if self._writes % self.prune_every == 0:
                try:
                    self.prune()
                except self.errors as exc:
                    log.warning("response cache not pruned (%s)", type(exc).__name__)
        return True

    def prune(self) -> int:
        """Drop expired entries, then the oldest ones while the total is over its cap (database store)."""
        if self.redis is not None:
            return 0  # Redis expires entries itself
        with db.engine.begin() as conn:
            dropped = conn.execute(sa.delete(TABLE).where(TABLE.c.expires_at <= utcnow())).rowcount
            total = conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(TABLE.c.size), 0)))
            while total > self.max_total:
                oldest = conn.execute(sa.select(TABLE.c.key, TABLE.c.size).order_by(TABLE.c.created_at)
                                      .limit(100)).all()
                if not oldest:
                    break
                keys = [k for k, _ in oldest]
                conn.execute(sa.delete(TABLE).where(TABLE.c.key.in_(keys)))
                self.front.discard(keys)  # expired ones are never served by the front anyway
                total -= sum(size for _, size in oldest)
                dropped += len(oldest)
        return dropped


# -- the cache on the call lifecycle ---------------------------------------------------------------------
FEATURE = "cache"  # this feature's key in call.features


class CachingDialect(Protocol):
    """What the cache asks of a dialect (proxy.pipeline.Dialect) beyond rendering: the dialect-shaped parts."""

    def cacheable(self, streamed: bool) -> bool:
        """May the cache answer (and store) a call in this dialect, streamed or not?"""

    def replay(self, call, plan, answer: dict) -> Iterator[bytes]:
        """A whole answer this dialect rendered, as the stream it would have sent."""

    def assembler(self, plan, limit: int):
        """A fold of this plan's stream into the whole answer `render` takes (cache/assemble.py), or None."""


@dataclass(slots=True)
class _Entry:
    """The cache's state for one call: its key, and what the client's Cache-Control allows."""

    key: str
    ttl: int
    read: bool
    store: bool
    dialect: object = None
    plan: object = None
    filling: Filling | None = None


def install(gw, lifecycle) -> None:
    """Register the cache on the lifecycle's stages, reading and writing `gw.cache`."""
    def keyed(call, dialect, body: dict) -> None:
        """before_plan: the key of what the client asked (planning may change the body); x-cache: MISS."""
        if not cacheable(call, dialect, bool(body.get("stream"))):
            return
        asked = directives(call.cache_control)
        call.headers["x-cache"] = "MISS"
        entry = _Entry(cache_key(call, dialect, body), settings(call)[0], not asked & {"no-cache", "no-store"},
                       "no-store" not in asked, dialect)
        call.features = {**(call.features or {}), FEATURE: entry}

    def hit(call, dialect, plan):
        """before_send: a stored answer, whole or replayed as the dialect's stream; nothing is charged."""
        entry = _entry(call)
        found = gw.cache.get(entry.key) if entry is not None and entry.read else None
        if found is None:
            return None
        call.cache_hit, call.headers["x-cache"] = True, "HIT"
        call.usage, call.cost, call.cost_saved = found.get("usage"), 0.0, found.get("cost") or 0.0
        return dialect.replay(call, plan, found["answer"]) if call.stream else found["answer"]

    def filling(call, dialect, plan, encoder):
        """on_stream: fold the stream into the whole answer as it is relayed, when the dialect can."""
        entry = _entry(call)
        assembler = dialect.assembler(plan, gw.cache.max_entry) if entry is not None and entry.store else None
        if assembler is None:
            return encoder
        entry.plan, entry.filling = plan, Filling(encoder, assembler)
        return entry.filling

    def stored(call, answer) -> None:
        """on_settled: store a 2xx answer, whole as rendered or a clean stream rendered whole."""
        entry = _entry(call)
        if entry is None or not entry.store or call.cache_hit or call.status >= 300:
            return
        if answer is None and entry.filling is not None:
            answer = _rendered(call, entry)
        if answer is not None:
            gw.cache.put(entry.key, entry.ttl, answer, call.usage, call.cost)

    for stage, hook in (("before_plan", keyed), ("before_send", hit), ("on_stream", filling),
                        ("on_settled", stored)):
        lifecycle.add(stage, hook)


def _entry(call) -> _Entry | None:
    return call.features.get(FEATURE) if call.features else None


def _rendered(call, entry: _Entry) -> dict | None:
    """A stream that ended cleanly (no in-band error, every choice finished) as the dialect renders it whole."""
    out = entry.filling.whole(call.usage)
    if out is None:
        return None
    try:
        return entry.dialect.render(call, entry.plan, out)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # an answer the dialect cannot render whole is not worth caching; the client already has it
