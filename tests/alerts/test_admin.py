"""The dashboard's Webhooks page: list, create, edit with the address guard, send a test, deliveries, CSRF."""
from __future__ import annotations

import sqlalchemy as sa

from promptproxy.extensions import db
from promptproxy.models import Webhook

from ..conftest import wait_for
from .conftest import deliveries, make_hook

FORM = {"name": "ops", "url": "", "events": ["budget", "errors"], "format": "json", "secret": "whsec-canary-77"}


def stored(app) -> list[Webhook]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Webhook).order_by(Webhook.id)).all()
        db.session.expunge_all()
        return rows


def test_create_then_send_a_test_shows_the_delivery(app, admin_web, receiver):
    resp = admin_web.post("/admin/webhooks", {**FORM, "url": receiver.url})
    assert resp.status_code == 303
    hook = stored(app)[0]
    assert hook.events == ["budget", "errors"] and hook.secret_encrypted.startswith("v1:")
    page = admin_web.get("/admin/webhooks").get_data(as_text=True)
    assert "ops" in page and "/hook/secret-path" not in page and "whsec-canary-77" not in page
    assert 'name="csrf_token"' in page and "Send a test" in page
    resp = admin_web.post(f"/admin/webhooks/{hook.id}/test")
    assert resp.status_code == 303
    assert wait_for(lambda: [d.status for d in deliveries(app)] == ["delivered"])
    assert receiver.json()["event"] == "test"
    table = admin_web.get("/admin/webhooks/deliveries").get_data(as_text=True)
    assert 'id="delivery-1"' in table and "delivered" in table and "Test alert from PromptProxy" in table


def test_a_failed_delivery_shows_status_attempts_and_error(app, admin_web, receiver):
    receiver.statuses = [500] * 20
    hook = make_hook(app, receiver.url)
    worker = app.extensions["promptproxy"].alerts
    worker.max_attempts = 2
    admin_web.post(f"/admin/webhooks/{hook}/test")
    assert wait_for(lambda: [d.status for d in deliveries(app)] == ["failed"])
    table = admin_web.get("/admin/webhooks").get_data(as_text=True)
    assert ">failed<" in table and ">2<" in table and "HTTP 500" in table


def test_address_guard_refuses_on_create_and_on_edit(app, admin_web, receiver):
    hook = make_hook(app, "https://hooks.example.com/services/T0/B0/x")
    app.config["ALLOW_PRIVATE_UPSTREAMS"] = False  # production: private addresses need the opt-in
    resp = admin_web.post("/admin/webhooks", {**FORM, "name": "new", "url": "http://169.254.169.254/x"})
    assert resp.status_code == 422 and "webhook URL points at a private or special address" in resp.get_data(True)
    resp = admin_web.post(f"/admin/webhooks/{hook}/edit", {**FORM, "url": "http://10.0.0.8/h", "format": "slack"})
    assert resp.status_code == 422 and "webhook URL points at a private or special address" in resp.get_data(True)
    [only] = stored(app)
    assert only.url == "https://hooks.example.com/services/T0/B0/x" and only.format == "json"
    assert only.secret_encrypted is None and len(only.events) == 4


def test_edit_keeps_the_secret_when_left_blank(app, admin_web, receiver):
    hook = make_hook(app, receiver.url, secret="keep-me-please")
    before = stored(app)[0].secret_encrypted
    form = admin_web.get(f"/admin/webhooks/{hook}/edit").get_data(as_text=True)
    assert "keep-me-please" not in form and "Edit webhook ops" in form
    resp = admin_web.post(f"/admin/webhooks/{hook}/edit", {**FORM, "url": receiver.url, "secret": "",
                                                           "events": ["provider"], "enabled": "y"})
    assert resp.status_code == 303
    after = stored(app)[0]
    assert after.secret_encrypted == before and after.events == ["provider"] and after.enabled


def test_unknown_event_is_a_form_error(app, admin_web, receiver):
    resp = admin_web.post("/admin/webhooks", {**FORM, "url": receiver.url, "events": ["weather"]})
    assert resp.status_code == 422 and stored(app) == []


def test_forms_without_csrf_are_refused_and_change_nothing(app, admin_web, receiver):
    hook = make_hook(app, receiver.url)
    for url, data in (("/admin/webhooks", {**FORM, "name": "x", "url": receiver.url}),
                      (f"/admin/webhooks/{hook}/test", {}), (f"/admin/webhooks/{hook}/delete", {}),
                      (f"/admin/webhooks/{hook}/edit", {**FORM, "url": receiver.url})):
        resp = admin_web.client.post(url, data=data)
        assert resp.status_code == 400, url
    assert [h.name for h in stored(app)] == ["ops"] and deliveries(app) == [] and receiver.requests == []


def test_delete(app, admin_web, receiver):
    hook = make_hook(app, receiver.url)
    assert admin_web.post(f"/admin/webhooks/{hook}/delete").status_code == 303
    assert stored(app) == []


def test_members_cannot_see_or_change_webhooks(app, member_web, receiver):
    hook = make_hook(app, receiver.url)
    assert member_web.get("/admin/webhooks").status_code == 403
    assert member_web.get("/admin/webhooks/deliveries").status_code == 403
    assert member_web.post(f"/admin/webhooks/{hook}/test").status_code == 403
    assert member_web.post(f"/admin/webhooks/{hook}/delete").status_code == 403
    assert len(stored(app)) == 1 and deliveries(app) == []
