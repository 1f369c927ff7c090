"""CSRF on every form and HTMX post, security headers, escaping of hostile names and text."""
from __future__ import annotations

import pytest

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import RequestLog, User, utcnow

from .test_auth import ROUTES_POST

XSS = '<script>alert(1)</script><div hx-post="/admin/logout" hx-trigger="load">x</div>'


@pytest.mark.parametrize("url", ROUTES_POST + ["/admin/logout"])
def test_post_without_csrf_token_is_rejected(admin_web, url):
    resp = admin_web.client.post(url, data={"name": "x"})
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert "CSRF token is missing" in body and "<nav" in body


@pytest.mark.parametrize("url", ["/admin/users", "/admin/keys", "/admin/prompts"])
def test_htmx_post_without_header_is_rejected_and_with_header_accepted(admin_web, url):
    bad = admin_web.client.post(url, data={"name": "ok-name", "slug": "ok-slug", "text": "t", "role": "member",
                                           "mode": "prepend"}, headers={"HX-Request": "true",
                                                                        "HX-Target": "create-form"})
    assert bad.status_code == 400
    wrong = admin_web.client.post(url, data={"name": "ok-name"}, headers={
        "HX-Request": "true", "HX-Target": "create-form", "X-CSRFToken": "forged"})
    assert wrong.status_code == 400
    good = admin_web.post(url, {"name": "ok-name", "slug": "ok-slug", "text": "t", "role": "member",
                                "mode": "prepend"}, hx="create-form")
    assert good.status_code == 200


def test_token_from_another_session_is_rejected(app, admin_web, member_web):
    resp = admin_web.client.post("/admin/users", data={"name": "x", "role": "member", "csrf_token": member_web.token})
    assert resp.status_code == 400


@pytest.mark.parametrize("url", ["/admin/login", "/admin/", "/admin/users", "/admin/nope", "/admin/setup"])
def test_security_headers_on_dashboard_responses(admin_web, url):
    resp = admin_web.get(url)
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"


def test_pages_have_no_inline_scripts_and_htmx_eval_is_off(admin_web):
    body = admin_web.get("/admin/").get_data(as_text=True)
    assert '"allowEval": false' in body
    for chunk in body.split("<script")[1:]:
        assert chunk.lstrip().startswith("src=") and "></script>" in chunk.split("\n")[0]
    assert "cdn" not in body.lower()
    assert "/static/vendor/htmx-2." in body and "/static/vendor/chart-4." in body


def test_api_errors_stay_json(client):
    resp = client.get("/v1/nope")
    assert resp.is_json and "Content-Security-Policy" not in resp.headers


def test_hostile_names_and_text_are_escaped_everywhere(admin_web, app, people):
    with app.app_context():
        p = manage.create_provider("t", "p1", "openai", "http://127.0.0.1:9/v1")
        manage.create_model("t", "m1", p, XSS)
        manage.create_prompt("t", "p1", XSS, description=XSS)
        mia = db.session.get(User, people["mia"])
        manage.update_user("t", mia, email=None)
        key, _ = manage.create_key("t", mia, XSS[:64])
        row = RequestLog(request_id="xss-row", user_id=mia.id, key_id=key.id, model=XSS[:256], prompt="p1",
                         prompt_version=1, endpoint="/v1/chat/completions", status=400, error_type="bad",
                         error_message=XSS, created_at=utcnow(), request_body=XSS, response_body=XSS)
        db.session.add(row)
        db.session.commit()
        row_id = row.id
    pages = ["/admin/", "/admin/keys", "/admin/models", "/admin/prompts", "/admin/requests",
             f"/admin/requests/{row_id}", "/admin/audit", "/admin/prompts/1/edit"]
    for url in pages:
        body = admin_web.get(url).get_data(as_text=True)
        assert "<script>alert" not in body, url
        assert '<div hx-post="/admin/logout"' not in body, url
    assert "&lt;script&gt;" in admin_web.get("/admin/prompts").get_data(as_text=True)
