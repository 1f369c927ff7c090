"""Dashboard aggregates from the roll-ups equal what the raw request log says, also after pruning."""
from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from promptproxy import stats
from promptproxy.models import LATENCY_EDGES_MS, utcnow
from promptproxy.rollups import histogram_index

from ..conftest import flush_logs


def nearest_rank(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile."""
    values = sorted(values)
    return values[math.ceil(p * len(values) / 100) - 1] if values else None


@pytest.fixture
def rows(app):
    """300 log rows spread over the last 30 days, a few users, models, prompts, errors."""
    rnd = random.Random(7)
    now = utcnow()
    out = []
    for i in range(300):
        out.append({"request_id": f"req_stats_{i}", "created_at": now - timedelta(minutes=rnd.randrange(0, 30 * 1440)),
                    "endpoint": "/v1/chat/completions", "status": rnd.choice([200, 200, 200, 429, 502]),
                    "user_id": rnd.choice([1, 2, 3]), "key_id": rnd.choice([10, 11]),
                    "model": rnd.choice(["a", "b"]), "prompt": rnd.choice([None, "p"]),
                    "input_tokens": rnd.randrange(100), "output_tokens": rnd.randrange(50),
                    "cost": rnd.random() / 100, "latency_ms": rnd.uniform(1, 3000)})
    for row in out:
        app.extensions["promptproxy"].logs.submit(row)
    flush_logs(app)
    return out


def expected(rows, since, until, bucket):
    """Per-bucket sums and percentiles computed in Python."""
    count = math.ceil((until - since) / bucket)
    buckets = [[] for _ in range(count)]
    for r in rows:
        if since <= r["created_at"] < until:
            buckets[int((r["created_at"] - since) / bucket)].append(r)
    return [{"requests": len(b), "errors": sum(r["status"] >= 400 for r in b),
             "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in b),
             "cost": sum(r["cost"] for r in b),
             "p50": nearest_rank([r["latency_ms"] for r in b], 50),
             "p95": nearest_rank([r["latency_ms"] for r in b], 95)} for b in buckets]


@pytest.mark.parametrize("name", ["24h", "7d", "30d"])
def test_overview_from_rollups_matches_the_log(app, rows, name):
    with app.app_context():
        since, until, bucket = stats.window(name)
        assert stats._period(since, until, bucket) == "h"  # the dashboard's ranges use the roll-ups
        data = stats.overview(since, until, bucket)
    want = expected(rows, since, until, bucket)
    assert data["requests"] == [b["requests"] for b in want]
    assert data["errors"] == [b["errors"] for b in want]
    assert data["tokens"] == [b["tokens"] for b in want]
    assert data["cost"] == pytest.approx([b["cost"] for b in want])
    assert data["p50"] == pytest.approx([b["p50"] for b in want])
    assert data["p95"] == pytest.approx([b["p95"] for b in want])
    total = expected(rows, since, until, until - since)[0]
    assert data["totals"]["requests"] == total["requests"]
    assert data["totals"]["p95"] == pytest.approx(total["p95"])


def test_top_lists_from_rollups(app, rows):
    with app.app_context():
        since, until, _ = stats.window("30d")
        users = stats.top("user", since, until)
        prompts = stats.top("prompt", since, until)
        keys = stats.top("key", since, until, user_id=2)
        mine = stats.totals(since, until, user_id=2)
        my_users = stats.top("user", since, until, user_id=2)
    inside = [r for r in rows if since <= r["created_at"] < until]
    counts = {u: sum(r["user_id"] == u for r in inside) for u in (1, 2, 3)}
    assert {u["key"]: u["requests"] for u in users} == counts
    assert all(u["label"].startswith("deleted user #") for u in users)  # no such users in this database
    assert [(p["key"], p["requests"]) for p in prompts] == [("p", sum(r["prompt"] == "p" for r in inside))]
    assert sum(k["requests"] for k in keys) == counts[2]
    assert mine["requests"] == counts[2]
    assert [(u["key"], u["requests"]) for u in my_users] == [(2, counts[2])]


def test_large_windows_estimate_percentiles_from_the_histogram(app, rows, monkeypatch):
    monkeypatch.setattr(stats, "EXACT_PERCENTILE_ROWS", 0)
    with app.app_context():
        since, until, _ = stats.window("30d")
        totals = stats.totals(since, until)
    exact = expected(rows, since, until, until - since)[0]
    for p in ("p50", "p95"):
        i = histogram_index(exact[p])
        low = LATENCY_EDGES_MS[i - 1] if i else 0
        assert low <= totals[p] <= LATENCY_EDGES_MS[i]  # in the same histogram bucket as the true value


def test_pruned_rows_still_count_in_the_overview(app, rows):
    with app.app_context():
        since, until, bucket = stats.window("30d")
        before = stats.overview(since, until, bucket)
    from promptproxy.cli import cli

    result = app.test_cli_runner().invoke(cli, args=["prune", "--days", "3"])
    assert result.exit_code == 0 and "pruned" in result.output
    app.config["RETENTION_DAYS"] = 3
    with app.app_context():
        after = stats.overview(since, until, bucket)
    for name in ("requests", "errors", "tokens"):
        assert after[name] == before[name]
    assert after["totals"]["requests"] == before["totals"]["requests"] == sum(
        since <= r["created_at"] < until for r in rows)
    assert after["totals"]["p50"] is not None  # from the histogram now


def test_unaligned_window_scans_the_log(app, rows):
    with app.app_context():
        now = utcnow()
        since, until = now - timedelta(hours=5, minutes=7), now
        assert stats._period(since, until, timedelta(minutes=30)) is None
        data = stats.totals(since, until)
    assert data["requests"] == sum(since <= r["created_at"] < until for r in rows)
