"""Secrets at rest: rotation, tampering fails closed, ciphertext is no token, production refuses weak keys."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from itsdangerous import BadSignature

from promptproxy import create_app, manage
from promptproxy.config import ConfigError, finalize, from_env
from promptproxy.crypto import Box, SecretError
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Provider

from ..cli_runner import run_cli
from ..conftest import ENC_KEY, base_config
from .helpers import app_env

NEW_KEY = "a-brand-new-encryption-key-0123456789"
SECRET = "sk-upstream-secret-1234"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def stored(app) -> tuple[str, str | None]:
    """The provider's stored api key and header ciphertexts."""
    with app.app_context():
        p = db.session.scalar(sa.select(Provider).where(Provider.name == "local"))
        return p.api_key_encrypted, p.extra_headers_encrypted


def add_header_secret(app) -> None:
    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), headers={"X-Org": "org-secret-9876"})
        db.session.commit()


def test_rotation_reencrypts_everything_is_idempotent_and_round_trips(app, seeded, upstream, tmp_path):
    add_header_secret(app)
    before_key, before_headers = stored(app)
    done = run_cli("rotate-encryption-key", ok=False, env=app_env(
        app, PROMPTPROXY_ENCRYPTION_KEY=NEW_KEY,
        PROMPTPROXY_OLD_ENCRYPTION_KEYS=f"some-older-key-xxxxxxxxxxxxxxxxxxxxx,{ENC_KEY}"))
    assert done.exit_code == 0, done.stderr
    assert "re-encrypted 2 secret(s); 0 already under the current key" in done.stdout
    after_key, after_headers = stored(app)
    assert after_key != before_key and after_headers != before_headers
    new_box = Box(NEW_KEY)
    assert new_box.decrypt(after_key) == SECRET
    assert new_box.decrypt(after_headers) == '{"X-Org":"org-secret-9876"}'
    with pytest.raises(SecretError):
        Box(ENC_KEY).decrypt(after_key)
    again = run_cli("rotate-encryption-key", ok=False, env=app_env(
        app, PROMPTPROXY_ENCRYPTION_KEY=NEW_KEY, PROMPTPROXY_OLD_ENCRYPTION_KEYS=ENC_KEY))
    assert again.exit_code == 0 and "re-encrypted 0 secret(s); 2 already under the current key" in again.stdout
    assert stored(app) == (after_key, after_headers)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "rotate")) == 1
    # A gateway started with only the new key sends the same secret upstream.
    rotated = create_app({**base_config(app.config["DATABASE_URL"], tmp_path), "ENCRYPTION_KEY": NEW_KEY})
    try:
        resp = rotated.test_client().post("/v1/chat/completions", json=CHAT,
                                          headers={"Authorization": f"Bearer {seeded.key}"})
        assert resp.status_code == 200
        assert upstream.last["headers"]["Authorization"] == f"Bearer {SECRET}"
        assert upstream.last["headers"]["X-Org"] == "org-secret-9876"
    finally:
        rotated.extensions["promptproxy"].close()
        with rotated.app_context():
            db.engine.dispose()


def test_rotation_with_the_wrong_key_is_one_clear_line_and_changes_nothing(app, seeded):
    before = stored(app)
    done = run_cli("rotate-encryption-key", env=app_env(app, PROMPTPROXY_ENCRYPTION_KEY=NEW_KEY), ok=False)
    assert done.exit_code == 1
    [line] = done.stderr.strip().splitlines()
    assert line == ("Error: providers `local` (api_key_encrypted): cannot be decrypted with PROMPTPROXY_ENCRYPTION_KEY "
                    "or any of PROMPTPROXY_OLD_ENCRYPTION_KEYS; nothing was changed")
    assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    assert stored(app) == before


def test_old_keys_setting_is_read_from_the_environment():
    cfg = from_env({"PROMPTPROXY_OLD_ENCRYPTION_KEYS": " key-one-xxxxxxxxxxxxxxxxxxxxxxxxxx , ,key-two "})
    cfg.update(SECRET_KEY="s" * 40, ENCRYPTION_KEY="e" * 40, DATABASE_URL="sqlite://")
    expected = ("key-one-xxxxxxxxxxxxxxxxxxxxxxxxxx", "key-two")
    assert finalize(cfg, Path("/nonexistent"))["OLD_ENCRYPTION_KEYS"] == expected


