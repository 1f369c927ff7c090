"""Single sign-on end to end: a real OpenID Provider (npm `oidc-provider`) on 127.0.0.1, driven through Chromium."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
import sqlalchemy as sa

from promptproxy import groups, manage, sso
from promptproxy.extensions import db
from promptproxy.models import User

from ..conftest import free_port
from .conftest import ADMIN_PW, CHROMIUM, login

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
NODE = shutil.which("node")
READY = NODE and (OIDC_DIR / "node_modules" / "oidc-provider").is_dir() and os.path.exists(CHROMIUM)
ACCOUNTS = {
    "ann": {"email": "Ann@Corp.example", "email_verified": True, "groups": ["research", "no-such-team"]},
    "boss": {"email": "boss@corp.example", "email_verified": True, "groups": ["pp-admins", "research"]},
    "eve": {"email": "eve@elsewhere.example", "email_verified": True},
    "sly": {"email": "sly@corp.example", "email_verified": False},
}

pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    not READY and not os.environ.get("CI"),
    reason="needs node, Debian's chromium and the pinned OpenID Provider: run `make oidc` "
           "(npm ci --prefix tests/oidc)")]


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """oidc-provider on a free loopback port for the module's tests; its issuer URL.

    Nothing of one test's sign-in stays for the next: the provider keeps sessions, grants and interactions by the
    browser's cookies, and each test has a fresh browser context. Its client allows any loopback port in the
    redirect URI (RFC 8252), so every test's gateway, on a port of its own, can use it.
    """
    port = free_port()
    env = {**os.environ, "OIDC_ACCOUNTS": json.dumps(ACCOUNTS), "OIDC_CLIENT_ID": "promptproxy",
           "OIDC_CLIENT_SECRET": "test-client-secret-0123456789"}
    log_path = tmp_path_factory.mktemp("idp") / "idp.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([NODE, str(OIDC_DIR / "provider.mjs"), str(port),
                             "http://127.0.0.1/admin/login/oidc/callback"],
                            cwd=OIDC_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(issuer + "/.well-known/openid-configuration", timeout=1).ok:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the OpenID Provider did not start in 30 s"
                time.sleep(0.05)
        yield issuer
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def idp(app, provider):
    """The module's OpenID Provider, with SSO configured to use it and the group its claims name."""
    app.config.update(OIDC_ISSUER=provider, OIDC_CLIENT_ID="promptproxy",
                      OIDC_CLIENT_SECRET="test-client-secret-0123456789", OIDC_ALLOWED_DOMAINS="corp.example",
                      OIDC_GROUPS_CLAIM="groups", OIDC_ADMIN_GROUP="pp-admins",
                      OIDC_SCOPES="openid email profile groups", OIDC_NAME="Corp SSO")
    with app.app_context():
        groups.create_group("t", "research")
        db.session.commit()
    return provider


@pytest.fixture
def page(browser):
    """A page in a fresh context of the shared Chromium (no cookies from another test)."""
    return browser.new_context().new_page()


def sign_in(page, live, account: str) -> None:
    """Click "Sign in with Corp SSO", log in at the provider and consent."""
    page.goto(live + "/admin/login")
    page.click("#sso")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", account)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.locator("text=Authorize").count() or "/interaction/" in page.url:
        page.click("button[type=submit]")  # the consent screen
    page.wait_for_load_state()


def user(app, email: str) -> dict | None:
    with app.app_context():
        found = db.session.scalar(sa.select(User).where(User.email == email))
        return found and {"name": found.name, "role": found.role, "groups": [g.name for g in found.groups],
                          "password": found.password_hash}


def test_login_page_offers_the_provider(idp, live):
    html = requests.get(live + "/admin/login", timeout=10).text
    assert "Sign in with Corp SSO" in html and 'name="password"' in html


def test_first_login_creates_a_member_with_groups_from_the_claim(idp, live, page, app):
    sign_in(page, live, "ann")
    page.wait_for_selector("h1:has-text('My usage')")
    assert urlsplit(page.url).path == "/admin/"
    assert user(app, "ann@corp.example") == {"name": "ann", "role": "member", "groups": ["research"],
                                             "password": None}  # unknown claim groups are ignored
    page.goto(live + "/admin/keys")
    page.wait_for_selector("h1")
    assert "/admin/login" not in page.url  # the session holds without a password
    with app.app_context():
        assert manage.get_user("ann").email == "ann@corp.example"


def test_admin_group_claim_gives_admin(idp, live, page, app):
    sign_in(page, live, "boss")
    page.wait_for_selector("nav >> text=Groups")
    assert user(app, "boss@corp.example")["role"] == "admin"
    assert user(app, "boss@corp.example")["groups"] == ["research"]


