"""Login, logout, sessions, throttling, first-run set-up and the login wall on every route."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.crypto import hash_key
from promptproxy.extensions import db
from promptproxy.models import Setting, User

from .conftest import ADMIN_PW, MEMBER_PW, csrf_token, login

ROUTES_GET = ["/admin/", "/admin/users", "/admin/users/1", "/admin/users/1/edit", "/admin/keys", "/admin/keys/new",
              "/admin/providers", "/admin/providers/1", "/admin/providers/1/edit", "/admin/models", "/admin/models/1",
              "/admin/models/1/edit", "/admin/prompts", "/admin/prompts/1/row", "/admin/prompts/1/edit",
              "/admin/requests", "/admin/requests/1", "/admin/requests.csv", "/admin/audit"]
ROUTES_POST = ["/admin/users", "/admin/users/1/edit", "/admin/users/1/delete", "/admin/keys", "/admin/keys/1/revoke",
               "/admin/providers", "/admin/providers/1/edit", "/admin/providers/1/delete", "/admin/models",
               "/admin/models/1/edit", "/admin/models/1/delete", "/admin/prompts", "/admin/prompts/1/edit",
               "/admin/prompts/1/delete"]


@pytest.mark.parametrize("url", ROUTES_GET)
def test_anonymous_get_redirects_to_login_with_next(client, people, url):
    resp = client.get(url)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/admin/login?next=")


@pytest.mark.parametrize("url", ROUTES_GET)
def test_anonymous_htmx_get_gets_401_with_hx_redirect(client, people, url):
    resp = client.get(url, headers={"HX-Request": "true", "HX-Target": "rows"})
    assert resp.status_code == 401
    assert resp.headers["HX-Redirect"].startswith("/admin/login")


@pytest.mark.parametrize("url", ROUTES_POST)
def test_anonymous_post_with_valid_csrf_is_sent_to_login(client, people, url):
    token = csrf_token(client)
    resp = client.post(url, data={"csrf_token": token, "name": "x"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin/login"


def test_login_success_redirects_and_sets_a_safe_cookie(client, people):
    resp = login(client, "root@example.com", ADMIN_PW)
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/admin/").get_data(as_text=True)
    assert "Overview" in page and "root" in page


def test_login_email_is_case_insensitive(client, people):
    assert login(client, "Root@Example.com", ADMIN_PW).status_code == 303


@pytest.mark.parametrize("email,password", [("root@example.com", "wrong-password"), ("nobody@example.com", ADMIN_PW),
                                            ("root@example.com", "")])
def test_login_failure_has_one_generic_message(client, people, email, password):
    resp = login(client, email, password)
    body = resp.get_data(as_text=True)
    assert resp.status_code in (400, 401)
    if password:
        assert "Wrong email or password, or too many attempts" in body
    assert "/admin/" != resp.headers.get("Location")


def test_login_rejects_the_password_hash_itself(app, client, people):
    with app.app_context():
        stored = db.session.get(User, people["root"]).password_hash
    assert login(client, "root@example.com", stored).status_code == 401


def test_disabled_user_cannot_log_in(app, client, people):
    with app.app_context():
        manage.update_user("t", db.session.get(User, people["mia"]), active=False)
        db.session.commit()
    assert login(client, "mia@example.com", MEMBER_PW).status_code == 401


def test_failed_logins_are_throttled_per_email_and_ip(client, people):
    for _ in range(10):
        assert login(client, "root@example.com", "wrong-password").status_code in (401, 429)
    blocked = login(client, "root@example.com", ADMIN_PW)
    assert blocked.status_code == 429
    assert "Wrong email or password, or too many attempts" in blocked.get_data(as_text=True)
    # Another account from the same address is not locked out by someone else's failures.
    assert login(client, "mia@example.com", MEMBER_PW).status_code == 303


def test_login_without_csrf_token_is_rejected(client, people):
    resp = client.post("/admin/login", data={"email": "root@example.com", "password": ADMIN_PW})
    assert resp.status_code == 400
    assert "CSRF" in resp.get_data(as_text=True)


@pytest.mark.parametrize("target,expected", [
    ("/admin/keys", "/admin/keys"), ("https://evil.example/admin", "/admin/"), ("//evil.example/admin", "/admin/"),
    ("/\\evil.example", "/admin/"), ("/v1/models", "/admin/"), ("javascript:alert(1)", "/admin/"),
])
def test_next_only_goes_to_relative_dashboard_paths(client, people, target, expected):
    resp = login(client, "root@example.com", ADMIN_PW, next_url=target)
    assert resp.headers["Location"] == expected


def test_session_is_rotated_at_login(client, people):
    before = csrf_token(client)
    login(client, "root@example.com", ADMIN_PW)
    after = csrf_token(client, "/admin/")
    assert before != after


def test_logout_needs_post_and_ends_the_session_server_side(app, people):
    client = app.test_client()
    login(client, "root@example.com", ADMIN_PW)
    stolen = client.get_cookie("session").value
    assert client.get("/admin/logout").status_code == 405
    token = csrf_token(client, "/admin/")
    resp = client.post("/admin/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/login"
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/admin/users").status_code == 302


def test_password_change_ends_existing_sessions(app, people, admin_web):
    member = app.test_client()
    login(member, "mia@example.com", MEMBER_PW)
    assert member.get("/admin/keys").status_code == 200
    with app.app_context():
        manage.update_user("t", db.session.get(User, people["mia"]), password="a-new-password")
        db.session.commit()
    assert member.get("/admin/keys").status_code == 302


def test_disabling_a_user_ends_their_session(app, people):
    member = app.test_client()
    login(member, "mia@example.com", MEMBER_PW)
    with app.app_context():
        manage.update_user("t", db.session.get(User, people["mia"]), active=False)
        db.session.commit()
    assert member.get("/admin/keys").status_code == 302


def test_old_session_past_the_absolute_lifetime_is_ended(app, people):
    client = app.test_client()
    login(client, "root@example.com", ADMIN_PW)
    with client.session_transaction() as sess:
        sess["login_at"] -= 13 * 3600
    assert client.get("/admin/").status_code == 302


def test_original_admin_path_redirects(client):
    resp = client.get("/_/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin"
    assert client.get("/admin").status_code in (301, 308)


# -- first run -------------------------------------------------------------------------------------
def store_token(app, raw="setup-token-123"):
    with app.app_context():
        db.session.add(Setting(key="setup_token", value=hash_key(raw)))
        db.session.commit()
    return raw


def setup_post(client, **fields):
    token = csrf_token(client, "/admin/setup")
    data = {"name": "boss", "email": "boss@example.com", "password": "boss-password", "csrf_token": token}
    data.update(fields)
    return client.post("/admin/setup", data=data)


def test_setup_page_without_token_explains_how_to_get_one(client):
    body = client.get("/admin/setup").get_data(as_text=True)
    assert "create-admin" in body and "Restart the server" in body


def test_login_page_links_to_setup_while_there_is_no_admin(client):
    assert "/admin/setup" in client.get("/admin/login").get_data(as_text=True)


def test_setup_with_printed_token_creates_admin_once(app, client, capsys):
    from promptproxy.server import announce_setup

    announce_setup(app)
    printed = capsys.readouterr().out
    raw = printed.split("one-time token: ")[1].split()[0]
    resp = setup_post(client, token=raw)
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    assert "Welcome, boss" in client.get("/admin/").get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.name == "boss"))
        assert user.role == "admin" and user.all_models and user.all_prompts
        assert db.session.get(Setting, "setup_token") is None
    assert app.test_client().get("/admin/setup").status_code == 404


def test_setup_with_wrong_token_is_refused(app, client):
    store_token(app)
    resp = setup_post(client, token="not-the-token")
    assert resp.status_code == 403
    assert "not valid" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_setup_shows_manage_validation_errors(app, client):
    raw = store_token(app)
    resp = setup_post(client, token=raw, name="has space")
    assert resp.status_code == 422
    assert "user name must be 1-64 characters" in resp.get_data(as_text=True)


def test_setup_is_gone_once_an_admin_exists(app, client, people):
    raw = store_token(app)
    assert client.get("/admin/setup").status_code == 404
    token = csrf_token(client)
    assert client.post("/admin/setup", data={"token": raw, "csrf_token": token}).status_code == 404
