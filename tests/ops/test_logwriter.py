"""The request log: one row per request, written in batches off the hot path, never dropped; roll-ups agree."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import requests
import sqlalchemy as sa

from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import RequestLog, UsageRollup, utcnow
from promptproxy.observe.logwriter import LogWriter

from ..conftest import flush_logs, log_rows, wait_for


def rollup_totals(app, period: str) -> dict:
    """Summed roll-up columns for one period."""
    with app.app_context():
        row = db.session.execute(sa.select(
            sa.func.sum(UsageRollup.requests), sa.func.sum(UsageRollup.errors),
            sa.func.sum(UsageRollup.input_tokens), sa.func.sum(UsageRollup.output_tokens),
            sa.func.sum(UsageRollup.latency_count)).where(
            UsageRollup.period == period, UsageRollup.dim == "all", UsageRollup.user_id == -1)).one()
        return dict(zip(("requests", "errors", "input_tokens", "output_tokens", "latency_count"),
                        (int(v or 0) for v in row), strict=True))


def test_n_concurrent_requests_give_n_rows_and_matching_rollups(app, live, seeded):
    n = 120
    url = live + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {seeded.key}"}

    def one(i):
        model = "gpt-4o-mini" if i % 4 else "no-such-model"  # failures are logged too
        r = requests.post(url, json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                          headers=headers, timeout=30)
        return r.status_code, r.headers["x-request-id"]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(n)))
    rows = log_rows(app)
    assert len(rows) == n
    assert {r.request_id for r in rows} == {rid for _, rid in results}
    assert sorted(r.status for r in rows) == sorted(status for status, _ in results)
    errors = sum(1 for status, _ in results if status >= 400)
    assert errors == n // 4
    ok_rows = [r for r in rows if r.status == 200]
    for period in ("h",):
        totals = rollup_totals(app, period)
        assert totals["requests"] == n
        assert totals["errors"] == errors
        assert totals["input_tokens"] == sum(r.input_tokens for r in ok_rows) == 11 * len(ok_rows)
        assert totals["output_tokens"] == 7 * len(ok_rows)
        assert totals["latency_count"] == n
    with app.app_context():
        from promptproxy.models import ApiKey

        used = db.session.scalar(sa.select(ApiKey.last_used_at).where(ApiKey.user_id == seeded.user_id))
    assert used is not None  # last_used_at updated by the writer, not the request


def row(i: int, **fields) -> dict:
    """A minimal log row."""
    base = {"request_id": f"req_test_{i}", "created_at": utcnow(), "endpoint": "/v1/chat/completions",
            "status": 200, "model": "m", "latency_ms": 12.0, "input_tokens": 3, "output_tokens": 4}
    base.update(fields)
    return base


def count_rows(app) -> int:
    """Rows in request_logs."""
    with app.app_context():
        try:
            return db.session.scalar(sa.select(sa.func.count()).select_from(RequestLog))
        finally:
            db.session.remove()


def test_full_queue_makes_requests_wait_and_loses_nothing(app, monkeypatch):
    writer = LogWriter(app, interval=0.01, batch_size=4, max_queue=5)
    database_up = threading.Event()
    real_write = writer._write

    def flaky_write(rows):
        if not database_up.is_set():
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is down"))
        real_write(rows)

    monkeypatch.setattr(writer, "_write", flaky_write)
    submitted = []

    def producer():
        for i in range(30):
            writer.submit(row(i))
            submitted.append(i)

    thread = threading.Thread(target=producer)
    thread.start()
    # with the database down the writer holds one batch, the queue fills and the producer has to wait
    assert wait_for(lambda: writer.blocked >= 1)
    assert len(submitted) < 30 and thread.is_alive()
    assert writer.queued <= 5 + 4
    database_up.set()
    thread.join(30)
    assert not thread.is_alive()
    writer.close()
    assert count_rows(app) == 30
    assert writer.written == 30


def test_rows_submitted_after_close_are_still_written(app):
    writer = LogWriter(app, interval=60, batch_size=100)
    writer.submit(row(1))
    writer.close()
    writer.submit(row(2))  # e.g. a stream that ended after the shutdown flush
    assert count_rows(app) == 2


def test_prune_keeps_rollups(app):
    gw = app.extensions["promptproxy"]
    old = utcnow() - timedelta(days=40)
    for i in range(5):
        gw.logs.submit(row(i, created_at=old, status=500 if i == 0 else 200))
    for i in range(5, 8):
        gw.logs.submit(row(i))
    flush_logs(app)
    before = rollup_totals(app, "h")
    result = app.test_cli_runner().invoke(cli, args=["prune", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert "pruned 5 request-log rows" in result.output
    assert {r.request_id for r in log_rows(app)} == {f"req_test_{i}" for i in range(5, 8)}
    assert rollup_totals(app, "h") == before == {"requests": 8, "errors": 1, "input_tokens": 24,
                                                 "output_tokens": 32, "latency_count": 8}


def test_prune_without_retention_does_nothing(app):
    app.extensions["promptproxy"].logs.submit(row(1, created_at=utcnow() - timedelta(days=400)))
    flush_logs(app)
    result = app.test_cli_runner().invoke(cli, args=["prune"])
    assert result.exit_code == 0
    assert "retention is off" in result.output
    assert count_rows(app) == 1


def test_writer_prunes_periodically_when_retention_is_set(app):
    writer = LogWriter(app, interval=0.01, retention_days=7)
    writer.submit(row(1, created_at=utcnow() - timedelta(days=8)))
    writer.flush()
    writer.submit(row(2))  # starts the thread, whose first pass prunes
    assert wait_for(lambda: count_rows(app) == 1 and writer.queued == 0)
    writer.close()
    assert [r.request_id for r in log_rows(app)] == ["req_test_2"]
    assert rollup_totals(app, "h")["requests"] == 2


def test_rollups_rebuild_matches_incremental(app):
    gw = app.extensions["promptproxy"]
    for i in range(20):
        gw.logs.submit(row(i, status=200 if i % 3 else 429, latency_ms=float(i * 50), user_id=i % 2 or None,
                           prompt="p" if i % 5 == 0 else None))
    flush_logs(app)
    with app.app_context():
        def snapshot():
            cols = [c for c in UsageRollup.__table__.c if c.name != "id"]
            return sorted(tuple(r) for r in db.session.execute(sa.select(*cols)))
        incremental = snapshot()
        db.session.remove()
    result = app.test_cli_runner().invoke(cli, args=["rollups", "rebuild"])
    assert result.exit_code == 0 and "from 20 request-log rows" in result.output
    with app.app_context():
        assert snapshot() == incremental
