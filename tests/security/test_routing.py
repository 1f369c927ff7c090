"""No request chooses the upstream host: routing keys refused at any depth, host headers ignored, URLs validated."""
from __future__ import annotations

import socket

import openai
import pytest
import sqlalchemy as sa

from promptproxy import create_app, manage
from promptproxy.extensions import db
from promptproxy.manage import ManageError
from promptproxy.models import Provider
from promptproxy.netguard import UnsafeURL, validate_base_url

from ..cli_runner import run_cli
from ..conftest import base_config
from ..upstream import Upstream
from .helpers import app_env

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def attacker():
    """A second local server standing in for a host an attacker controls."""
    server = Upstream().start()
    yield server
    server.stop()


def auth(seeded) -> dict:
    return {"Authorization": f"Bearer {seeded.key}"}


def nested(attacker_url: str) -> list[tuple[dict, str]]:
    """Bodies that try to steer the upstream, at several depths, with the param path we expect back."""
    url = attacker_url + "/v1"
    return [
        ({"api_base": url}, "api_base"),
        ({"base_url": url}, "base_url"),
        ({"api_key": "sk-attacker"}, "api_key"),
        ({"user_config": {"model_list": []}}, "user_config"),
        ({"extra_headers": {"Host": "evil"}}, "extra_headers"),
        ({"extra_body": {"x": 1}}, "extra_body"),
        ({"metadata": {"api_base": url}}, "metadata.api_base"),
        ({"metadata": {"deep": {"deeper": [{"base_url": url}]}}}, "metadata.deep.deeper.base_url"),
        ({"messages": [{"role": "user", "content": "hi", "api_base": url}]}, "messages.api_base"),
        ({"litellm_params": [[[{"custom_host": url}]]]}, "litellm_params.custom_host"),
        ({"azure": {"azure_endpoint": url}}, "azure.azure_endpoint"),
    ]


def test_routing_keys_at_any_depth_are_refused_and_nobody_is_called(client, seeded, upstream, attacker):
    for extra, param in nested(attacker.url):
        resp = client.post("/v1/chat/completions", json={**CHAT, **extra}, headers=auth(seeded))
        assert resp.status_code == 400, extra
        assert resp.json["error"]["code"] == "unsupported_parameter"
        assert resp.json["error"]["param"] == param
        assert resp.json["error"]["type"] == "invalid_request_error"
    for path, body in (("/v1/completions", {"model": "text-davinci", "prompt": "x", "user_config": {}}),
                       ("/v1/embeddings", {"model": "embed", "input": "x", "options": {"api_base": attacker.url}})):
        resp = client.post(path, json=body, headers=auth(seeded))
        assert resp.status_code == 400 and resp.json["error"]["code"] == "unsupported_parameter"
    assert attacker.requests == [] and upstream.requests == []


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {**CHAT, "API_BASE": "http://evil"}),
    ("/v1/chat/completions", {**CHAT, "metadata": {"Base_Url": "http://evil"}}),
    ("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                      "Api_Key": "sk-attacker"}),
    ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "Extra_Headers": {"Host": "evil"}}),
])
def test_routing_keys_are_refused_in_any_case_on_every_dialect(client, seeded, upstream, path, body):
    """Issue 14 item 19: `API_BASE` is the same key to many servers; every inbound dialect runs the same guard."""
    resp = client.post(path, json=body, headers=auth(seeded))
    assert resp.status_code == 400 and upstream.requests == []
    error = resp.json["error"]
    message = error["message"]
    assert "cannot be set by clients" in message
    if path != "/v1/messages":
        assert error["code"] == "unsupported_parameter"


def test_routing_key_through_the_official_sdk_is_refused(live, seeded, upstream, attacker):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                    extra_body={"user_config": {"api_base": attacker.url}})
    assert info.value.code == "unsupported_parameter"
    assert attacker.requests == [] and upstream.requests == []


def test_json_schema_properties_may_use_those_names(client, seeded, upstream):
    schema = {"type": "object", "properties": {"api_key": {"type": "string"}, "base_url": {"type": "string"}}}
    body = {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    resp = client.post("/v1/chat/completions", json=body, headers=auth(seeded))
    assert resp.status_code == 200
    assert upstream.last["body"]["tools"][0]["function"]["parameters"] == schema


HOST_HEADERS = {"x-portkey-custom-host": "{a}", "x-api-base": "{a}/v1", "x-base-url": "{a}/v1",
                "x-forwarded-host": "{h}", "x-original-url": "{a}/v1", "x-litellm-api-base": "{a}",
                "x-upstream": "{a}", "forwarded": "host={h}"}


def test_custom_host_headers_are_ignored_and_never_forwarded(client, seeded, upstream, attacker):
    host = attacker.url.removeprefix("http://")
    headers = {name: value.format(a=attacker.url, h=host) for name, value in HOST_HEADERS.items()}
    resp = client.post("/v1/chat/completions", json=CHAT, headers={**auth(seeded), **headers})
    assert resp.status_code == 200
    assert attacker.requests == []
    [sent] = upstream.requests
    assert not {name.lower() for name in sent["headers"]} & set(HOST_HEADERS)
    assert attacker.url not in str(sent["headers"])


def test_upstream_redirects_are_not_followed(client, seeded, upstream, attacker):
    for status in (301, 302, 307, 308):
        upstream.handler = lambda req, s=status: (s, {"Location": attacker.url + "/v1/chat/completions"}, b"")
        resp = client.post("/v1/chat/completions", json=CHAT, headers=auth(seeded))
        assert resp.status_code == 502
        assert resp.json["error"]["code"] == "bad_upstream_response"
        assert attacker.url not in resp.get_data(as_text=True)
    assert attacker.requests == []
    assert len(upstream.requests) == 4


# -- provider base URLs -----------------------------------------------------------------------------
UNSAFE = ["http://169.254.169.254/latest", "http://127.0.0.1:8000/v1", "http://127.1/v1", "http://0.0.0.0/v1",
          "http://localhost./v1", "http://2130706433/v1", "http://0x7f000001/v1", "http://0177.0.0.1/v1",
          "http://[::1]/v1", "http://[::ffff:127.0.0.1]/v1", "http://[64:ff9b::a9fe:a9fe]/v1",
          "http://[2002:7f00:1::]/v1", "http://10.1.2.3/v1", "http://172.16.0.1/v1", "http://172.31.255.254/v1",
          "http://192.168.1.1/v1", "http://localhost/v1", "http://foo.localhost/v1", "http://[fe80::1]/v1",
          "http://100.64.0.1/v1", "http://224.0.0.1/v1"]
BAD_FORM = ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/", "http://user:pass@example.com/v1",
            "https://sk-123@example.com/v1", "https://example.com/v1?key=1", "example.com/v1", "http:///v1"]


