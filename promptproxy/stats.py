"""Aggregates over the request log for the dashboard: time series, totals and top lists.

The interface (window, overview, totals, top) is what the dashboard uses; the implementation may change
(roll-up tables) as long as the numbers still match the request log. Everything here is portable SQL
(SQLite 3.25+ and PostgreSQL): buckets are a CASE over precomputed edges, percentiles use ROW_NUMBER.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa

from .extensions import db
from .models import RequestLog, User, utcnow

RANGES = {"24h": (timedelta(hours=24), timedelta(hours=1)),
          "7d": (timedelta(days=7), timedelta(hours=6)),
          "30d": (timedelta(days=30), timedelta(days=1))}
DIMENSIONS = {"user": RequestLog.user_id, "model": RequestLog.model, "prompt": RequestLog.prompt,
              "key": RequestLog.key_id}
PERCENTILES = (50, 95)
EPOCH = datetime(2000, 1, 1)


def window(name: str, now: datetime | None = None) -> tuple[datetime, datetime, timedelta]:
    """(since, until, bucket) for a named range; until is the end of the current bucket."""
    span, bucket = RANGES.get(name, RANGES["24h"])
    now = now or utcnow()
    until = EPOCH + bucket * (math.floor((now - EPOCH) / bucket) + 1)
    return until - span, until, bucket


def _where(since: datetime, until: datetime, user_id: int | None) -> list:
    conds = [RequestLog.created_at >= since, RequestLog.created_at < until]
    if user_id is not None:
        conds.append(RequestLog.user_id == user_id)
    return conds


def _bucket(since: datetime, count: int, bucket: timedelta):
    """Bucket number of a row as a CASE over the bucket edges (portable, index-friendly filters)."""
    if count == 1:
        return sa.literal(0)
    return sa.case(*[(RequestLog.created_at < since + bucket * (i + 1), i) for i in range(count - 1)],
                   else_=count - 1)


def _sums(conds: list, bucket_expr) -> dict[int, dict]:
    inner = sa.select(
        bucket_expr.label("b"),
        sa.case((RequestLog.status >= 400, 1), else_=0).label("err"),
        sa.func.coalesce(RequestLog.input_tokens, 0).label("tin"),
        sa.func.coalesce(RequestLog.output_tokens, 0).label("tout"),
        sa.func.coalesce(RequestLog.cost, 0.0).label("cost"),
    ).where(*conds).subquery()
    query = sa.select(inner.c.b, sa.func.count(), sa.func.sum(inner.c.err), sa.func.sum(inner.c.tin),
                      sa.func.sum(inner.c.tout), sa.func.sum(inner.c.cost)).group_by(inner.c.b)
    return {int(b): {"requests": n, "errors": int(e or 0), "input_tokens": int(ti or 0),
                     "output_tokens": int(to or 0), "cost": float(c or 0.0)}
            for b, n, e, ti, to, c in db.session.execute(query)}


def _percentiles(conds: list, bucket_expr) -> dict[int, dict]:
    """Nearest-rank p50/p95 of latency per bucket, ranked in the database."""
    ranked = sa.select(
        bucket_expr.label("b"), RequestLog.latency_ms.label("lat"),
        sa.func.row_number().over(partition_by=bucket_expr, order_by=RequestLog.latency_ms).label("rn"),
        sa.func.count().over(partition_by=bucket_expr).label("n"),
    ).where(*conds, RequestLog.latency_ms.is_not(None)).subquery()
    wanted = sa.or_(*[sa.and_(ranked.c.rn * 100 >= p * ranked.c.n, (ranked.c.rn - 1) * 100 < p * ranked.c.n)
                      for p in PERCENTILES])
    out: dict[int, dict] = {}
    for b, lat, rn, n in db.session.execute(sa.select(ranked.c.b, ranked.c.lat, ranked.c.rn, ranked.c.n).where(
            wanted)):
        for p in PERCENTILES:
            if rn == math.ceil(p * n / 100):
                out.setdefault(int(b), {})[f"p{p}"] = float(lat)
    return out


def _row(sums: dict | None, pcts: dict | None) -> dict:
    sums = sums or {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}
    pcts = pcts or {}
    return {**sums, "tokens": sums["input_tokens"] + sums["output_tokens"],
            "error_rate": sums["errors"] / sums["requests"] if sums["requests"] else 0.0,
            "p50": pcts.get("p50"), "p95": pcts.get("p95")}


def totals(since: datetime, until: datetime, user_id: int | None = None) -> dict:
    """Requests, errors, error rate, tokens, cost and latency percentiles over the whole window."""
    conds = _where(since, until, user_id)
    zero = sa.literal(0)
    return _row(_sums(conds, zero).get(0), _percentiles(conds, zero).get(0))


def overview(since: datetime, until: datetime, bucket: timedelta, user_id: int | None = None) -> dict:
    """Time series per bucket (labels are bucket starts, ISO, UTC) plus totals for the window."""
    count = max(1, math.ceil((until - since) / bucket))
    conds = _where(since, until, user_id)
    expr = _bucket(since, count, bucket)
    sums, pcts = _sums(conds, expr), _percentiles(conds, expr)
    rows = [_row(sums.get(i), pcts.get(i)) for i in range(count)]
    series = {name: [r[name] for r in rows] for name in (
        "requests", "errors", "error_rate", "input_tokens", "output_tokens", "tokens", "cost", "p50", "p95")}
    return {"labels": [(since + bucket * i).isoformat() + "Z" for i in range(count)], **series,
            "totals": totals(since, until, user_id)}


def top(dim: str, since: datetime, until: datetime, user_id: int | None = None, limit: int = 10) -> list[dict]:
    """The busiest users, models, prompts or keys: requests, errors, tokens and cost each."""
    column = DIMENSIONS[dim]
    query = sa.select(
        column, sa.func.count().label("requests"),
        sa.func.sum(sa.case((RequestLog.status >= 400, 1), else_=0)),
        sa.func.sum(sa.func.coalesce(RequestLog.input_tokens, 0) + sa.func.coalesce(RequestLog.output_tokens, 0)),
        sa.func.sum(sa.func.coalesce(RequestLog.cost, 0.0)),
    ).where(*_where(since, until, user_id), column.is_not(None)).group_by(column).order_by(
        sa.desc("requests"), column).limit(limit)
    rows = [{"key": k, "label": str(k), "requests": n, "errors": int(e or 0), "tokens": int(t or 0),
             "cost": float(c or 0.0)} for k, n, e, t, c in db.session.execute(query)]
    if dim == "user" and rows:
        names = dict(db.session.execute(sa.select(User.id, User.name).where(User.id.in_([r["key"] for r in rows]))))
        for r in rows:
            r["label"] = names.get(r["key"], f"deleted user #{r['key']}")
    return rows
