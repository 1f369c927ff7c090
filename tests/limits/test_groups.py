"""Groups: the union rule for access, keys narrowing, every limit passing, a shared group budget, named 429s."""
from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from promptproxy import groups, manage
from promptproxy.extensions import db
from promptproxy.models import BudgetUsage, Group

from ..conftest import log_rows
from .conftest import chat, parallel, set_limits
from .test_access import not_found
from .test_budgets import answer_with_usage, set_prices, usage_rows


def make_group(app, name="research", members=("bob",), **limits) -> None:
    """Create a group through groups.* (as the CLI and the dashboard do) and add members."""
    with app.app_context():
        groups.create_group("test", name, **limits)
        for member in members:
            groups.set_memberships("test", manage.get_user(member), add=[name])
        db.session.commit()


def update_group(app, name="research", **limits) -> None:
    with app.app_context():
        groups.update_group("test", groups.get_group(name), **limits)
        db.session.commit()


def model_ids(live, key) -> list[str]:
    import requests

    resp = requests.get(live + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return [m["id"] for m in resp.json()["data"]]


@pytest.fixture
def big(app, seeded):
    """A second chat model bob's own grants do not include."""
    with app.app_context():
        manage.create_model("test", "big", manage.get_provider("local"), "big-upstream")
        db.session.commit()


# -- access: the union rule ----------------------------------------------------------------------------------
def test_a_group_grant_widens_its_members_access(live, app, seeded, big, upstream):
    resp = chat(live, seeded.other_key, model="big")
    assert (resp.status_code, resp.json()) == (404, not_found("model", "big"))
    make_group(app, allow_models=["big"], allow_prompts=["translator"])
    assert chat(live, seeded.other_key, model="big").status_code == 200
    assert chat(live, seeded.other_key, model="gpt-4o-mini:translator").status_code == 200  # own model, group prompt
    assert {"big", "gpt-4o-mini", "gpt-4o-mini:translator", "big:translator"} <= set(model_ids(live, seeded.other_key))


def test_the_user_or_any_group_allows_and_leaving_takes_it_away(live, app, seeded, big):
    make_group(app, "a", allow_models=["big"])
    make_group(app, "b", all_prompts=True)
    assert chat(live, seeded.other_key, model="big:translator").status_code == 200  # model from a, prompt from b
    with app.app_context():
        groups.set_memberships("test", manage.get_user("bob"), remove=["a"])
        db.session.commit()
    assert chat(live, seeded.other_key, model="big").status_code == 404
    assert chat(live, seeded.other_key, model="gpt-4o-mini:translator").status_code == 200


def test_a_group_with_every_model_grants_models_created_later(live, app, seeded):
    make_group(app, all_models=True)
    with app.app_context():
        manage.create_model("test", "later", manage.get_provider("local"), "later-upstream")
        db.session.commit()
    assert chat(live, seeded.other_key, model="later").status_code == 200


def test_a_key_narrows_a_group_grant_and_never_widens(live, app, seeded, big):
    make_group(app, allow_models=["big"])
    with app.app_context():
        key = manage.get_key("2")
        manage.update_key("test", key, allow_models=["gpt-4o-mini"])  # the key lists only its user's own model
        db.session.commit()
    resp = chat(live, seeded.other_key, model="big")
    assert (resp.status_code, resp.json()) == (404, not_found("model", "big"))
    assert chat(live, seeded.other_key, model="gpt-4o-mini").status_code == 200
    with app.app_context():
        manage.create_model("test", "secret", manage.get_provider("local"), "secret-upstream")
        manage.update_key("test", manage.get_key("2"), allow_models=["secret"])  # neither user nor group grants it
        db.session.commit()
    assert chat(live, seeded.other_key, model="secret").status_code == 404


# -- limits: every applicable one must pass --------------------------------------------------------------------
def test_group_budget_429_names_the_group_and_changes_nothing(live, app, seeded, upstream):
    set_prices(app, input_price=1000.0, output_price=1000.0)
    make_group(app, members=("alice",), budget=0.5, period="day")
    set_limits(app, budget=100, period="day")  # the user's own budget has room: the group's refuses
    app.extensions["promptproxy"].limiter.now = lambda: datetime(2026, 3, 4, 18, 0)
    resp = chat(live, seeded.key, max_tokens=1000)
    assert resp.status_code == 429
    assert resp.json() == {"error": {
        "message": "The budget of $0.50 per day for group 'research' is used up or too small for this request; "
                   "it resets at 2026-03-05T00:00:00Z.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    assert resp.headers["Retry-After"] == str(6 * 3600)
    assert not upstream.requests
    assert {s: v for (s, _), v in usage_rows(app).items()} == {"user:1": (0, 0), "group:1": (0, 0)}
    [row] = log_rows(app)
    assert (row.status, row.error_type, row.cost) == (429, "insufficient_quota", None)


def test_the_user_budget_still_applies_inside_a_roomy_group(live, app, seeded, upstream):
    set_prices(app, input_price=1000.0, output_price=1000.0)
    make_group(app, members=("alice",), budget=100, period="day")
    set_limits(app, budget=0.5, period="day")
    resp = chat(live, seeded.key, max_tokens=1000)
    assert resp.status_code == 429 and "for your user" in resp.json()["error"]["message"]
    assert all(v == (0, 0) for v in usage_rows(app).values())  # the group's reservation was released too


def test_group_rpm_is_shared_by_its_members(live, app, seeded):
    make_group(app, members=("alice", "bob"), rpm=2)
    assert chat(live, seeded.key).status_code == 200
    assert chat(live, seeded.other_key).status_code == 200
    resp = chat(live, seeded.key)
    assert resp.status_code == 429
    assert resp.json()["error"] == {
        "message": resp.json()["error"]["message"], "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    assert resp.json()["error"]["message"].startswith(
        "Rate limit reached for group 'research' on requests per min (RPM): Limit 2.")
    assert resp.headers["x-ratelimit-limit-requests"] == "2"


def test_group_concurrency_cap_names_the_group(live, app, seeded, upstream):
    import threading

    make_group(app, members=("alice", "bob"), max_concurrent=1)
    release = threading.Event()
    entered = threading.Event()
    default = upstream.handler

    def slow(req):
        entered.set()
        release.wait(10)
        return default(req)

    upstream.handler = slow
    first = threading.Thread(target=lambda: chat(live, seeded.key))
    first.start()
    try:
        assert entered.wait(10)
        resp = chat(live, seeded.other_key)
        assert resp.status_code == 429
        assert resp.json()["error"]["message"] == ("Too many concurrent requests for group 'research': the limit is 1. "
                                                   "Retry when one of them has finished.")
    finally:
        release.set()
        first.join(10)


def test_shared_group_budget_is_not_overspent_by_members_calling_concurrently(live, app, seeded, upstream):
    set_prices(app, input_price=1000.0, output_price=1000.0)
    answer_with_usage(upstream, 20, 1000)  # actual $1.02, a bit over the $1.007 reserved
    make_group(app, members=("alice", "bob"), budget=5.5, period="day")
    keys = (seeded.key, seeded.other_key)
    results = parallel(20, lambda i: chat(live, keys[i % 2], max_tokens=1000))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    assert {r.json()["error"]["message"].split(" is used")[0] for r in results if r.status_code == 429} == {
        "The budget of $5.50 per day for group 'research'"}
    usage = {s: v for (s, _), v in usage_rows(app).items()}
    spent, reserved = usage["group:1"]
    assert reserved == 0 and spent == pytest.approx(5 * 1.02)
    assert spent == pytest.approx(sum(r.cost or 0 for r in log_rows(app)))


def test_deleting_a_group_drops_its_grants_and_budget(live, app, seeded, big):
    make_group(app, allow_models=["big"], budget=5)
    assert chat(live, seeded.other_key, model="big").status_code == 200
    with app.app_context():
        groups.delete_group("test", groups.get_group("research"))
        db.session.commit()
        assert db.session.scalar(sa.select(BudgetUsage).where(BudgetUsage.subject == "group:1")) is None
        assert manage.get_user("bob").groups == []
    assert chat(live, seeded.other_key, model="big").status_code == 404


# -- guards on create and update ------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "two words"}, "group name must be 1-64 letters"),
    ({"name": "o'brien"}, "group name must be 1-64 letters"),
    ({"name": "x" * 65}, "group name must be 1-64 letters"),
    ({"rpm": -1}, "rpm must be 0 (no limit) or more"),
    ({"budget": -2.0}, "budget must be 0 (no budget) or more"),
    ({"period": "year"}, "period must be one of day, week, month"),
    ({"allow_models": ["nope"]}, "no model `nope`"),
    ({"allow_prompts": ["nope"]}, "no prompt `nope`"),
    ({"description": "d" * 257}, "description must be at most 256 characters"),
])
@pytest.mark.parametrize("path", ["create", "update"])
def test_guards_refuse_bad_values_on_create_and_update_changing_nothing(app, seeded, fields, message, path):
    make_group(app, "base", members=(), rpm=7)
    with app.app_context():
        with pytest.raises(manage.ManageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            if path == "create":
                groups.create_group("test", **{"name": "fresh", **fields})
            else:
                groups.update_group("test", groups.get_group("base"), **fields)
        db.session.rollback()
        assert [(g.name, g.rpm, g.budget_usd, g.allowed_models) for g in db.session.scalars(sa.select(Group))] == [
            ("base", 7, None, None)]


def test_duplicate_names_are_refused_on_create_and_rename(app, seeded):
    make_group(app, "a", members=())
    make_group(app, "b", members=())
    with app.app_context():
        with pytest.raises(manage.ManageError, match="group `a` already exists"):
            groups.create_group("test", "a")
        with pytest.raises(manage.ManageError, match="group `a` already exists"):
            groups.update_group("test", groups.get_group("b"), name="a")
        with pytest.raises(manage.ManageError, match="no group `c`"):
            groups.set_memberships("test", manage.get_user("bob"), add=["c"])
