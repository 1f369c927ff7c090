"""Budgets per user and per key: reserve, settle, release, period resets and the concurrent race; cost figures."""
from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.core.usage import cost
from promptproxy.extensions import db
from promptproxy.models import BudgetUsage
from promptproxy.ratelimit.limiter import period_end, period_start

from ..conftest import log_rows
from ..upstream import chat_response
from .conftest import chat, parallel, set_limits


def set_prices(app, slug="gpt-4o-mini", **prices):
    with app.app_context():
        manage.update_model("test", manage.get_model(slug), **prices)
        db.session.commit()


def usage_rows(app) -> dict:
    with app.app_context():
        rows = db.session.scalars(sa.select(BudgetUsage).order_by(BudgetUsage.id)).all()
        return {(r.subject, r.period_start): (r.spent, r.reserved) for r in rows}


def answer_with_usage(upstream, prompt_tokens: int, completion_tokens: int, cached: int | None = None):
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}

    def handler(req):
        return 200, {"Content-Type": "application/json"}, json.dumps(chat_response(req["body"]["model"], usage=usage))

    upstream.handler = handler


# -- periods ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("day", datetime(2026, 3, 4, 23, 59, 59), datetime(2026, 3, 4), datetime(2026, 3, 5)),
    ("week", datetime(2026, 3, 4, 12), datetime(2026, 3, 2), datetime(2026, 3, 9)),  # Monday to Monday
    ("week", datetime(2026, 3, 2, 0, 0), datetime(2026, 3, 2), datetime(2026, 3, 9)),
    ("month", datetime(2026, 2, 28, 23, 0), datetime(2026, 2, 1), datetime(2026, 3, 1)),
    ("month", datetime(2026, 12, 31, 23, 59), datetime(2026, 12, 1), datetime(2027, 1, 1)),
    ("month", datetime(2026, 1, 31, 10), datetime(2026, 1, 1), datetime(2026, 2, 1)),
])
def test_period_boundaries_are_utc_calendar_boundaries(period, now, start, end):
    assert period_start(period, now) == start
    assert period_end(period, start) == end


# -- cost --------------------------------------------------------------------------------------------------
def test_cost_to_the_cent_with_cached_input_price():
    model = SimpleNamespace(input_price=2.50, output_price=10.00, cached_input_price=1.25, cache_write_price=None)
    usage = {"input_tokens": 1_234_567, "cached_tokens": 1_000_000, "output_tokens": 345_678}
    # 234,567 uncached x $2.50 + 1,000,000 cached x $1.25 + 345,678 out x $10.00, per million
    assert cost(model, usage) == pytest.approx(5.2931975)
    assert f"{cost(model, usage):.2f}" == "5.29"
    no_cached_price = SimpleNamespace(input_price=2.50, output_price=10.00, cached_input_price=None,
                                      cache_write_price=None)
    assert f"{cost(no_cached_price, usage):.2f}" == "6.54"  # cached tokens at the full input price


def test_logged_cost_and_budget_spend_for_a_known_usage(live, seeded, app, upstream):
    set_prices(app, input_price=2.50, output_price=10.00, cached_input_price=1.25)
    set_limits(app, budget=100, period="month")
    answer_with_usage(upstream, 120_000, 30_000, cached=100_000)
    assert chat(live, seeded.key).status_code == 200
    [row] = log_rows(app)
    assert (row.input_tokens, row.cached_tokens, row.output_tokens) == (120_000, 100_000, 30_000)
    assert row.cost == pytest.approx(0.475)
    [(spent, reserved)] = usage_rows(app).values()
    assert spent == pytest.approx(0.475) and reserved == 0


# -- reserve and settle ------------------------------------------------------------------------------------
def test_reservation_replaced_by_actual_cost_per_user_and_key(live, seeded, app):
    set_limits(app, budget=5, period="day")
    set_limits(app, key_id=1, budget=1, period="week")
    assert chat(live, seeded.key).status_code == 200
    [row] = log_rows(app)
    usage = usage_rows(app)
    assert sorted(s for s, _ in usage) == ["key:1", "user:1"]
    for (subject, start), (spent, reserved) in usage.items():
        assert spent == pytest.approx(row.cost) and reserved == 0
        assert start == period_start("day" if subject == "user:1" else "week", row.created_at)


def test_failed_call_releases_its_reservation(live, seeded, app, upstream):
    set_limits(app, budget=5)
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"},
                                    json.dumps({"error": {"message": "boom", "type": "server_error"}}))
    assert chat(live, seeded.key).status_code == 500
    [(spent, reserved)] = usage_rows(app).values()
    assert (spent, reserved) == (0, 0)


