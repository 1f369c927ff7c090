"""Usage roll-ups: hourly and daily totals of the request log, upserted in the same transaction as the rows.

The dashboard reads these instead of scanning millions of log rows; retention prunes raw rows and keeps these.
Writing them with the log rows (one transaction) means they can never drift from the log: a batch either
commits both or neither.
"""
from __future__ import annotations

import bisect
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from .models import LATENCY_EDGES_MS, RequestLog, UsageRollup, utcnow

log = logging.getLogger("promptproxy.rollups")
TABLE = UsageRollup.__table__
KEY_COLS = ("period", "dim", "bucket_start", "user_id", "value")
EVERYONE = -1  # user_id of the rows summing every user: the admin's charts read only these
HIST_COLS = tuple(f"lat_{i}" for i in range(len(LATENCY_EDGES_MS) + 1))
SUM_COLS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost", "latency_count",
            "latency_sum", "ttft_count", "ttft_sum", *HIST_COLS)
ROW_COLS = ("created_at", "user_id", "key_id", "model", "prompt", "status", "input_tokens", "output_tokens",
            "cached_tokens", "cost", "latency_ms", "ttft_ms")


def hour_of(when: datetime) -> datetime:
    """The start of the hour."""
    return when.replace(minute=0, second=0, microsecond=0)


def day_of(when: datetime) -> datetime:
    """The start of the day (UTC)."""
    return when.replace(hour=0, minute=0, second=0, microsecond=0)


def histogram_index(latency_ms: float) -> int:
    """The histogram column a latency falls in."""
    return bisect.bisect_right(LATENCY_EDGES_MS, latency_ms)


def aggregate(rows, out: dict | None = None) -> dict:
    """Fold log rows (dicts with ROW_COLS) into {key tuple: sums}: hourly and daily, per user and per dimension."""
    out = {} if out is None else out
    for row in rows:
        when = row["created_at"]
        hour, day = hour_of(when), day_of(when)
        keys = []
        for user in (row.get("user_id") or 0, EVERYONE):
            keys += [("h", "all", hour, user, ""), ("d", "all", day, user, "")]
            for dim, value in (("model", row.get("model")), ("prompt", row.get("prompt")), ("key", row.get("key_id"))):
                if value is not None and value != "":
                    keys += [("h", dim, hour, user, str(value)), ("d", dim, day, user, str(value))]
        latency, ttft = row.get("latency_ms"), row.get("ttft_ms")
        for key in keys:
            acc = out.get(key)
            if acc is None:
                acc = out[key] = dict.fromkeys(SUM_COLS, 0)
                acc["cost"] = acc["latency_sum"] = acc["ttft_sum"] = 0.0
            acc["requests"] += 1
            acc["errors"] += row["status"] >= 400
            acc["input_tokens"] += row.get("input_tokens") or 0
            acc["output_tokens"] += row.get("output_tokens") or 0
            acc["cached_tokens"] += row.get("cached_tokens") or 0
            acc["cost"] += row.get("cost") or 0.0
            if latency is not None:
                acc["latency_count"] += 1
                acc["latency_sum"] += latency
                acc[HIST_COLS[histogram_index(latency)]] += 1
            if ttft is not None:
                acc["ttft_count"] += 1
                acc["ttft_sum"] += ttft
    return out


def upsert(conn, aggregates: dict) -> None:
    """Add aggregates to the stored roll-ups (INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL)."""
    if not aggregates:
        return
    params = [dict(zip(KEY_COLS, key, strict=True), **sums) for key, sums in aggregates.items()]
    name = conn.dialect.name if hasattr(conn, "dialect") else conn.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        _upsert_portable(conn, params)
        return
    stmt = insert(TABLE)
    stmt = stmt.on_conflict_do_update(index_elements=list(KEY_COLS),
                                      set_={c: TABLE.c[c] + stmt.excluded[c] for c in SUM_COLS})
    conn.execute(stmt, params)


def _upsert_portable(conn, params: list[dict]) -> None:
    """Update-then-insert for databases without ON CONFLICT (not used on SQLite or PostgreSQL)."""
    for p in params:
        match = sa.and_(*[TABLE.c[c] == p[c] for c in KEY_COLS])
        done = conn.execute(sa.update(TABLE).where(match).values({c: TABLE.c[c] + p[c] for c in SUM_COLS}))
        if not done.rowcount:
            conn.execute(sa.insert(TABLE), [p])


def rebuild(conn, batch: int = 50_000) -> int:
    """Recompute every roll-up from the request-log rows still present; returns the rows read."""
    conn.execute(sa.delete(TABLE))
    table = RequestLog.__table__
    cols = [table.c[c] for c in ROW_COLS]
    last, total = 0, 0
    while True:
        chunk = conn.execute(sa.select(table.c.id, *cols).where(table.c.id > last).order_by(table.c.id)
                             .limit(batch)).mappings().all()
        if not chunk:
            return total
        upsert(conn, aggregate(chunk))
        last, total = chunk[-1]["id"], total + len(chunk)


def prune(session, days: int, now: datetime | None = None, batch: int = 10_000) -> int:
    """Delete request-log rows older than `days` in small transactions; roll-ups stay. Returns rows deleted."""
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=days)
    table = RequestLog.__table__
    deleted = 0
    while True:
        ids = sa.select(table.c.id).where(table.c.created_at < cutoff).limit(batch).scalar_subquery()
        count = session.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount
        session.commit()
        deleted += count
        if count < batch:
            if deleted:
                log.info("pruned %d request-log rows older than %s (roll-ups kept)", deleted, cutoff)
            return deleted
