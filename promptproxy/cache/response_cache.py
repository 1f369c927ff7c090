"""The exact response cache: identical requests answered again without an upstream call.

Off unless the model, or the stored prompt the call uses, has a TTL: a prompt with a TTL sets the TTL and scope of
every call that uses it, whatever its model; otherwise the model's apply. The key covers the scope (the user unless
shared), the dialect, the model and its upstream name, the stored prompt as injected (its id, mode and the version's
number and whole content) and the whole body except `stream` and `user`. Only 2xx answers are stored: whole ones as
rendered, streams once they finished cleanly, assembled into the same whole answer (cache/assemble.py). Entries live
in the database (pruned as they expire and when the total passes its cap) or in Redis when REDIS_URL is set;
each process keeps the entries it read or wrote lately in a small memory front (`Front`), for at most CACHE_TTL.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from datetime import UTC, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..models import ResponseCacheEntry, utcnow

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


def cacheable(call, dialect) -> bool:
    """Is this call served from and stored in the cache? Chat, completions and embeddings; Anthropic messages."""
    if not call.model or not settings(call)[0]:
        return False
    return (dialect.name == "openai" and dialect.kind in ("chat", "completion", "embedding")) or \
        (dialect.name == "anthropic" and call.endpoint.endswith("/messages"))


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

    def __init__(self, cfg):
        self.max_entry = int(cfg.get("RESPONSE_CACHE_MAX_ENTRY_BYTES", 256 * 1024))
        self.max_total = int(cfg.get("RESPONSE_CACHE_MAX_BYTES", 64 * 1024 * 1024))
        self.prune_every = int(cfg.get("RESPONSE_CACHE_PRUNE_EVERY", 100))
        self.front = Front(min(self.max_total, FRONT_MAX_BYTES), float(cfg.get("CACHE_TTL", 1.0)))
        self._writes = 0
        url = cfg.get("REDIS_URL")
        self.redis = None
        self.errors: tuple = (SQLAlchemyError, OSError)
        if url:
            import redis
            from redis.exceptions import RedisError

            self.redis = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
            self.prefix = f"{cfg.get('REDIS_PREFIX') or 'promptproxy'}:cache:"
            self.errors = (*self.errors, RedisError)

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


# -- replaying a whole answer as a stream ---------------------------------------------------------------
def stream_events(dialect: str, answer: dict, include_usage: bool) -> list[dict]:
    """A cached whole answer as the events its dialect streams: OpenAI chunks or Anthropic events."""
    return _anthropic_events(answer) if dialect == "anthropic" else _openai_chunks(answer, include_usage)


def _openai_chunks(answer: dict, include_usage: bool) -> list[dict]:
    head = {"id": answer.get("id"), "object": "chat.completion.chunk",
            "created": answer.get("created", int(time.time())), "model": answer.get("model")}
    chunks = []
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        delta = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append({**head, "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": choice.get("index", 0), "delta": {},
                                            "finish_reason": choice.get("finish_reason")}]})
    if include_usage and answer.get("usage"):
        chunks.append({**head, "choices": [], "usage": answer["usage"]})
    return chunks


def _anthropic_events(answer: dict) -> list[dict]:
    usage = answer.get("usage") or {}
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    events = [{"type": "message_start", "message": start}]
    for index, block in enumerate(answer.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            opened, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block.get("text", "")}
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input", {})).decode()}
        elif kind == "thinking":
            opened, delta = {"type": "thinking", "thinking": ""}, {"type": "thinking_delta",
                                                                    "thinking": block.get("thinking", "")}
        else:
            opened, delta = block, None
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        if delta is not None:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": answer.get("stop_reason"),
                                                      "stop_sequence": answer.get("stop_sequence")},
                   "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    events.append({"type": "message_stop"})
    return events
