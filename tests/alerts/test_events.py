"""Events: budget thresholds once each (also with two instances), model error rate, circuit open/close, key expiry."""
from __future__ import annotations

from datetime import timedelta

import requests

from promptproxy import create_app, manage
from promptproxy.alerts.events import BudgetSettled
from promptproxy.extensions import db
from promptproxy.models import BudgetUsage, RequestLog, utcnow
from promptproxy.ratelimit.limiter import period_start
from promptproxy.routing.breakers import Breakers
from promptproxy.routing.resilience import RetryPolicy

from ..conftest import base_config, wait_for
from ..limits.conftest import chat, set_limits
from .conftest import deliveries, make_hook, worker


def dollars_per_token(app, slug: str = "gpt-4o-mini") -> None:
    """Price the model at $1 per token, so one answer (11 + 7 tokens upstream) costs $18."""
    with app.app_context():
        manage.update_model("test", manage.get_model(slug), input_price=1e6, output_price=1e6)
        db.session.commit()


def test_budget_thresholds_fire_once_each(app, live, seeded, receiver):
    make_hook(app, receiver.url, events="budget")
    dollars_per_token(app)
    set_limits(app, budget=36.0, period="month")
    statuses = [chat(live, seeded.key, max_tokens=7).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]  # $18 (50 %), $36 (100 %), then the budget is used up
    assert wait_for(lambda: len(receiver.events("budget.threshold")) == 3)
    worker(app).run_once(checks=True)  # another pass finds nothing new
    alerts = receiver.events("budget.threshold")
    assert [a["data"]["threshold_percent"] for a in alerts] == [50.0, 80.0, 100.0]
    assert len(receiver.requests) == 3
    first = alerts[0]["data"]
    assert first["subject"] == "user" and first["name"] == "user alice" and first["budget_usd"] == 36.0
    assert first["period"] == "month" and "of its $36.00 per-month budget" in alerts[0]["text"]


def test_two_instances_sharing_the_database_queue_each_threshold_once(app, db_url, tmp_path, seeded, receiver):
    """Both instances see the same settled spend; the unique (webhook, event key) keeps one row per threshold."""
    make_hook(app, receiver.url, events="budget")
    make_hook(app, receiver.url, name="second-hook", events="budget")
    set_limits(app, budget=10.0, period="day")
    start = period_start("day", utcnow())
    subject = f"user:{seeded.user_id}"
    with app.app_context():
        db.session.add(BudgetUsage(subject=subject, period_start=start, spent=8.5, reserved=0.0))
        db.session.commit()
    second = create_app(base_config(db_url, tmp_path))
    try:
        for instance in (app, second, app, second):
            worker(instance).events.put(BudgetSettled(subject, "day", start, 10.0))
            worker(instance).run_once()
    finally:
        second.extensions["promptproxy"].close()
    rows = deliveries(app, "budget.threshold")
    assert sorted((r.webhook_id, r.payload["data"]["threshold_percent"]) for r in rows) == [
        (1, 50.0), (1, 80.0), (2, 50.0), (2, 80.0)]
    assert all(r.status == "delivered" for r in rows) and len(receiver.requests) == 4


def test_circuit_open_and_close_are_sent(app, live, seeded, upstream, receiver):
    make_hook(app, receiver.url, events="provider")
    gw = app.extensions["promptproxy"]
    gw.retry = RetryPolicy(max_retries=1, backoff=0.01, backoff_max=0.01)
    gw.breakers = Breakers(min_requests=2, cooldown=0.0, window=60.0, state=gw.state)
    gw.breakers.listener = gw.alerts.events.put
    answer = upstream.handler
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"}, b'{"error": {"message": "boom"}}')
    # Two failed requests from two keys open the circuit (one key's alone would not; nor would retry attempts).
    assert chat(live, seeded.key).status_code >= 500
    assert chat(live, seeded.other_key).status_code >= 500
    upstream.handler = answer
    assert chat(live, seeded.key).status_code == 200  # the half-open probe succeeds and closes it
    assert wait_for(lambda: len(receiver.requests) == 2)
    opened, closed = receiver.events()
    assert opened["event"] == "provider.circuit_open" and opened["data"]["provider"] == "local"
    assert "opened" in opened["text"] and opened["data"]["reason"].startswith("2 of 2 requests failed")
    assert closed["event"] == "provider.circuit_closed" and closed["data"]["state"] == "closed"


