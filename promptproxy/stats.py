"""Aggregates over the request log for the dashboard: time series, totals and top lists.

The interface (window, overview, totals, top) is what the dashboard uses. Windows aligned to whole hours (all
the dashboard's ranges) are answered from the usage roll-ups (promptproxy/rollups.py: hourly and daily totals
written in the same transaction as the log rows), so the overview costs the same with a million rows as with
a hundred, and survives retention pruning. Latency percentiles are exact (ranked in the database) while the
window holds at most EXACT_PERCENTILE_ROWS raw rows, and estimated from the roll-ups' latency histogram beyond.
Any other window falls back to scanning request_logs (portable SQL for SQLite 3.25+ and PostgreSQL).
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from .extensions import db
from .models import (
    LATENCY_EDGES_MS,
    Group,
    GroupMember,
    Model,
    Prompt,
    PromptLabel,
    RequestLog,
    RequestTag,
    UsageRollup,
    User,
    utcnow,
)
from .rollups import EVERYONE, HIST_COLS

RANGES = {"24h": (timedelta(hours=24), timedelta(hours=1)),
          "7d": (timedelta(days=7), timedelta(hours=6)),
          "30d": (timedelta(days=30), timedelta(days=1))}
DIMENSIONS = {"user": RequestLog.user_id, "model": RequestLog.model, "prompt": RequestLog.prompt,
              "key": RequestLog.key_id, "tag": RequestTag.tag}
PERCENTILES = (50, 95)
EPOCH = datetime(2000, 1, 1)
HOUR = timedelta(hours=1)
EXACT_PERCENTILE_ROWS = 2_000  # exact percentiles up to this many rows: fetching more costs > 20 ms


def window(name: str, now: datetime | None = None) -> tuple[datetime, datetime, timedelta]:
    """(since, until, bucket) for a named range; until is the end of the current bucket."""
    span, bucket = RANGES.get(name, RANGES["24h"])
    now = now or utcnow()
    until = EPOCH + bucket * (math.floor((now - EPOCH) / bucket) + 1)
    return until - span, until, bucket


# -- which source answers a window ---------------------------------------------------------------------
def _aligned(when: datetime, step: timedelta) -> bool:
    return (when - EPOCH) % step == timedelta(0)


def _period(since: datetime, until: datetime, bucket: timedelta | None) -> str | None:
    """'h' when the hourly roll-ups can answer the window exactly, else None (scan the log)."""
    if bucket is not None and bucket % HOUR:
        return None
    if _aligned(since, HOUR) and _aligned(until, HOUR):
        return "h"
    return None


def _raw_rows_cover(since: datetime) -> bool:
    """False when retention has pruned raw rows inside the window."""
    days = current_app.config.get("RETENTION_DAYS") or 0
    return days <= 0 or since >= utcnow() - timedelta(days=days)


# -- roll-up queries ------------------------------------------------------------------------------------
def _r_where(period: str, since: datetime, until: datetime, user_id: int | None, dim: str = "all") -> list:
    conds = [UsageRollup.period == period, UsageRollup.dim == dim, UsageRollup.bucket_start >= since,
             UsageRollup.bucket_start < until]
    conds.append(UsageRollup.user_id == (EVERYONE if user_id is None else user_id))
    return conds


SUMMED = ("requests", "errors", "input_tokens", "output_tokens", "cost", "cache_hits", "cost_saved")
MONEY = ("cost", "cost_saved")


def _summed(values) -> dict:
    """SUMMED column sums as a dict: counts as ints, money as floats."""
    return {name: float(v or 0.0) if name in MONEY else int(v or 0) for name, v in zip(SUMMED, values, strict=True)}


def _r_sums(conds: list, bucket_expr) -> dict[int, dict]:
    inner = sa.select(bucket_expr.label("b"), *[getattr(UsageRollup, c) for c in (*SUMMED, *HIST_COLS)]).where(
        *conds).subquery()
    sums = [sa.func.sum(inner.c[c]) for c in (*SUMMED, *HIST_COLS)]
    out = {}
    for b, *values in db.session.execute(sa.select(inner.c.b, *sums).group_by(inner.c.b)):
        out[int(b)] = {**_summed(values[:len(SUMMED)]), "_hist": [int(h or 0) for h in values[len(SUMMED):]]}
    return out


def estimate_percentile(hist: list[int], p: float) -> float | None:
    """Nearest-rank percentile from histogram counts, interpolated linearly inside its bucket."""
    n = sum(hist)
    if not n:
        return None
    rank = math.ceil(p * n / 100)
    seen = 0
    for i, count in enumerate(hist):
        if seen + count >= rank:
            low = LATENCY_EDGES_MS[i - 1] if i else 0.0
            if i >= len(LATENCY_EDGES_MS):
                return float(low)
            high = LATENCY_EDGES_MS[i]
            return round(low + (high - low) * (rank - seen) / count, 3)
        seen += count
    return None


# -- raw-log queries (exact; used for small or unaligned windows) ---------------------------------------
def _where(since: datetime, until: datetime, user_id: int | None) -> list:
    conds = [RequestLog.created_at >= since, RequestLog.created_at < until]
    if user_id is not None:
        conds.append(RequestLog.user_id == user_id)
    return conds


def _bucket(column, since: datetime, count: int, bucket: timedelta):
    """Bucket number of a row (by its time `column`) as a CASE over the bucket edges (portable, index-friendly)."""
    if count == 1:
        return sa.literal(0)
    return sa.case(*[(column < since + bucket * (i + 1), i) for i in range(count - 1)], else_=count - 1)


def _sums(conds: list, bucket_expr) -> dict[int, dict]:
    inner = sa.select(
        bucket_expr.label("b"),
        sa.literal(1).label("requests"),
        sa.case((RequestLog.status >= 400, 1), else_=0).label("errors"),
        sa.func.coalesce(RequestLog.input_tokens, 0).label("input_tokens"),
        sa.func.coalesce(RequestLog.output_tokens, 0).label("output_tokens"),
        sa.func.coalesce(RequestLog.cost, 0.0).label("cost"),
        sa.case((RequestLog.cache_hit, 1), else_=0).label("cache_hits"),
        sa.func.coalesce(RequestLog.cost_saved, 0.0).label("cost_saved"),
    ).where(*conds).subquery()
    query = sa.select(inner.c.b, *[sa.func.sum(inner.c[c]) for c in SUMMED]).group_by(inner.c.b)
    return {int(b): _summed(values) for b, *values in db.session.execute(query)}


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


def _exact_percentiles(since: datetime, until: datetime, bucket: timedelta, count: int,
                       user_id: int | None) -> dict[int, dict]:
    """Nearest-rank percentiles per bucket from the raw latencies (few rows: cheaper than ranking in SQL)."""
    values: list[list[float]] = [[] for _ in range(count)]
    query = sa.select(RequestLog.created_at, RequestLog.latency_ms).where(
        *_where(since, until, user_id), RequestLog.latency_ms.is_not(None))
    for created, latency in db.session.execute(query):
        values[min(int((created - since) / bucket), count - 1)].append(latency)
    out = {}
    for i, lats in enumerate(values):
        if lats:
            lats.sort()
            out[i] = {f"p{p}": float(lats[math.ceil(p * len(lats) / 100) - 1]) for p in PERCENTILES}
    return out


# -- public interface ------------------------------------------------------------------------------------
def _row(sums: dict | None, pcts: dict | None) -> dict:
    sums = dict(sums or _summed((0,) * len(SUMMED)))
    sums.pop("_hist", None)
    pcts = pcts or {}
    return {**sums, "tokens": sums["input_tokens"] + sums["output_tokens"],
            "error_rate": sums["errors"] / sums["requests"] if sums["requests"] else 0.0,
            "hit_rate": sums["cache_hits"] / sums["requests"] if sums["requests"] else 0.0,
            "p50": pcts.get("p50"), "p95": pcts.get("p95")}


def _series(since: datetime, until: datetime, bucket: timedelta, user_id: int | None) -> list[dict]:
    """One row per bucket: sums and percentiles, from roll-ups when aligned, else from the log."""
    count = max(1, math.ceil((until - since) / bucket))
    period = _period(since, until, bucket)
    if period is None:
        conds, expr = _where(since, until, user_id), _bucket(RequestLog.created_at, since, count, bucket)
        sums, pcts = _sums(conds, expr), _percentiles(conds, expr)
        return [_row(sums.get(i), pcts.get(i)) for i in range(count)]
    sums = _r_sums(_r_where(period, since, until, user_id), _bucket(UsageRollup.bucket_start, since, count, bucket))
    total = sum(s["requests"] for s in sums.values())
    if total <= EXACT_PERCENTILE_ROWS and _raw_rows_cover(since):
        pcts = _exact_percentiles(since, until, bucket, count, user_id)
    else:
        pcts = {i: {f"p{p}": estimate_percentile(s["_hist"], p) for p in PERCENTILES} for i, s in sums.items()}
    return [_row(sums.get(i), pcts.get(i)) for i in range(count)]


def totals(since: datetime, until: datetime, user_id: int | None = None) -> dict:
    """Requests, errors, error rate, tokens, cost, cache hits and savings, latency percentiles over the window."""
    return _series(since, until, until - since, user_id)[0]


def overview(since: datetime, until: datetime, bucket: timedelta, user_id: int | None = None) -> dict:
    """Time series per bucket (labels are bucket starts, ISO, UTC) plus totals for the window."""
    count = max(1, math.ceil((until - since) / bucket))
    rows = _series(since, until, bucket, user_id)
    series = {name: [r[name] for r in rows] for name in (
        "requests", "errors", "error_rate", "input_tokens", "output_tokens", "tokens", "cost", "p50", "p95")}
    return {"labels": [(since + bucket * i).isoformat() + "Z" for i in range(count)], **series,
            "totals": totals(since, until, user_id)}


def top(dim: str, since: datetime, until: datetime, user_id: int | None = None, limit: int = 10,
        by: str = "requests") -> list[dict]:
    """The busiest (or, by="cost", costliest) users, models, prompts, keys or tags: requests, errors, tokens, cost."""
    period = _period(since, until, None)
    if period is None:
        column = DIMENSIONS[dim]
        query = sa.select(
            column, sa.func.count().label("requests"),
            sa.func.sum(sa.case((RequestLog.status >= 400, 1), else_=0)),
            sa.func.sum(sa.func.coalesce(RequestLog.input_tokens, 0) + sa.func.coalesce(RequestLog.output_tokens, 0)),
            sa.func.sum(sa.func.coalesce(RequestLog.cost, 0.0)).label("cost"),
        ).where(*_where(since, until, user_id), column.is_not(None)).group_by(column).order_by(
            sa.desc(by), column).limit(limit)
        if dim == "tag":
            query = query.join(RequestTag, RequestTag.request_id == RequestLog.request_id)
    else:
        column = UsageRollup.user_id if dim == "user" else UsageRollup.value
        if dim == "user":  # per-user "all" rows (everyone's row and requests without a user left out)
            conds = [UsageRollup.period == period, UsageRollup.dim == "all", UsageRollup.bucket_start >= since,
                     UsageRollup.bucket_start < until, UsageRollup.user_id > 0]
            if user_id is not None:
                conds.append(UsageRollup.user_id == user_id)
        else:
            conds = _r_where(period, since, until, user_id, dim)
        query = sa.select(
            column, sa.func.sum(UsageRollup.requests).label("requests"), sa.func.sum(UsageRollup.errors),
            sa.func.sum(UsageRollup.input_tokens + UsageRollup.output_tokens),
            sa.func.sum(UsageRollup.cost).label("cost"),
        ).where(*conds).group_by(column).order_by(sa.desc(by), column).limit(limit)
    rows = [{"key": int(k) if dim == "key" else k, "label": str(k), "requests": int(n), "errors": int(e or 0),
             "tokens": int(t or 0), "cost": float(c or 0.0)} for k, n, e, t, c in db.session.execute(query)]
    if dim == "user" and rows:
        query = sa.select(User.id, User.name).where(User.id.in_([r["key"] for r in rows]))
        names = dict(db.session.execute(query).tuples().all())
        for r in rows:
            r["label"] = names.get(r["key"], f"deleted user #{r['key']}")
    return rows


def split_unknown_models(rows: list[dict], since: datetime, until: datetime, user_id: int | None = None,
                         limit: int = 10) -> tuple[list[dict], list[dict]]:
    """Top-model rows split into models that exist (or served a call in the window) and names no model had.

    A refused call for a made-up model name is logged under that name; it is not a model's usage.
    """
    names = [r["label"] for r in rows]
    known = set(db.session.scalars(sa.select(Model.slug).where(Model.slug.in_(names)))) if names else set()
    rest = [n for n in names if n not in known]
    if rest:
        known |= set(db.session.scalars(sa.select(RequestLog.model).where(
            *_where(since, until, user_id), RequestLog.model.in_(rest), RequestLog.model_id.is_not(None)).distinct()))
    return [r for r in rows if r["label"] in known][:limit], [r for r in rows if r["label"] not in known][:limit]


def top_groups(since: datetime, until: datetime, limit: int = 10) -> list[dict]:
    """Usage by group: the sums of each group's current members (a user in two groups counts in both)."""
    per_user = {r["key"]: r for r in top("user", since, until, limit=1_000_000)}
    rows: dict[str, dict] = {}
    for user_id, name in db.session.execute(sa.select(GroupMember.user_id, Group.name).join(Group)):
        if user_id in per_user:
            row = rows.setdefault(name, {"key": name, "label": name, "requests": 0, "errors": 0, "tokens": 0,
                                         "cost": 0.0})
            for field in ("requests", "errors", "tokens", "cost"):
                row[field] += per_user[user_id][field]
    return sorted(rows.values(), key=lambda r: (-r["requests"], r["label"]))[:limit]