@pytest.fixture
def strict(app):
    """The app with private upstreams not allowed (the production default)."""
    app.config["ALLOW_PRIVATE_UPSTREAMS"] = False
    return app


@pytest.mark.parametrize("url", UNSAFE + BAD_FORM)
def test_unsafe_base_urls_are_refused(strict, url):
    with strict.app_context():
        with pytest.raises(ManageError):
            manage.create_provider("t", "p", "openai", url, api_key="sk-x")
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Provider)) == 0


@pytest.mark.parametrize("url", BAD_FORM)
def test_bad_form_is_refused_even_when_private_hosts_are_allowed(app, url):
    with pytest.raises(UnsafeURL):
        validate_base_url(url, allow_private=True)


def test_private_hosts_need_the_opt_in(app):
    with app.app_context():
        assert manage.create_provider("t", "p", "openai", "http://10.1.2.3:8000/v1/").base_url == \
            "http://10.1.2.3:8000/v1"


def test_public_hosts_pass(strict):
    with strict.app_context():
        p = manage.create_provider("t", "openai", "openai", "https://8.8.8.8/v1", api_key="sk-x")
        assert p.base_url == "https://8.8.8.8/v1"


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://0x7f000001/v1", "http://u:p@example.com/"])
def test_cli_refuses_unsafe_base_urls_in_one_line(app, url):
    done = run_cli("provider", "create", "evil", "--base-url", url, "--api-key", "sk-canary-cli",
                   env=app_env(app, PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS="0"), ok=False)
    assert done.exit_code == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: base URL ")
    assert "sk-canary-cli" not in done.stdout + done.stderr


def test_changing_the_host_drops_the_old_secret(app, seeded, upstream, attacker, client):
    with app.app_context():
        p = manage.get_provider("local")
        changed = manage.update_provider("t", p, base_url=attacker.url + "/v1")
        db.session.commit()
        assert "cleared" in changed["api_key"]
        assert p.api_key_encrypted is None and p.api_key_hint is None
    client.post("/v1/chat/completions", json=CHAT, headers=auth(seeded))
    [sent] = attacker.requests
    assert "Authorization" not in sent["headers"]
    assert "sk-upstream-secret" not in str(sent)
    with app.app_context():  # same host, new path: the key stays
        p = manage.get_provider("local")
        manage.update_provider("t", p, api_key="sk-new-secret-5678")
        manage.update_provider("t", p, base_url=attacker.url + "/other")
        db.session.commit()
        assert p.api_key_encrypted is not None


# -- DNS rebinding ----------------------------------------------------------------------------------
def fake_dns(monkeypatch, name: str, address: str) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def strict_app(db_url, tmp_path):
    """A separate app built with ALLOW_PRIVATE_UPSTREAMS off, so its upstream pools use the connect guard."""
    app = create_app({**base_config(db_url, tmp_path), "ALLOW_PRIVATE_UPSTREAMS": False})
    yield app
    app.extensions["promptproxy"].close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def seed_strict(app, base_url: str) -> str:
    with app.app_context():
        p = manage.create_provider("t", "remote", "openai", base_url, api_key="sk-upstream-secret-1234")
        manage.create_model("t", "gpt-4o-mini", p, "m")
        user = manage.create_user("t", "alice", all_models=True)
        _, key = manage.create_key("t", user)
        db.session.commit()
    return key


def test_dns_rebinding_is_blocked_at_connect(strict_app, upstream, monkeypatch, caplog):
    fake_dns(monkeypatch, "api.rebind.test", "93.184.216.34")  # public when the admin saves it
    key = seed_strict(strict_app, f"http://api.rebind.test:{upstream.port}/v1")
    fake_dns(monkeypatch, "api.rebind.test", "127.0.0.1")  # loopback when the request is made
    resp = strict_app.test_client().post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 502
    assert resp.json["error"]["code"] == "upstream_unavailable"
    assert upstream.requests == []
    assert "resolved to the private or special address 127.0.0.1" in caplog.text


def test_a_stored_private_url_is_blocked_at_connect_too(strict_app, upstream):
    with strict_app.app_context():  # e.g. saved while the opt-in was on, then switched off
        strict_app.config["ALLOW_PRIVATE_UPSTREAMS"] = True
        key = seed_strict(strict_app, upstream.url + "/v1")
        strict_app.config["ALLOW_PRIVATE_UPSTREAMS"] = False
    resp = strict_app.test_client().post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 502 and upstream.requests == []
