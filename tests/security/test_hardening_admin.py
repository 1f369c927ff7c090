"""Issue 14, dashboard, CLI and configuration items: one regression test (or a few) per item."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from promptproxy import config, groups, manage
from promptproxy.admin import auth
from promptproxy.alerts.webhooks import create_webhook
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.mcp.servers import create_server
from promptproxy.models import Provider, RequestLog, User, utcnow

from ..admin.conftest import (  # noqa: F401 - fixtures used by name
    ADMIN_PW,
    MEMBER_PW,
    Web,
    admin_web,
    cheap_hash,
    csrf_token,
    login,
    member_web,
    people,
)


# -- the world the role tests run in ------------------------------------------------------------------
@pytest.fixture
def world(app, people, upstream):  # noqa: F811
    """Objects of every kind; mia may use `allowed-*`, the rest (keys, log rows) belongs to otto."""
    with app.app_context():
        p = manage.create_provider("t", "up", "openai", upstream.url + "/v1", api_key="sk-secret-provider-9999")
        manage.create_model("t", "allowed-model", p, "up-a", fallbacks=None)
        secret = manage.create_model("t", "secret-model", p, "up-b")
        manage.update_model("t", manage.get_model("allowed-model"), fallbacks=["secret-model"])
        pr = manage.create_prompt("t", "allowed-prompt", "Be kind. INTERNAL-TEXT-7", description="A kind helper")
        manage.add_version("t", pr, "Be kinder. INTERNAL-TEXT-8")
        manage.create_prompt("t", "secret-prompt", "Top secret text.")
        mia, otto = db.session.get(User, people["mia"]), db.session.get(User, people["otto"])
        manage.update_user("t", mia, allow_models=["allowed-model"], allow_prompts=["allowed-prompt"])
        otto_key, _ = manage.create_key("t", otto, "otto-key")
        row = RequestLog(request_id="req-otto", user_id=otto.id, key_id=otto_key.id, model="secret-model",
                         endpoint="/v1/chat/completions", status=200, input_tokens=5, output_tokens=7, cost=0.5,
                         latency_ms=100.0, created_at=utcnow())
        db.session.add(row)
        hook = create_webhook("t", "ops", upstream.url + "/hook", secret="whsec-secret-9999")
        team = groups.create_group("t", "team", allow_models=["secret-model"])
        tools = create_server("t", "tools", upstream.url + "/mcp", api_key="sk-secret-mcp-9999")
        db.session.commit()
        return {"user_id": people["otto"], "provider_id": p.id, "model_id": secret.id, "prompt_id": pr.id,
                "key_id": otto_key.id, "row_id": row.id, "webhook_id": hook.id, "group_id": team.id,
                "mcpserver_id": tools.id, "deployment_id": secret.deployments[0].id}


def snapshot(app) -> dict:
    """Every row of every table, to prove a refused request changed nothing."""
    with app.app_context():
        db.session.expire_all()
        return {t.name: sorted(map(repr, db.session.execute(sa.select(t)).all()))
                for t in db.metadata.sorted_tables}


# -- item 22: roles over the whole URL map ------------------------------------------------------------
PUBLIC = {
    "admin.login": "the login form itself",
    "admin.setup": "first-run set-up, guarded by the one-time token (404 once an admin exists)",
    "admin.logout": "ending one's own session needs no role",
    "admin.oidc_start": "single sign-on: sends the browser to the OpenID provider (404 unless OIDC is configured)",
    "admin.oidc_callback": "single sign-on: the provider's answer, checked for state, nonce and signature "
                           "(404 unless configured; tests/admin/test_sso.py)",
}
MEMBER_ALLOWED = {
    "admin.overview": "a member's own usage",
    "admin.keys": "a member's own keys",
    "admin.key_new": "the form for a member's own key",
    "admin.key_create": "a key for oneself (the owner field is ignored for members)",
    "admin.key_revoke": "one's own key (another user's is a 404)",
    "admin.models": "models the member may use (slug, kind, price only)",
    "admin.prompts": "prompts the member may use (slug and description only)",
    "admin.requests_log": "one's own requests",
    "admin.requests_csv": "one's own requests as CSV",
    "admin.request_detail": "one's own request (another user's is a 404)",
}
HOSTILE_FORM = {"name": "hacked", "slug": "hacked", "role": "admin", "version": "1", "label": "production",
                "text": "hacked text", "base_url": "http://169.254.169.254/latest", "kind": "openai",
                "provider": "1", "upstream_model": "x", "user": "1", "email": "h@example.com", "active": "y",
                "model": "allowed-model", "message": "hi"}


def admin_rules(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every /admin rule and method, ids filled with existing objects."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, rule))
    return sorted(out, key=lambda r: (r[0] == "admin.logout", r[0], r[1]))  # logout last: it ends the session


def url_for_rule(app, rule, ids: dict) -> str:
    with app.test_request_context():
        return app.url_for(rule.endpoint, **{arg: ids[arg] for arg in rule.arguments})


def call(web_client, method: str, url: str, token: str, hx: bool = False):
    headers = {"HX-Request": "true", "HX-Target": "row-1"} if hx else {}
    if method == "GET":
        return web_client.get(url, headers=headers)
    return web_client.post(url, data={**HOSTILE_FORM, "csrf_token": token}, headers=headers)


def test_every_admin_route_is_classified_and_the_lists_name_real_routes(app):
    endpoints = {endpoint for endpoint, _, _ in admin_rules(app)}
    assert "admin.prompt_set_live" in endpoints and "admin.playground_run" in endpoints
    assert set(PUBLIC) | set(MEMBER_ALLOWED) <= endpoints  # a renamed route must be re-listed on purpose


def test_anonymous_reaches_only_the_public_routes_and_changes_nothing(app, world):
    client = app.test_client()
    token = csrf_token(client)
    wrong = []
    for endpoint, method, rule in admin_rules(app):
        if endpoint in PUBLIC:
            continue
        url = url_for_rule(app, rule, world)
        before = snapshot(app) if method == "POST" else None
        resp = call(client, method, url, token)
        location = resp.headers.get("Location", "")
        if resp.status_code != 302 or not location.startswith("/admin/login"):
            wrong.append((endpoint, method, resp.status_code, location))
        if before is not None and snapshot(app) != before:
            wrong.append((endpoint, method, "changed the database"))
    assert wrong == []


@pytest.mark.parametrize("hx", [False, True])
def test_member_gets_403_on_every_admin_only_route_and_changes_nothing(app, world, member_web, hx):  # noqa: F811
    wrong = []
    for endpoint, method, rule in admin_rules(app):
        if endpoint in PUBLIC or endpoint in MEMBER_ALLOWED:
            continue
        url = url_for_rule(app, rule, world)
        before = snapshot(app) if method == "POST" else None
        resp = call(member_web.client, method, url, member_web.token, hx)
        if resp.status_code != 403:
            wrong.append((endpoint, method, resp.status_code))
        if before is not None and snapshot(app) != before:
            wrong.append((endpoint, method, "changed the database"))
    assert wrong == []


def test_member_allowed_routes_answer_members_without_touching_others_data(app, world, member_web):  # noqa: F811
    wrong = []
    for endpoint, method, rule in admin_rules(app):
        if endpoint not in MEMBER_ALLOWED:
            continue
        url = url_for_rule(app, rule, world)
        before = snapshot(app)
        resp = call(member_web.client, method, url, member_web.token)
        if resp.status_code in (401, 403) or resp.status_code >= 500 or "/admin/login" in resp.headers.get(
                "Location", ""):
            wrong.append((endpoint, method, resp.status_code))
        after = snapshot(app)
        if endpoint != "admin.key_create" and method == "POST" and after != before:
            wrong.append((endpoint, method, "changed the database"))  # otto's key and row are not hers
    assert wrong == []


def test_admin_reaches_every_route(app, world, admin_web):  # noqa: F811
    wrong = []
    for endpoint, method, rule in admin_rules(app):
        url = url_for_rule(app, rule, world)
        resp = call(admin_web.client, method, url, admin_web.token)
        if resp.status_code in (401, 403) or resp.status_code >= 500 or (
                endpoint != "admin.logout" and "/admin/login" in resp.headers.get("Location", "")):
            wrong.append((endpoint, method, resp.status_code))
    assert wrong == []


# -- item 14: login cost and enumeration --------------------------------------------------------------
@pytest.fixture
def hash_calls(monkeypatch):
    """Count password hashes (the expensive part of a login) without timing anything."""
    calls = []
    real = auth.check_password_hash

    def counting(stored, password):
        calls.append(stored)
        return real(cheap_hash("dummy") if stored == auth.DUMMY_HASH else stored, password)

    monkeypatch.setattr(auth, "check_password_hash", counting)
    return calls


@pytest.mark.parametrize("email", ["root@example.com", "nobody@example.com", "otto@example.com"])
def test_every_login_attempt_costs_exactly_one_hash_known_email_or_not(app, people, hash_calls, email):  # noqa: F811
    with app.app_context():
        manage.update_user("t", db.session.get(User, people["otto"]), active=False)
        db.session.commit()
    resp = login(app.test_client(), email, "wrong-password-1")
    assert resp.status_code == 401
    assert len(hash_calls) == 1


def test_throttle_counts_before_hashing_so_a_blocked_key_costs_no_hash(app, people, hash_calls):  # noqa: F811
    app.extensions["admin_login_throttle"].limit = 3
    client = app.test_client()
    statuses = [login(client, "root@example.com", "wrong-password-1").status_code for _ in range(5)]
    assert statuses == [401, 401, 429, 429, 429]
    assert len(hash_calls) == 3
    assert login(client, "root@example.com", ADMIN_PW).status_code == 429  # even the right password waits


def test_concurrent_logins_never_run_more_hashes_than_the_cap(app, people, monkeypatch):  # noqa: F811
    app.config["LOGIN_HASH_WAIT"] = 0  # beyond the cap: 429 at once rather than waiting
    cap = app.extensions["admin_hash_slots"].cap
    inside, release, lock = [], threading.Event(), threading.Lock()
    active = {"now": 0, "max": 0}
    arrived = threading.Condition(lock)

    def blocking_hash(stored, password):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            inside.append(1)
            arrived.notify_all()
        release.wait(30)
        with lock:
            active["now"] -= 1
        return False

    monkeypatch.setattr(auth, "check_password_hash", blocking_hash)
    n = cap + 4
    statuses: list[int] = []
    done = threading.Condition(lock)

    def attempt(i):
        status = login(app.test_client(), f"user{i}@example.com", "wrong-password-1").status_code
        with lock:
            statuses.append(status)
            done.notify_all()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    with lock:
        assert done.wait_for(lambda: len(inside) == cap and len(statuses) == n - cap, timeout=30)
    release.set()
    for t in threads:
        t.join(30)
    assert active["max"] == cap
    assert sorted(statuses) == [401] * cap + [429] * (n - cap)


# -- item 15: what members see of prompts and models --------------------------------------------------
def test_member_sees_prompt_name_and_description_but_never_its_text(world, member_web):  # noqa: F811
    body = member_web.get("/admin/prompts").get_data(as_text=True)
    assert "allowed-prompt" in body and "A kind helper" in body
    assert "INTERNAL-TEXT" not in body and "Be kind" not in body
    rows = member_web.hx_get("/admin/prompts?q=kind", "rows").get_data(as_text=True)
    assert "allowed-prompt" in rows and "INTERNAL-TEXT" not in rows


def test_admin_still_sees_prompt_text(world, admin_web):  # noqa: F811
    assert "INTERNAL-TEXT-8" in admin_web.get("/admin/prompts").get_data(as_text=True)


def test_member_sees_only_fallbacks_they_may_use(world, member_web):  # noqa: F811
    body = member_web.get("/admin/models").get_data(as_text=True)
    assert "allowed-model" in body and "secret-model" not in body


def test_member_cannot_search_models_by_upstream_name(world, member_web):  # noqa: F811
    assert "allowed-model" not in member_web.hx_get("/admin/models?q=up-a", "rows").get_data(as_text=True)


# -- item 16: control characters in CLI output ---------------------------------------------------------
def test_printable_escapes_control_and_line_breaking_characters():
    from promptproxy.cli import printable

    assert printable("a\nb\r\tc\x1b[31m\x7f\x85\u2028\u202e") == "a\\nb\\r\\tc\\x1b[31m\\x7f\\x85\\u2028\\u202e"
    assert printable("plain ünïcode 模型") == "plain ünïcode 模型"


def test_log_prints_a_forged_model_name_on_one_line(app, people):  # noqa: F811
    forged = "m\n2099-01-01 00:00:00\t200\troot\tgpt-4o\x1b[2K"
    with app.app_context():
        db.session.add(RequestLog(request_id="req-forge", user_id=people["mia"], model=forged, prompt="p\rq",
                                  endpoint="/v1/chat/completions", status=200, latency_ms=5.0, created_at=utcnow()))
        db.session.commit()
    out = app.test_cli_runner().invoke(cli, ["log"], catch_exceptions=False).output
    assert out.count("\n") == 2 and "\x1b" not in out and "\r" not in out  # the header, then one row
    assert "m\\n2099-01-01 00:00:00\\t200\\troot\\tgpt-4o\\x1b[2K" in out


def test_show_and_errors_escape_stored_and_given_text(app):
    runner = app.test_cli_runner()
    with app.app_context():
        manage.create_prompt("t", "tricky", "line one\nline two", description="desc\x1b]0;owned\x07")
        db.session.commit()
    out = runner.invoke(cli, ["prompt", "show", "tricky"], catch_exceptions=False).output
    assert "\x1b" not in out and "\x07" not in out and "text: line one\\nline two\n" in out
    result = runner.invoke(cli, ["prompt", "show", "no\nsuch"])
    assert result.exit_code == 1 and "\nsuch" not in result.output and "no\\nsuch" in result.output


# -- item 17: /metrics is not open to the network by default ------------------------------------------
def test_metrics_open_only_on_a_loopback_listener_for_loopback_clients(app):
    client = app.test_client()
    assert app.config["HOST"] == "127.0.0.1"
    assert client.get("/metrics").status_code == 200
    far = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})  # e.g. through a proxy
    assert far.status_code == 403
    app.config["HOST"] = "0.0.0.0"
    resp = client.get("/metrics")
    assert resp.status_code == 403
    assert resp.get_json() == {"error": "set PROMPTPROXY_METRICS_TOKEN to serve /metrics on a non-loopback "
                                         "address, then send it as a bearer token"}


def test_metrics_with_a_token_need_it_wherever_the_server_listens(app):
    app.config.update(HOST="0.0.0.0", METRICS_TOKEN="metrics-token-123")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-123"},
                    environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert ok.status_code == 200 and b"promptproxy_" in ok.data


def test_serve_host_option_is_what_metrics_judge(app, monkeypatch):
    seen = {}
    monkeypatch.setattr("promptproxy.server.serve", lambda a, host, port, threads, workers=None: seen.update(
        host=a.config["HOST"]))
    app.test_cli_runner().invoke(cli, ["serve", "--host", "0.0.0.0"], catch_exceptions=False)
    assert seen == {"host": "0.0.0.0"}


# -- item 18: a bad `next` after login ----------------------------------------------------------------
@pytest.mark.parametrize("target", ["/admin%0d%0aX:%201", "/admin/%0aSet-Cookie:%20x=1", "/admin%09", "//evil.com",
                                    "https://evil.com/admin", "/administrator", "/admin\\..", "/admin/%00",
                                    "/admin/\u2028", "/admin/../v1/models"])
def test_bad_next_goes_to_the_overview(app, people, target):  # noqa: F811
    resp = login(app.test_client(), "root@example.com", ADMIN_PW, next_url=target)
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"


def test_good_next_is_followed(app, people):  # noqa: F811
    resp = login(app.test_client(), "root@example.com", ADMIN_PW, next_url="/admin/requests?page=2")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/requests?page=2"


# -- item 20: URL guard, instance secrets, apply's environment ------------------------------------------
def test_site_local_ipv6_is_not_a_public_upstream():
    from promptproxy.netguard import UnsafeURL, validate_base_url

    for url in ("http://[fec0::1]/v1", "http://[fec0::1]:8080", "http://[feff::1]", "http://[::ffff:10.0.0.1]"):
        with pytest.raises(UnsafeURL):
            validate_base_url(url, resolve=False)


def test_instance_secrets_are_created_0600_never_readable_in_between(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)  # as if the process died before any chmod
        value = config._instance_secret(tmp_path / "inst", "secret_key")
    finally:
        os.umask(old)
    path = tmp_path / "inst" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == value and len(value) >= 32
    assert config._instance_secret(tmp_path / "inst", "secret_key") == value  # read back, not replaced


def test_apply_reads_only_prefixed_environment_variables(app, tmp_path):
    import yaml

    from promptproxy import declarative

    base = {"name": "p", "base_url": "https://api.example.com/v1"}
    environ = {"PROMPTPROXY_ENCRYPTION_KEY": "the-encryption-key", "UPSTREAM_P_API_KEY": "sk-upstream-1111"}
    with app.app_context():
        for var in ("PROMPTPROXY_ENCRYPTION_KEY", "AWS_SECRET_ACCESS_KEY", "upstream_p_api_key"):
            with pytest.raises(declarative.ConfigFileError, match="must start with UPSTREAM_"):
                declarative.apply({"providers": [{**base, "api_key_env": var}]}, environ)
            db.session.rollback()
        with pytest.raises(declarative.ConfigFileError, match="must start with UPSTREAM_"):
            declarative.apply({"providers": [{**base, "headers_env": "HOME"}]}, environ)
        db.session.rollback()
        declarative.apply({"providers": [{**base, "api_key_env": "UPSTREAM_P_API_KEY"}]}, environ)
        db.session.commit()
        stored = db.session.scalar(sa.select(Provider).where(Provider.name == "p"))
        assert app.extensions["promptproxy"].box.decrypt(stored.api_key_encrypted) == "sk-upstream-1111"
        assert yaml.safe_load(declarative.export_text())["providers"][0]["api_key_env"] == "UPSTREAM_P_API_KEY"


# -- item 21: one unsafe-URL list through every way of setting a base URL --------------------------------
UNSAFE_URLS = ["http://169.254.169.254/latest", "http://user:pass@example.com/v1", "file:///etc/passwd",
               "http://[fec0::1]/v1", "http://[::ffff:169.254.169.254]/v1", "http://127.0.0.1:8080/v1",
               "http://localhost/v1", "http://10.0.0.5/v1", "http://0x7f000001/v1", "gopher://example.com/",
               "https://example.com/v1?x=1"]
SAFE_URL = "https://93.184.215.14/v1"


@pytest.fixture
def strict(app):
    """Private upstreams refused, as in production (the test config allows them)."""
    app.config["ALLOW_PRIVATE_UPSTREAMS"] = False
    with app.app_context():
        manage.create_provider("t", "target", "openai", SAFE_URL, api_key="sk-kept-1234")
        db.session.commit()
    return app


def stored_url(app) -> str:
    with app.app_context():
        return db.session.scalar(sa.select(Provider.base_url).where(Provider.name == "target"))


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_unsafe_url_refused_by_manage_create_and_update(strict, url):
    with strict.app_context():
        with pytest.raises(manage.ManageError):
            manage.create_provider("t", "new", "openai", url)
        with pytest.raises(manage.ManageError):
            manage.update_provider("t", manage.get_provider("target"), base_url=url)
        db.session.rollback()
    assert stored_url(strict) == SAFE_URL


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_unsafe_url_refused_by_the_dashboard_edit_and_create_forms(strict, people, url):  # noqa: F811
    client = strict.test_client()
    assert login(client, "root@example.com", ADMIN_PW).status_code == 303
    web = Web(client, csrf_token(client, "/admin/"))
    with strict.app_context():
        pid = manage.get_provider("target").id
    resp = web.post(f"/admin/providers/{pid}/edit", {"name": "target", "kind": "openai", "base_url": url,
                                                     "enabled": "y"})
    assert resp.status_code == 422
    assert stored_url(strict) == SAFE_URL
    created = web.post("/admin/providers", {"name": "fresh", "kind": "openai", "base_url": url, "enabled": "y"})
    assert created.status_code == 422
    with strict.app_context():
        assert db.session.scalar(sa.select(Provider).where(Provider.name == "fresh")) is None


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_unsafe_url_refused_by_provider_update_command(strict, url):
    result = strict.test_cli_runner().invoke(cli, ["provider", "update", "target", "--base-url", url])
    assert result.exit_code == 1 and "base URL" in result.output
    assert stored_url(strict) == SAFE_URL