def test_key_about_to_expire_is_announced_once(app, seeded, receiver):
    make_hook(app, receiver.url, events="key_expiry")
    with app.app_context():
        user = manage.get_user("alice")
        soon, _ = manage.create_key("test", user, name="ci", expires_at=utcnow() + timedelta(days=3))
        manage.create_key("test", user, name="later", expires_at=utcnow() + timedelta(days=30))
        gone, _ = manage.create_key("test", user, name="gone", expires_at=utcnow() + timedelta(days=2))
        manage.revoke_key("test", gone)
        db.session.commit()
        soon_id = soon.id
    worker(app).run_once(checks=True)
    worker(app).run_once(checks=True)
    alerts = receiver.events("key.expiring")
    assert len(alerts) == 1 and alerts[0]["data"]["key_id"] == soon_id and alerts[0]["data"]["user"] == "alice"
    assert "expires at" in alerts[0]["text"]


def add_rows(app, model_id: int, model: str, statuses: list[int]) -> None:
    with app.app_context():
        for i, status in enumerate(statuses):
            db.session.add(RequestLog(request_id=f"req_{model}_{i}", model=model, model_id=model_id,
                                      endpoint="/v1/chat/completions", status=status))
        db.session.commit()


def test_a_model_error_rate_over_the_threshold_is_sent_once_per_window(app, seeded, receiver):
    make_hook(app, receiver.url, events="errors")
    with app.app_context():
        failing, fine = manage.get_model("gpt-4o-mini").id, manage.get_model("embed").id
    add_rows(app, failing, "gpt-4o-mini", [200] * 14 + [502] * 5 + [504])  # 6 of 20 failed: 30 %
    add_rows(app, fine, "embed", [200] * 10 + [429] * 8 + [500] * 2)  # 429s are not failures: 10 %
    worker(app).run_once(checks=True)
    worker(app).run_once(checks=True)
    alerts = receiver.events("errors.rate")
    assert len(alerts) == 1
    assert alerts[0]["data"] == {"model": "gpt-4o-mini", "requests": 20, "errors": 6, "error_rate": 0.3,
                                 "threshold": 0.2, "window_seconds": 300.0}


def test_too_few_requests_do_not_alert(app, seeded, receiver):
    make_hook(app, receiver.url, events="errors")
    with app.app_context():
        model_id = manage.get_model("gpt-4o-mini").id
    add_rows(app, model_id, "gpt-4o-mini", [502] * 5)
    worker(app).run_once(checks=True)
    assert receiver.requests == []


def test_events_go_only_to_webhooks_that_asked_for_them(app, seeded, receiver):
    make_hook(app, receiver.url, events="errors")
    start = period_start("month", utcnow())
    w = worker(app)
    w.events.put(BudgetSettled(f"user:{seeded.user_id}", "month", start, 1.0))
    w.run_once()
    assert deliveries(app) == [] and receiver.requests == []


def test_requests_never_wait_for_a_slow_receiver(app, live, seeded, receiver):
    """Delivery runs on the alerts thread: a request that crosses a threshold answers while the receiver hangs."""
    make_hook(app, receiver.url, events="budget")
    dollars_per_token(app)
    set_limits(app, budget=36.0, period="month")
    receiver.statuses = [200]
    response = requests.post(live + "/v1/chat/completions", json={"model": "gpt-4o-mini", "max_tokens": 7,
                             "messages": [{"role": "user", "content": "hi"}]},
                             headers={"Authorization": f"Bearer {seeded.key}"}, timeout=30)
    assert response.status_code == 200
    assert wait_for(lambda: len(receiver.events("budget.threshold")) == 1)


def test_a_group_budget_crossing_a_threshold_names_the_group(app, live, seeded, receiver):
    """A group's shared budget alerts like a user's: once per threshold, named by the group."""
    from promptproxy import groups

    make_hook(app, receiver.url, events="budget")
    dollars_per_token(app)
    with app.app_context():
        groups.create_group("test", "research", budget=36.0, period="month")
        groups.set_memberships("test", manage.get_user("alice"), add=["research"])
        db.session.commit()
    assert [chat(live, seeded.key, max_tokens=7).status_code for _ in range(3)] == [200, 200, 429]
    assert wait_for(lambda: len([a for a in receiver.events("budget.threshold")
                                 if a["data"]["subject"] == "group"]) == 3)
    group_alerts = [a for a in receiver.events("budget.threshold") if a["data"]["subject"] == "group"]
    assert [a["data"]["threshold_percent"] for a in group_alerts] == [50.0, 80.0, 100.0]
    assert group_alerts[0]["data"]["name"] == "group research"
    assert "group research has spent $18.00 of its $36.00 per-month budget" in group_alerts[0]["text"]