def test_over_budget_answers_429_insufficient_quota_without_upstream_call(live, seeded, app, upstream):
    set_prices(app, input_price=1000.0, output_price=1000.0)
    set_limits(app, budget=0.5, period="day")
    clock = app.extensions["promptproxy"].limiter
    clock.now = lambda: datetime(2026, 3, 4, 18, 0)
    resp = chat(live, seeded.key, max_tokens=1000)  # reserves about $1.007 > $0.50
    assert resp.status_code == 429
    assert resp.json() == {"error": {
        "message": "The budget of $0.50 per day for your user is used up or too small for this request; "
                   "it resets at 2026-03-05T00:00:00Z.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    assert resp.headers["Retry-After"] == str(6 * 3600)
    assert not upstream.requests
    [row] = log_rows(app)
    assert (row.status, row.error_type, row.cost) == (429, "insufficient_quota", None)
    [(spent, reserved)] = usage_rows(app).values()
    assert (spent, reserved) == (0, 0)


def test_no_max_tokens_reserves_the_default_cap(live, seeded, app):
    set_prices(app, input_price=0.0, output_price=1000.0)
    app.config["DEFAULT_MAX_TOKENS"] = 4096
    limiter = app.extensions["promptproxy"].limiter
    limiter.default_max_tokens = 4096
    set_limits(app, budget=4.0)  # 4096 x $1000/M = $4.096 does not fit; 3000 tokens ($3) does
    assert chat(live, seeded.key).status_code == 429
    assert chat(live, seeded.key, max_tokens=3000).status_code == 200


def test_budget_resets_at_the_period_boundary(live, seeded, app, upstream):
    set_prices(app, input_price=0.0, output_price=1000.0)
    set_limits(app, budget=1.5, period="day")
    answer_with_usage(upstream, 10, 1000)  # $1.00 a call
    limiter = app.extensions["promptproxy"].limiter
    limiter.now = lambda: datetime(2026, 3, 4, 23, 59, 59)
    assert chat(live, seeded.key, max_tokens=1000).status_code == 200
    assert chat(live, seeded.key, max_tokens=1000).status_code == 429
    limiter.now = lambda: datetime(2026, 3, 5, 0, 0, 0)
    assert chat(live, seeded.key, max_tokens=1000).status_code == 200
    assert usage_rows(app) == {("user:1", datetime(2026, 3, 4)): (pytest.approx(1.0), 0),
                               ("user:1", datetime(2026, 3, 5)): (pytest.approx(1.0), 0)}


def test_monthly_key_budget_resets_on_the_first(live, seeded, app, upstream):
    set_prices(app, input_price=0.0, output_price=1000.0)
    set_limits(app, key_id=1, budget=1.0, period="month")
    answer_with_usage(upstream, 10, 1000)
    limiter = app.extensions["promptproxy"].limiter
    limiter.now = lambda: datetime(2026, 1, 31, 12)
    assert chat(live, seeded.key, max_tokens=1000).status_code == 200
    refused = chat(live, seeded.key, max_tokens=1000)
    assert refused.status_code == 429
    assert "per month for this API key" in refused.json()["error"]["message"]
    limiter.now = lambda: datetime(2026, 2, 1)
    assert chat(live, seeded.key, max_tokens=1000).status_code == 200


def test_budget_race_20_parallel_requests_never_overspend(live, seeded, app, upstream):
    set_prices(app, input_price=1000.0, output_price=1000.0)
    answer_with_usage(upstream, 20, 1000)  # actual $1.02, a bit over the $1.007 reserved
    set_limits(app, budget=5.5, period="day")
    results = parallel(20, lambda i: chat(live, seeded.key, max_tokens=1000))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    assert {r.json()["error"]["code"] for r in results if r.status_code == 429} == {"insufficient_quota"}
    reservation = (7 + 1000) * 1000 / 1e6  # estimated input ("hi" + message overhead) + max_tokens
    [(spent, reserved)] = usage_rows(app).values()
    assert reserved == 0
    assert spent <= 5.5 + reservation
    assert spent == pytest.approx(sum(r.cost or 0 for r in log_rows(app)))  # spend = the log's costs


def test_free_models_pass_a_spent_budget(live, seeded, app):
    set_limits(app, budget=0.000001)
    set_prices(app, slug="embed", input_price=0.0, output_price=0.0)
    import requests

    resp = requests.post(live + "/v1/embeddings", json={"model": "embed", "input": "a"},
                         headers={"Authorization": f"Bearer {seeded.key}"})
    assert resp.status_code == 200