def test_an_existing_user_is_matched_by_email_and_follows_the_claim(idp, live, page, app):
    with app.app_context():
        ann = manage.create_user("t", "annie", email="ann@corp.example", role="admin")
        manage.create_user("t", "root", email="root@corp.example", role="admin")  # another admin remains
        groups.create_group("t", "ops")
        groups.set_memberships("t", ann, add=["ops"])
        db.session.commit()
    sign_in(page, live, "ann")
    page.wait_for_selector("h1:has-text('My usage')")
    assert user(app, "ann@corp.example") == {"name": "annie", "role": "member", "groups": ["research"],
                                             "password": None}


def test_a_disallowed_domain_is_refused_with_a_clear_page(idp, live, page, app):
    sign_in(page, live, "eve")
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "eve@elsewhere.example has no account here" in page.content()
    assert user(app, "eve@elsewhere.example") is None


def test_an_unverified_email_is_refused(idp, live, page, app):
    sign_in(page, live, "sly")
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "has not verified sly@corp.example" in page.content()
    assert user(app, "sly@corp.example") is None


def tampered(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query[name] = "tampered-" + query[name][::-1]
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_a_tampered_state_is_refused(idp, live, page, app):
    def swap_state(route):
        """Follow the provider's redirects (the browser's cookies) to our callback; send the browser there, altered."""
        answer = route.fetch(max_redirects=0)
        location = urljoin(route.request.url, answer.headers.get("location", ""))
        while location.startswith(idp + "/auth/"):
            answer = page.request.get(location, max_redirects=0)
            location = urljoin(location, answer.headers.get("location", ""))
        if location.startswith(live + "/admin/login/oidc/callback"):
            location = tampered(location, "state")
        route.fulfill(status=303, headers={"location": location})

    page.route(lambda url: url.startswith(idp + "/interaction/"),
               lambda route: swap_state(route) if route.request.method == "POST" else route.continue_())
    sign_in(page, live, "ann")
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "could not be verified" in page.content()
    assert user(app, "ann@corp.example") is None


def test_a_tampered_nonce_is_refused(idp, live, page, app):
    def swap_nonce(route):
        answer = route.fetch(max_redirects=0)  # our redirect to the provider, with the session cookie it sets
        headers = {**answer.headers, "location": tampered(answer.headers["location"], "nonce")}
        route.fulfill(response=answer, headers=headers)

    page.route("**/admin/login/oidc?*", swap_nonce)
    page.route("**/admin/login/oidc", swap_nonce)
    sign_in(page, live, "ann")
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "could not be verified" in page.content()
    assert user(app, "ann@corp.example") is None


# -- without the provider -----------------------------------------------------------------------------------------
def test_admins_still_log_in_with_a_password_when_the_provider_is_down(app, people):
    app.config.update(OIDC_ISSUER=f"http://127.0.0.1:{free_port()}", OIDC_CLIENT_ID="c", OIDC_CLIENT_SECRET="s")
    client = app.test_client()
    assert "Sign in with 127.0.0.1" in client.get("/admin/login").get_data(as_text=True)
    down = client.get("/admin/login/oidc")
    assert down.status_code == 502 and "cannot be reached" in down.get_data(as_text=True)
    assert login(client, "root@example.com", ADMIN_PW).status_code == 303


def test_sso_routes_are_404_when_not_configured(client):
    assert client.get("/admin/login/oidc").status_code == 404
    assert client.get("/admin/login/oidc/callback?code=x&state=y").status_code == 404
    assert "Sign in with" not in client.get("/admin/login").get_data(as_text=True)


def test_a_session_without_password_needs_a_single_sign_on_login(app, people):
    """A password-less user cannot ride a password session (a deactivated user's password is cleared)."""
    client = app.test_client()
    assert login(client, "root@example.com", ADMIN_PW).status_code == 303
    with app.app_context():
        manage.get_user("root").password_hash = None
        db.session.commit()
    assert client.get("/admin/").status_code == 302


def test_the_last_admin_is_not_demoted_by_a_missing_claim(app):
    cfg = {"OIDC_GROUPS_CLAIM": "groups", "OIDC_ADMIN_GROUP": "pp-admins", "OIDC_ALLOWED_DOMAINS": "",
           "OIDC_LINK_DOMAINS": "x.example"}  # linking an existing user needs its domain listed (issue 25)
    with app.app_context():
        manage.create_user("t", "solo", email="solo@x.example", role="admin")
        db.session.commit()
        found = sso.sign_in({"email": "solo@x.example", "email_verified": True, "groups": []}, cfg)
        assert found.role == "admin"
        with pytest.raises(sso.Refused, match="disabled"):
            manage.update_user("t", manage.create_user("t", "off", email="off@x.example"), active=False)
            sso.sign_in({"email": "off@x.example", "email_verified": True}, cfg)