def prompt_versions(prompt: Prompt, since: datetime, until: datetime) -> list[dict]:
    """Per version of a prompt in the window, newest first: the _row sums and p50/p95, plus the labels on it.

    Read from the request log (roll-ups have no version): one grouped query for the sums and one ranked query for
    exact nearest-rank percentiles. Versions without traffic are listed when a label points at them (a rollout's
    new version shows up at 0 before its first call). Rows pruned by retention are not counted.
    """
    conds = [*_where(since, until, None), RequestLog.prompt == prompt.slug, RequestLog.prompt_version.is_not(None)]
    sums, pcts = _sums(conds, RequestLog.prompt_version), _percentiles(conds, RequestLog.prompt_version)
    labels: dict[int, list[tuple[str, int]]] = {}
    for lab in db.session.scalars(sa.select(PromptLabel).where(PromptLabel.prompt_id == prompt.id)
                                  .order_by(PromptLabel.label)):
        for version, percent in (lab.split or [(lab.version, 100)]):
            labels.setdefault(int(version), []).append((lab.label, int(percent)))
    live = prompt.live_version or prompt.latest_version
    return [{"version": v, **_row(sums.get(v), pcts.get(v)), "live": v == live, "labels": labels.get(v, [])}
            for v in sorted(set(sums) | set(labels), reverse=True)]