def test_gateway_decrypts_secrets_written_under_an_old_key(app, seeded, upstream, tmp_path):
    cfg = {**base_config(app.config["DATABASE_URL"], tmp_path), "ENCRYPTION_KEY": NEW_KEY,
           "OLD_ENCRYPTION_KEYS": f"unrelated-key,{ENC_KEY}"}
    other = create_app(cfg)
    try:
        resp = other.test_client().post("/v1/chat/completions", json=CHAT,
                                        headers={"Authorization": f"Bearer {seeded.key}"})
        assert resp.status_code == 200
        assert upstream.last["headers"]["Authorization"] == f"Bearer {SECRET}"
    finally:
        other.extensions["promptproxy"].close()
        with other.app_context():
            db.engine.dispose()


def test_tampered_ciphertext_fails_closed_and_sends_nothing(app, seeded, upstream, live, caplog):
    with app.app_context():
        p = manage.get_provider("local")
        token = p.api_key_encrypted
        middle = len(token) // 2
        p.api_key_encrypted = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]
        db.session.commit()
    resp = requests.post(live + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {seeded.key}"},
                         timeout=10)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "provider_misconfigured"
    assert "re-enter" in resp.json()["error"]["message"]
    assert upstream.requests == []
    assert "local" in caplog.text and "cannot be decrypted" in caplog.text  # the administrator is told


def test_wrong_encryption_key_at_startup_marks_providers_broken_not_plaintext(app, seeded, upstream, tmp_path):
    other = create_app({**base_config(app.config["DATABASE_URL"], tmp_path), "ENCRYPTION_KEY": NEW_KEY})
    try:
        resp = other.test_client().post("/v1/chat/completions", json=CHAT,
                                        headers={"Authorization": f"Bearer {seeded.key}"})
        assert resp.status_code == 502 and resp.json["error"]["code"] == "provider_misconfigured"
        assert upstream.requests == []
    finally:
        other.extensions["promptproxy"].close()
        with other.app_context():
            db.engine.dispose()


def test_stored_ciphertext_is_not_an_api_key(client, app, seeded, upstream):
    token, _ = stored(app)
    unknown = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer pp-not-a-real-key"})
    resp = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json == unknown.json
    resp = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token[3:]}"})
    assert resp.status_code == 401 and resp.json == unknown.json
    assert upstream.requests == []


def test_stored_ciphertext_is_not_a_session_cookie(app, seeded):
    token, _ = stored(app)
    serializer = app.session_interface.get_signing_serializer(app)
    for value in (token, token[3:]):
        with pytest.raises(BadSignature):
            serializer.loads(value)
        with app.test_request_context("/", headers={"Cookie": f"session={value}"}):
            from flask import session

            assert dict(session) == {}
    # And the session key cannot decrypt secrets: the two keys are separate and HKDF-separated.
    with pytest.raises(SecretError):
        Box(app.config["SECRET_KEY"]).decrypt(token)


@pytest.mark.parametrize("env, missing", [
    ({}, "SECRET_KEY"),
    ({"PROMPTPROXY_SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"PROMPTPROXY_SECRET_KEY": "s" * 40}, "ENCRYPTION_KEY"),
    ({"PROMPTPROXY_SECRET_KEY": "s" * 40, "PROMPTPROXY_ENCRYPTION_KEY": "e" * 20}, "ENCRYPTION_KEY"),
])
def test_production_refuses_weak_or_missing_keys(env, missing, tmp_path):
    cfg = from_env({"PROMPTPROXY_ENV": "production", **env})
    with pytest.raises(ConfigError, match=f"PROMPTPROXY_{missing} must be set to at least 32"):
        finalize(cfg, tmp_path)
    assert not (tmp_path / missing.lower()).exists()  # never invents a production secret


def test_production_refuses_one_key_for_both(tmp_path):
    cfg = from_env({"PROMPTPROXY_ENV": "production", "PROMPTPROXY_SECRET_KEY": "k" * 40,
                    "PROMPTPROXY_ENCRYPTION_KEY": "k" * 40})
    with pytest.raises(ConfigError, match="must differ"):
        finalize(cfg, tmp_path)


def test_production_cli_without_keys_prints_one_line_and_exits_non_zero(app):
    done = run_cli("serve", ok=False, env=app_env(app, PROMPTPROXY_ENV="production", PROMPTPROXY_SECRET_KEY="",
                                                  PROMPTPROXY_ENCRYPTION_KEY=""))
    assert done.exit_code == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: PROMPTPROXY_SECRET_KEY must be set to at least 32 random characters in production")
    assert "Traceback" not in done.stderr and "serving" not in done.stdout
