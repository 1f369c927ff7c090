"""Usage roll-ups: hourly totals of the request log, upserted in the same transaction as the rows.

The dashboard reads these instead of scanning millions of log rows; retention prunes raw rows and keeps these.
Writing them with the log rows (one transaction) means they can never drift from the log: a batch either
commits both or neither.
"""
from __future__ import annotations

import bisect
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from .models import LATENCY_EDGES_MS, RequestLog, RequestTag, StoredResponse, UsageRollup, delete_before, utcnow

log = logging.getLogger("promptproxy.rollups")
TABLE = UsageRollup.__table__
KEY_COLS = ("period", "dim", "bucket_start", "user_id", "value")
EVERYONE = -1  # user_id of the rows summing every user: the admin's charts read only these
HIST_COLS = tuple(f"lat_{i}" for i in range(len(LATENCY_EDGES_MS) + 1))
SUM_COLS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost", "latency_count",
            "latency_sum", "ttft_count", "ttft_sum", "cache_hits", "cost_saved", *HIST_COLS)
ROW_COLS = ("created_at", "user_id", "key_id", "model", "prompt", "status", "input_tokens", "output_tokens",
            "cached_tokens", "cost", "latency_ms", "ttft_ms", "tags", "cache_hit", "cost_saved")
CACHE_COLS = ("cache_hits", "cost_saved")  # added by migration 0012_cache (fill_cache_columns backfills them)


def hour_of(when: datetime) -> datetime:
    """The start of the hour."""
    return when.replace(minute=0, second=0, microsecond=0)


def histogram_index(latency_ms: float) -> int:
    """The histogram column a latency falls in."""
    return bisect.bisect_right(LATENCY_EDGES_MS, latency_ms)


_N = len(SUM_COLS)
_FLOAT = tuple(i for i, c in enumerate(SUM_COLS) if c in ("cost", "latency_sum", "ttft_sum", "cost_saved"))
_HIST0 = SUM_COLS.index(HIST_COLS[0])


def aggregate(rows, out: dict | None = None) -> dict:
    """Fold log rows (dicts with ROW_COLS) into {key tuple: sums list} per hour, per user and per dimension.

    Each row counts under its own user and under EVERYONE, in the "all" row and in its model, prompt and key rows,
    and in one "tag" row per tag (so spend by tag is summed like spend by model).
    Sums are lists in SUM_COLS order (this runs in the writer thread for every row, so it stays lean).
    """
    out = {} if out is None else out
    for row in rows:
        hour = row["created_at"].replace(minute=0, second=0, microsecond=0)
        latency, ttft = row.get("latency_ms"), row.get("ttft_ms")
        add = (1, 1 if row["status"] >= 400 else 0, row.get("input_tokens") or 0, row.get("output_tokens") or 0,
               row.get("cached_tokens") or 0, row.get("cost") or 0.0, 0 if latency is None else 1, latency or 0.0,
               0 if ttft is None else 1, ttft or 0.0, 1 if row.get("cache_hit") else 0, row.get("cost_saved") or 0.0)
        hist = None if latency is None else _HIST0 + bisect.bisect_right(LATENCY_EDGES_MS, latency)
        values = [("all", "")]
        for dim, name in (("model", "model"), ("prompt", "prompt"), ("key", "key_id")):
            value = row.get(name)
            if value is not None and value != "":
                values.append((dim, str(value)))
        if row.get("tags"):
            values.extend(("tag", tag) for tag in row["tags"].split(","))
        for user in (row.get("user_id") or 0, EVERYONE):
            for dim, value in values:
                key = ("h", dim, hour, user, value)
                acc = out.get(key)
                if acc is None:
                    acc = out[key] = [0] * _N
                    for i in _FLOAT:
                        acc[i] = 0.0
                for i, v in enumerate(add):
                    acc[i] += v
                if hist is not None:
                    acc[hist] += 1
    return out


_SQL: dict[str, tuple] = {}


def _upsert_sql(dialect) -> tuple | None:
    """The upsert as driver SQL, compiled once per dialect (SQLAlchemy would recompile it for every batch)."""
    if dialect.name not in _SQL:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            _SQL[dialect.name] = None
            return None
        stmt = insert(TABLE).values({c: sa.bindparam(c) for c in (*KEY_COLS, *SUM_COLS)})
        stmt = stmt.on_conflict_do_update(index_elements=list(KEY_COLS),
                                          set_={c: TABLE.c[c] + stmt.excluded[c] for c in SUM_COLS})
        compiled = stmt.compile(dialect=dialect)
        # the bucket start must be stored exactly as SQLAlchemy stores datetimes (SQLite: a fixed string format)
        process = TABLE.c.bucket_start.type._cached_bind_processor(dialect)
        _SQL[dialect.name] = (str(compiled), tuple(compiled.positiontup) if compiled.positiontup else None, process)
    return _SQL[dialect.name]


