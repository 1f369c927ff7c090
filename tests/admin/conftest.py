"""Dashboard fixtures: users with passwords, logged-in clients, and a CSRF-aware helper."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import CHROMIUM, browser  # noqa: F401 - for the modules that import them from here

ADMIN_PW = "admin-password-1"
MEMBER_PW = "member-password-1"
TOKEN_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_token(client, url: str = "/admin/login") -> str:
    """Fetch a page and take the CSRF token from its meta tag."""
    resp = client.get(url)
    found = TOKEN_RE.search(resp.get_data(as_text=True))
    assert found, f"no csrf meta tag on {url} ({resp.status_code})"
    return found.group(1)


def login(client, email: str, password: str, next_url: str | None = None):
    """Log in through the form, as a browser does."""
    token = csrf_token(client)
    url = "/admin/login" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"email": email, "password": password, "csrf_token": token})


@dataclass
class Web:
    """A test client with the session's CSRF token at hand."""

    client: object
    token: str = ""

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, data=None, hx: str | None = None, **kw):
        """A form post with the token; hx= sends it as HTMX would (token in the header, HX-Target set)."""
        data = dict(data or {})
        headers = dict(kw.pop("headers", {}))
        if hx is not None:
            headers.update({"HX-Request": "true", "HX-Target": hx, "X-CSRFToken": self.token})
        else:
            data.setdefault("csrf_token", self.token)
        return self.client.post(url, data=data, headers=headers, **kw)

    def hx_get(self, url, target: str):
        return self.client.get(url, headers={"HX-Request": "true", "HX-Target": target})


@functools.cache
def cheap_hash(password: str) -> str:
    """A low-cost scrypt hash for tests (production uses N=2^17 via manage.set_password)."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, "scrypt:1024:8:1")


@pytest.fixture
def people(app):
    """An admin and two members (ids by name)."""
    with app.app_context():
        admin = manage.create_user("t", "root", email="root@example.com", role="admin", all_models=True,
                                   all_prompts=True)
        member = manage.create_user("t", "mia", email="mia@example.com")
        other = manage.create_user("t", "otto", email="otto@example.com")
        for user, pw in ((admin, ADMIN_PW), (member, MEMBER_PW), (other, "otto-password-1")):
            user.password_hash = cheap_hash(pw)
        db.session.commit()
        return {"root": admin.id, "mia": member.id, "otto": other.id}


def _logged_in(app, email, password) -> Web:
    client = app.test_client()
    resp = login(client, email, password)
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return Web(client, csrf_token(client, "/admin/"))


@pytest.fixture
def admin_web(app, people) -> Web:
    """A client logged in as the admin."""
    return _logged_in(app, "root@example.com", ADMIN_PW)


@pytest.fixture
def member_web(app, people) -> Web:
    """A client logged in as the member `mia`."""
    return _logged_in(app, "mia@example.com", MEMBER_PW)


# -- a real browser: the worker's one Chromium (`browser`, tests/conftest.py), a fresh context per test --------
@pytest.fixture
def page(browser):  # noqa: F811 - the fixture imported above
    """A desktop page that records CSP violations, script errors and every 404 (a missing asset included)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("response", lambda r: r.status == 404 and page.problems.append("404 " + r.url))
    context.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error("
                            "'CSPV ' + e.violatedDirective + ' ' + e.sourceFile + ':' + e.lineNumber))")
    yield page
    context.close()
