"""A provider's stored key and extra headers never follow a change of host, whichever way the host is changed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db

from ..admin.conftest import admin_web, people  # noqa: F401 - dashboard fixtures
from ..upstream import Upstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
OLD_KEY = "sk-upstream-secret-1234"  # the `seeded` provider's key
OLD_HEADERS = {"api-key": "hdr-azure-secret-5678", "X-Org-Id": "org-secret-9012"}
OLD_SECRETS = (OLD_KEY, *OLD_HEADERS.values())


@pytest.fixture
def second():
    """A second local upstream: the provider's new host."""
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def web(admin_web):  # noqa: F811
    """A dashboard client logged in as an admin."""
    return admin_web


@pytest.fixture
def provider(app, seeded):
    """The seeded provider `local` with its key and credential-like extra headers."""
    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), headers=OLD_HEADERS)
        db.session.commit()
    return seeded


def call(client, seeded) -> None:
    """One chat call through the gateway."""
    resp = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {seeded.key}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)


def received(server: Upstream) -> str:
    """Everything the upstream's last request carried (headers and body) as text."""
    last = server.requests[-1]
    return str(last["headers"]) + last["raw"].decode()


# -- each way of changing a provider's base URL: fn(app, web, url, key, headers) -----------------------
def by_manage(app, web, url, key=None, headers=None):
    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), base_url=url, api_key=key, headers=headers)
        db.session.commit()


def by_cli(app, web, url, key=None, headers=None):
    args = ["provider", "update", "local", "--base-url", url]
    args += ["--api-key", key] if key is not None else []
    for name, value in (headers or {}).items():
        args += ["--header", f"{name}={value}"]
    result = app.test_cli_runner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def by_dashboard(app, web, url, key=None, headers=None):
    assert headers is None  # the form has no header field: headers are set with the CLI or `apply`
    with app.app_context():
        pid = manage.get_provider("local").id
    form = {"name": "local", "kind": "openai", "base_url": url, "api_key": key or "", "enabled": "y"}
    resp = web.post(f"/admin/providers/{pid}/edit", form, hx=f"row-{pid}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def by_apply(app, web, url, key=None, headers=None):
    entry = {"name": "local", "kind": "openai", "base_url": url}
    entry.update({"api_key": key} if key is not None else {})
    entry.update({"headers": headers} if headers is not None else {})
    path = Path(app.instance_path) / "host-change.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"providers": [entry]}))
    result = app.test_cli_runner().invoke(cli, ["apply", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


PATHS = [by_manage, by_cli, by_dashboard, by_apply]


@pytest.mark.parametrize("change", PATHS, ids=lambda f: f.__name__)
def test_a_new_host_receives_neither_the_old_key_nor_the_old_headers(app, client, provider, upstream, second,
                                                                     web, change):
    call(client, provider)
    assert all(secret in received(upstream) for secret in OLD_SECRETS)  # the old host got them all
    change(app, web, second.url + "/v1")
    call(client, provider)
    assert len(second.requests) == 1
    sent = received(second)
    assert not [secret for secret in OLD_SECRETS if secret in sent]
    assert "Authorization" not in second.requests[0]["headers"]
    with app.app_context():
        p = manage.get_provider("local")
        assert (p.api_key_encrypted, p.api_key_hint, p.extra_headers_encrypted) == (None, None, None)


@pytest.mark.parametrize("change", PATHS, ids=lambda f: f.__name__)
def test_a_new_path_on_the_same_host_keeps_the_key_and_the_headers(app, client, provider, upstream, web, change):
    change(app, web, upstream.url + "/v1/other")
    call(client, provider)
    assert upstream.requests[-1]["path"].startswith("/v1/other/")
    sent = received(upstream)
    assert all(secret in sent for secret in OLD_SECRETS)


@pytest.mark.parametrize("change", [by_manage, by_cli, by_apply], ids=lambda f: f.__name__)
def test_headers_given_with_the_new_host_are_the_ones_sent(app, client, provider, second, web, change):
    change(app, web, second.url + "/v1", headers={"X-Org-Id": "org-new-3456"})
    call(client, provider)
    sent = second.requests[-1]["headers"]
    assert sent.get("X-Org-Id") == "org-new-3456"
    assert not [secret for secret in OLD_SECRETS if secret in received(second)]  # the key was not given: dropped


@pytest.mark.parametrize("change", PATHS, ids=lambda f: f.__name__)
def test_a_key_given_with_the_new_host_is_sent_but_the_old_headers_are_not(app, client, provider, second,
                                                                           web, change):
    change(app, web, second.url + "/v1", key="sk-new-host-key-4321")
    call(client, provider)
    assert second.requests[-1]["headers"].get("Authorization") == "Bearer sk-new-host-key-4321"
    assert not [secret for secret in OLD_SECRETS if secret in received(second)]


def test_apply_keeps_headers_the_file_gives_again_for_the_new_host(app, client, provider, second, web):
    out = by_apply(app, web, second.url + "/v1", key=OLD_KEY, headers=OLD_HEADERS)
    assert "api_key kept for the new host" in out and "headers kept for the new host" in out
    call(client, provider)
    assert all(secret in received(second) for secret in OLD_SECRETS)


def test_each_path_says_what_the_host_change_dropped(app, provider, upstream, second, web):
    def restore():
        by_manage(app, web, upstream.url + "/v1", key=OLD_KEY, headers=OLD_HEADERS)

    out = by_cli(app, web, second.url + "/v1")
    assert "the host changed: the stored api_key and headers were dropped" in out
    restore()
    page = by_dashboard(app, web, second.url + "/v1")
    assert "The host changed: the stored API key and extra headers were dropped." in page
    restore()
    out = by_apply(app, web, second.url + "/v1")
    assert "api_key dropped (new host)" in out and "headers dropped (new host)" in out