def upsert(conn, aggregates: dict, cols: tuple[str, ...] = SUM_COLS) -> None:
    """Add aggregates to the stored roll-ups (INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL).

    `cols` narrower than SUM_COLS: a migration writing a table that lacks later columns (portable SQL).
    """
    if not aggregates:
        return
    if not hasattr(conn, "exec_driver_sql"):  # an ORM session: use its connection (same transaction)
        conn = conn.connection()
    params = [dict(zip(KEY_COLS, key, strict=True), **{c: v for c, v in zip(SUM_COLS, sums, strict=True) if c in cols})
              for key, sums in aggregates.items()]
    compiled = _upsert_sql(conn.dialect) if cols == SUM_COLS else None
    if compiled is None:
        _upsert_portable(conn, params, cols)
        return
    sql, order, process = compiled
    if process is not None:
        for p in params:
            p["bucket_start"] = process(p["bucket_start"])
    if order:
        conn.exec_driver_sql(sql, [tuple(p[name] for name in order) for p in params])
    else:
        conn.exec_driver_sql(sql, params)


def _upsert_portable(conn, params: list[dict], cols: tuple[str, ...] = SUM_COLS) -> None:
    """Update-then-insert for databases without ON CONFLICT, and for older tables in migrations."""
    table = sa.table(TABLE.name, *[sa.column(c, TABLE.c[c].type) for c in (*KEY_COLS, *cols)])
    for p in params:
        match = sa.and_(*[table.c[c] == p[c] for c in KEY_COLS])
        done = conn.execute(sa.update(table).where(match).values({c: table.c[c] + p[c] for c in cols}))
        if not done.rowcount:
            conn.execute(sa.insert(table), [p])


def rebuild(conn, batch: int = 50_000) -> int:
    """Recompute every roll-up from the request-log rows still present; returns the rows read."""
    conn.execute(sa.delete(TABLE))
    table = RequestLog.__table__
    present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}  # a migration may run it on an older schema
    cols = [table.c[c] for c in ROW_COLS if c in present]
    have = {c["name"] for c in sa.inspect(conn).get_columns(TABLE.name)}
    sums = tuple(c for c in SUM_COLS if c in have)
    last, total = 0, 0
    while True:
        chunk = conn.execute(sa.select(table.c.id, *cols).where(table.c.id > last).order_by(table.c.id)
                             .limit(batch)).mappings().all()
        if not chunk:
            return total
        upsert(conn, aggregate(chunk), sums)
        last, total = chunk[-1]["id"], total + len(chunk)


def fill_cache_columns(conn) -> int:
    """Set the cache columns of existing roll-ups from the cache hits still in the log; returns the hits read.

    Migration 0012_cache adds the columns at 0; hits logged before it (0010_routing on) are counted again here.
    Only those columns are written, so totals of pruned raw rows are kept.
    """
    table = RequestLog.__table__
    hits = conn.execute(sa.select(*[table.c[c] for c in ROW_COLS]).where(table.c.cache_hit)).mappings().all()
    sums = aggregate(hits)
    at = [SUM_COLS.index(c) for c in CACHE_COLS]
    match = sa.and_(*[TABLE.c[c] == sa.bindparam("k_" + c) for c in KEY_COLS])
    params = [{**{"k_" + c: v for c, v in zip(KEY_COLS, key, strict=True)},
               **{c: values[i] for c, i in zip(CACHE_COLS, at, strict=True)}} for key, values in sums.items()]
    if params:
        conn.execute(sa.update(TABLE).where(match).values({c: sa.bindparam(c) for c in CACHE_COLS}), params)
    return len(hits)


def prune(session, days: int, now: datetime | None = None, batch: int = 10_000) -> int:
    """Delete request-log rows and stored responses older than `days`; roll-ups stay. Returns log rows deleted."""
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=days)
    deleted = delete_before(session, RequestLog.__table__, cutoff, batch)
    if deleted:
        log.info("pruned %d request-log rows older than %s (roll-ups kept)", deleted, cutoff)
    delete_before(session, RequestTag.__table__, cutoff, batch)  # the pruned rows' tags
    # Stored Responses API answers hold conversation text too, so they follow the same retention.
    stored = delete_before(session, StoredResponse.__table__, cutoff, batch)
    if stored:
        log.info("pruned %d stored responses older than %s", stored, cutoff)
    return deleted


def _after_flush(session, flush_context) -> None:
    """Rows added through the ORM (tests, imports, scripts) get their roll-ups in the same transaction too."""
    added = [obj for obj in session.new if isinstance(obj, RequestLog)]
    if added:
        upsert(session.connection(), aggregate({c: getattr(obj, c) for c in ROW_COLS} for obj in added))


def install_orm_hook() -> None:
    """Register the after_flush hook once per process (the log writer's Core inserts do their own upserts)."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
