"""Issue 25 item 5: a member never sees provider or upstream details, allowed some models or every model.

"Every model allowed" means no limit on what a member may call; it must never make them an administrator in the
dashboard: no provider list, no "New model" form, no upstream names on any page, fragment or CSV they can reach.
"""
from __future__ import annotations

import csv
import io

import pytest

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import RequestLog, User, utcnow

from ..admin.conftest import (  # noqa: F401 - fixtures used by name
    ADMIN_PW,
    MEMBER_PW,
    _logged_in,
    admin_web,
    cheap_hash,
    people,
)

PROVIDER = "acme-provider-name"
UPSTREAM = {"allowed-model": "acme-upstream-alpha", "other-model": "acme-upstream-beta"}
HIDDEN = (PROVIDER, *UPSTREAM.values())
FRAGMENTS = ("rows", "charts", "create-form")  # the HX-Target values the dashboard's pages swap


@pytest.fixture
def shop(app, people, upstream):  # noqa: F811
    """A provider serving two models; mia may use `allowed-model`, max every model; each has a logged request."""
    with app.app_context():
        provider = manage.create_provider("t", PROVIDER, "openai", upstream.url + "/v1", api_key="sk-acme-9999")
        for slug, name in UPSTREAM.items():
            manage.create_model("t", slug, provider, name)
        mia = db.session.get(User, people["mia"])
        manage.update_user("t", mia, allow_models=["allowed-model"])
        mad = manage.create_user("t", "max", email="max@example.com", all_models=True, all_prompts=True)
        mad.password_hash = cheap_hash(MEMBER_PW)
        ids = {"mia": mia.id, "max": mad.id}
        rows = {}
        for name, user_id in ids.items():
            row = RequestLog(request_id=f"req-{name}", user_id=user_id, model="allowed-model",
                             upstream_model=UPSTREAM["allowed-model"], provider_id=provider.id,
                             endpoint="/v1/chat/completions", status=200, input_tokens=5, output_tokens=7, cost=0.01,
                             latency_ms=10.0, created_at=utcnow())
            db.session.add(row)
            db.session.flush()
            rows[name] = row.id
        db.session.commit()
    return rows


@pytest.fixture(params=["mia", "max"], ids=["some-models", "all-models"])
def member(request, app, shop):
    """A logged-in member allowed some models (mia) or every model (max), with their own request row's id."""
    web = _logged_in(app, f"{request.param}@example.com", MEMBER_PW)
    web.name, web.row_id = request.param, shop[request.param]
    return web


def member_urls(app, row_id: int) -> list[str]:
    """Every GET /admin URL (ids filled with the member's own request row, else 1)."""
    urls = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.rule.startswith("/admin") and "GET" in rule.methods and rule.endpoint != "admin.logout":
                urls.append(app.url_for(rule.endpoint, **{arg: row_id if arg == "row_id" else 1
                                                          for arg in rule.arguments}))
    return sorted(set(urls))


def leaks(text: str) -> list[str]:
    """Provider and upstream names found in a page."""
    return [name for name in HIDDEN if name in text]


def test_a_member_sees_no_provider_or_upstream_name_on_any_page_or_fragment(app, member):
    reached, wrong = [], []
    for url in member_urls(app, member.row_id):
        for headers in [{}, *({"HX-Request": "true", "HX-Target": t} for t in FRAGMENTS)]:
            resp = member.get(url, headers=headers)
            if resp.status_code == 200:
                reached.append(url)
                found = leaks(resp.get_data(as_text=True))
                if found:
                    wrong.append((url, headers.get("HX-Target"), found))
    assert {"/admin/models", "/admin/requests.csv", f"/admin/requests/{member.row_id}"} <= set(reached)
    assert wrong == []


def test_a_member_gets_no_new_model_form(member):
    page = member.get("/admin/models").get_data(as_text=True)
    assert "allowed-model" in page and "New model" not in page and 'method="post" action="/admin/models"' not in page
    assert "Search slug" in page and "Search slug or upstream name" not in page


def test_a_member_searches_models_by_slug_only(member):
    by_upstream = member.hx_get("/admin/models?q=acme-upstream", "rows").get_data(as_text=True)
    assert "allowed-model" not in by_upstream
    assert "allowed-model" in member.hx_get("/admin/models?q=allowed", "rows").get_data(as_text=True)


def test_a_member_with_every_model_lists_every_model_and_one_with_some_only_theirs(app, shop):
    some = _logged_in(app, "mia@example.com", MEMBER_PW).get("/admin/models").get_data(as_text=True)
    every = _logged_in(app, "max@example.com", MEMBER_PW).get("/admin/models").get_data(as_text=True)
    assert "allowed-model" in some and "other-model" not in some
    assert "allowed-model" in every and "other-model" in every


def test_a_members_csv_has_no_upstream_model_column(member):
    resp = member.get("/admin/requests.csv")
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert resp.status_code == 200 and [r["request_id"] for r in rows] == [f"req-{member.name}"]
    assert "upstream_model" not in rows[0] and rows[0]["model"] == "allowed-model"


def test_an_admin_still_sees_providers_upstream_names_and_the_form(admin_web, shop):  # noqa: F811
    page = admin_web.get("/admin/models").get_data(as_text=True)
    assert "New model" in page and PROVIDER in page and UPSTREAM["other-model"] in page
    assert "other-model" in admin_web.hx_get("/admin/models?q=acme-upstream-beta", "rows").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(admin_web.get("/admin/requests.csv").get_data(as_text=True))))
    assert {r["upstream_model"] for r in rows} == {UPSTREAM["allowed-model"]}
