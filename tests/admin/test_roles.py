"""A member reaches no admin page and none of anyone else's data: one test per route."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import ApiKey, RequestLog, User, utcnow

ADMIN_ONLY_GET = ["/admin/users", "/admin/users/{root}", "/admin/users/{root}/edit", "/admin/providers",
                  "/admin/providers/{provider}", "/admin/providers/{provider}/edit", "/admin/models/{model}",
                  "/admin/models/{model}/edit", "/admin/prompts/{prompt}/row", "/admin/prompts/{prompt}/edit",
                  "/admin/audit"]
ADMIN_ONLY_POST = ["/admin/users", "/admin/users/{root}/edit", "/admin/users/{root}/delete", "/admin/providers",
                   "/admin/providers/{provider}/edit", "/admin/providers/{provider}/delete", "/admin/models",
                   "/admin/models/{model}/edit", "/admin/models/{model}/delete", "/admin/prompts",
                   "/admin/prompts/{prompt}/edit", "/admin/prompts/{prompt}/delete"]


@pytest.fixture
def world(app, people, upstream):
    """A provider, model, prompt, keys for mia and otto, and one log row each."""
    with app.app_context():
        p = manage.create_provider("t", "up", "openai", upstream.url + "/v1", api_key="sk-secret-provider-9999")
        m = manage.create_model("t", "allowed-model", p, "up-a")
        manage.create_model("t", "secret-model", p, "up-b")
        pr = manage.create_prompt("t", "allowed-prompt", "Be kind.")
        manage.create_prompt("t", "secret-prompt", "Top secret text.")
        mia, otto = db.session.get(User, people["mia"]), db.session.get(User, people["otto"])
        manage.update_user("t", mia, allow_models=["allowed-model"], allow_prompts=["allowed-prompt"])
        mia_key, _ = manage.create_key("t", mia, "mia-key")
        otto_key, _ = manage.create_key("t", otto, "otto-key")
        rows = {}
        for user, key, model in ((mia, mia_key, "allowed-model"), (otto, otto_key, "secret-model")):
            row = RequestLog(request_id=f"req-{user.name}", user_id=user.id, key_id=key.id, model=model,
                             endpoint="/v1/chat/completions", status=200, input_tokens=5, output_tokens=7,
                             cost=0.5, latency_ms=100.0, created_at=utcnow())
            db.session.add(row)
            db.session.flush()
            rows[user.name] = row.id
        db.session.commit()
        return {"root": people["root"], "provider": p.id, "model": m.id, "prompt": pr.id, "mia_key": mia_key.id,
                "otto_key": otto_key.id, "mia_row": rows["mia"], "otto_row": rows["otto"]}


@pytest.mark.parametrize("url", ADMIN_ONLY_GET)
def test_member_gets_403_page_on_admin_only_get(member_web, world, url):
    resp = member_web.get(url.format(**world))
    assert resp.status_code == 403
    body = resp.get_data(as_text=True)
    assert "Forbidden" in body and "<nav" in body  # the dashboard's own error page


@pytest.mark.parametrize("url", ADMIN_ONLY_POST)
@pytest.mark.parametrize("hx", [None, "row-1"])
def test_member_gets_403_on_admin_only_post(member_web, world, app, url, hx):
    resp = member_web.post(url.format(**world), {"name": "hacked", "role": "admin", "slug": "x"}, hx=hx)
    assert resp.status_code == 403
    with app.app_context():
        assert db.session.scalar(sa.select(User).where(User.name == "hacked")) is None
        assert db.session.get(User, world["root"]).role == "admin"


def test_member_cannot_revoke_someone_elses_key(member_web, world, app):
    assert member_web.post(f"/admin/keys/{world['otto_key']}/revoke").status_code == 404
    with app.app_context():
        assert db.session.get(ApiKey, world["otto_key"]).revoked_at is None


def test_member_can_revoke_own_key(member_web, world, app):
    assert member_web.post(f"/admin/keys/{world['mia_key']}/revoke").status_code == 303
    with app.app_context():
        assert db.session.get(ApiKey, world["mia_key"]).revoked_at is not None


def test_member_cannot_see_someone_elses_request_row(member_web, world):
    assert member_web.get(f"/admin/requests/{world['otto_row']}").status_code == 404
    assert member_web.get(f"/admin/requests/{world['mia_row']}").status_code == 200


def test_member_key_list_shows_only_own_keys(member_web, world):
    body = member_web.get("/admin/keys").get_data(as_text=True)
    assert "mia-key" in body and "otto-key" not in body
    assert 'name="user"' not in body  # no choice of owner


def test_member_creates_keys_only_for_themselves(member_web, world, app, people):
    resp = member_web.post("/admin/keys", {"name": "mine", "user": str(people["otto"])})
    assert resp.status_code == 201
    with app.app_context():
        key = db.session.scalar(sa.select(ApiKey).where(ApiKey.name == "mine"))
        assert key.user_id == people["mia"]


def test_member_request_log_and_csv_show_only_own_rows(member_web, world, people):
    body = member_web.get(f"/admin/requests?user={people['otto']}").get_data(as_text=True)
    assert "allowed-model" in body and "secret-model" not in body
    csv = member_web.get("/admin/requests.csv").get_data(as_text=True)
    assert "req-mia" in csv and "req-otto" not in csv


def test_member_sees_only_models_and_prompts_they_may_use(member_web, world):
    models = member_web.get("/admin/models").get_data(as_text=True)
    assert "allowed-model" in models and "secret-model" not in models
    assert "up-a" not in models  # upstream names are for admins
    assert "New model" not in models
    prompts = member_web.get("/admin/prompts").get_data(as_text=True)
    assert "allowed-prompt" in prompts and "secret-prompt" not in prompts and "Top secret" not in prompts
    assert "New prompt" not in prompts


def test_member_search_cannot_widen_the_scope(member_web, world):
    resp = member_web.hx_get("/admin/models?q=secret", "rows")
    assert "secret-model" not in resp.get_data(as_text=True)


def test_member_overview_shows_only_own_usage(member_web, world):
    body = member_web.get("/admin/").get_data(as_text=True)
    assert "My usage" in body and "Top users" not in body
    assert 'data-stat="requests">1<' in body  # only mia's row of the two
    assert "secret-model" not in body


def test_member_navigation_has_no_admin_links(member_web, world):
    body = member_web.get("/admin/").get_data(as_text=True)
    for link in ("/admin/users", "/admin/providers", "/admin/audit"):
        assert f'href="{link}"' not in body
