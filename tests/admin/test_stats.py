"""The overview numbers match the request log; filters and CSV export of the log."""
from __future__ import annotations

import csv
import io
import math
import random
from datetime import datetime, timedelta

import openai
import pytest
import sqlalchemy as sa

from promptproxy import stats
from promptproxy.admin.overview import money
from promptproxy.extensions import db
from promptproxy.models import RequestLog

from ..conftest import log_rows

NOW = datetime(2026, 11, 28, 12, 30)


def nearest_rank(values, p):
    values = sorted(values)
    return values[math.ceil(p * len(values) / 100) - 1] if values else None


@pytest.fixture
def rows(app, people):
    """80 rows over the last 26 hours (some outside the 24 h window), random but seeded."""
    rnd = random.Random(7)
    made = []
    with app.app_context():
        for i in range(80):
            row = RequestLog(
                request_id=f"r{i}", created_at=NOW - timedelta(minutes=rnd.randint(0, 26 * 60)),
                user_id=rnd.choice([people["mia"], people["otto"]]), key_id=1, model=rnd.choice(["a", "b", "c"]),
                prompt=rnd.choice([None, "p"]), endpoint="/v1/chat/completions",
                status=rnd.choice([200, 200, 200, 429, 502]), input_tokens=rnd.choice([None, 10, 20]),
                output_tokens=rnd.randint(0, 50), cost=rnd.choice([None, 0.001, 0.25]),
                latency_ms=rnd.choice([None, *range(5, 900, 7)]))
            db.session.add(row)
            made.append(row)
        db.session.commit()
        made = db.session.scalars(sa.select(RequestLog)).all()
        db.session.expunge_all()
    return made


def test_window_aligns_to_buckets():
    since, until, bucket = stats.window("24h", NOW)
    assert (since, until, bucket) == (datetime(2026, 11, 27, 13), datetime(2026, 11, 28, 13), timedelta(hours=1))
    since, until, bucket = stats.window("30d", NOW)
    assert until == datetime(2026, 11, 29) and since == datetime(2026, 10, 30) and bucket == timedelta(days=1)


@pytest.mark.parametrize("user", [None, "mia"])
def test_overview_series_match_the_log(app, rows, people, user):
    user_id = people[user] if user else None
    since, until, bucket = stats.window("24h", NOW)
    with app.app_context():
        data = stats.overview(since, until, bucket, user_id=user_id)
    assert len(data["labels"]) == 24 and data["labels"][0] == "2026-11-27T13:00:00Z"
    for i in range(24):
        start = since + bucket * i
        mine = [r for r in rows if start <= r.created_at < start + bucket and user_id in (None, r.user_id)]
        assert data["requests"][i] == len(mine)
        assert data["errors"][i] == sum(r.status >= 400 for r in mine)
        assert data["tokens"][i] == sum((r.input_tokens or 0) + r.output_tokens for r in mine)
        assert data["cost"][i] == pytest.approx(sum(r.cost or 0 for r in mine))
        lat = [r.latency_ms for r in mine if r.latency_ms is not None]
        assert data["p50"][i] == nearest_rank(lat, 50) and data["p95"][i] == nearest_rank(lat, 95)
    inside = [r for r in rows if since <= r.created_at < until and user_id in (None, r.user_id)]
    totals = data["totals"]
    assert totals["requests"] == len(inside) == sum(data["requests"])
    assert totals["error_rate"] == pytest.approx(sum(r.status >= 400 for r in inside) / len(inside))
    lat = [r.latency_ms for r in inside if r.latency_ms is not None]
    assert (totals["p50"], totals["p95"]) == (nearest_rank(lat, 50), nearest_rank(lat, 95))


def test_top_lists_match_the_log(app, rows, people):
    since, until, _ = stats.window("24h", NOW)
    inside = [r for r in rows if since <= r.created_at < until]
    with app.app_context():
        models = stats.top("model", since, until)
        users = stats.top("user", since, until)
        prompts = stats.top("prompt", since, until, user_id=people["mia"])
    for entry in models:
        mine = [r for r in inside if r.model == entry["key"]]
        assert entry["requests"] == len(mine) and entry["cost"] == pytest.approx(sum(r.cost or 0 for r in mine))
    assert [m["requests"] for m in models] == sorted((m["requests"] for m in models), reverse=True)
    assert {u["label"] for u in users} == {"mia", "otto"}
    assert prompts[0]["requests"] == sum(1 for r in inside if r.prompt == "p" and r.user_id == people["mia"])


def test_empty_window_has_zeroes_and_no_percentiles(app):
    since, until, bucket = stats.window("7d", NOW)
    with app.app_context():
        data = stats.overview(since, until, bucket)
    assert len(data["labels"]) == 28 and sum(data["requests"]) == 0 and data["totals"]["p50"] is None


def test_overview_page_shows_totals_from_real_gateway_calls(app, live, seeded, admin_web):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    for _ in range(3):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    logged = log_rows(app)
    body = admin_web.get("/admin/?range=24h").get_data(as_text=True)
    assert f'data-stat="requests">{len(logged)}<' in body
    tokens = sum((r.input_tokens or 0) + (r.output_tokens or 0) for r in logged)
    assert f'data-stat="tokens">{tokens}<' in body
    assert f'data-stat="cost">{money(sum(r.cost or 0 for r in logged))}<' in body
    assert 'data-chart=' in body and "alice" in body  # top users
    partial = admin_web.hx_get("/admin/?range=7d", "charts").get_data(as_text=True)
    assert "<html" not in partial and 'data-stat="requests">4<' in partial


def test_request_log_filters(admin_web, rows, people):
    body = admin_web.hx_get(f"/admin/requests?user={people['mia']}&status=error&model=a", "rows").get_data(
        as_text=True)
    assert "<html" not in body
    expected = [r for r in rows if r.user_id == people["mia"] and r.status >= 400 and r.model == "a"]
    assert body.count("/admin/requests/") == min(len(expected), 50)
    bad = admin_web.hx_get("/admin/requests?status=teapot&since=yesterday", "rows").get_data(as_text=True)
    assert "Status must be ok, error or a number." in bad and "Since is not a date and time." in bad


def test_request_log_time_range_and_csv(admin_web, rows):
    since = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    resp = admin_web.get(f"/admin/requests.csv?since={since}&status=200")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    expected = {r.request_id for r in rows if r.created_at >= NOW - timedelta(hours=2) and r.status == 200}
    assert {t["request_id"] for t in table} == expected
    assert admin_web.get("/admin/requests.csv?status=teapot").status_code == 400


def test_csv_cells_cannot_become_formulas(admin_web, app, people):
    with app.app_context():
        db.session.add(RequestLog(request_id="f1", created_at=NOW, user_id=people["mia"], model="=HYPERLINK(1)",
                                  endpoint="/v1/chat/completions", status=200))
        db.session.commit()
    body = admin_web.get("/admin/requests.csv").get_data(as_text=True)
    assert "'=HYPERLINK(1)" in body


def test_request_detail(admin_web, rows):
    body = admin_web.get("/admin/requests/1").get_data(as_text=True)
    assert "r0" in body and "Tokens" in body
    assert admin_web.get("/admin/requests/99999").status_code == 404
