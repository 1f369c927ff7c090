"""Keys: hashed at rest, looked up once, accepted in every header form, refused when revoked or expired."""
from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import ApiKey, utcnow

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("headers", [
    lambda k: {"Authorization": f"Bearer {k}"},
    lambda k: {"Authorization": f"bearer {k}"},
    lambda k: {"Authorization": f"BEARER  {k} "},
    lambda k: {"x-api-key": k},
])
def test_key_header_forms(client, seeded, headers):
    resp = client.post("/v1/chat/completions", json=CHAT, headers=headers(seeded.key))
    assert resp.status_code == 200, resp.get_json()


def test_same_key_works_after_a_billed_call(client, seeded):
    """The original refused Bearer clients after a billed call; every call must keep working."""
    for _ in range(3):
        assert client.post("/v1/chat/completions", json=CHAT,
                           headers={"Authorization": f"Bearer {seeded.key}"}).status_code == 200


def test_no_plaintext_key_in_the_database(app, client, seeded, db_url):
    client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {seeded.key}"})
    app.extensions["promptproxy"].logs.flush()
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT * FROM api_keys")).all()
        dump = repr(rows)
        for table in sa.inspect(db.engine).get_table_names():
            dump += repr(db.session.execute(sa.text(f"SELECT * FROM {table}")).all())
    assert seeded.key not in dump
    assert seeded.key[7:-4] not in dump
    assert "sk-upstream-secret-1234" not in dump
    if db_url.startswith("sqlite:///"):
        raw = open(db_url[len("sqlite:///"):], "rb").read()
        assert seeded.key.encode() not in raw
        sqlite3.connect(db_url[len("sqlite:///"):]).close()


def test_key_display_is_prefix_and_last4(app, seeded):
    with app.app_context():
        key = db.session.scalars(sa.select(ApiKey).where(ApiKey.user_id == seeded.user_id)).one()
        assert key.display == f"{seeded.key[:7]}…{seeded.key[-4:]}"
        assert seeded.key.startswith("pp-") and len(seeded.key) >= 3 + 43


def test_revoked_key_refused_at_once(app, client, seeded):
    headers = {"Authorization": f"Bearer {seeded.key}"}
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    with app.app_context():
        key = db.session.scalars(sa.select(ApiKey).where(ApiKey.user_id == seeded.user_id)).one()
        manage.revoke_key("t", key)
        db.session.commit()
    resp = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_api_key"


def test_expired_key_refused(app, client, seeded):
    with app.app_context():
        user = manage.get_user("alice")
        key, raw = manage.create_key("t", user, expires_at=utcnow() + timedelta(days=1))
        db.session.commit()
        headers = {"Authorization": f"Bearer {raw}"}
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
        key = db.session.get(ApiKey, key.id)
        key.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 401


def test_last_used_is_recorded(app, client, seeded):
    client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {seeded.key}"})
    app.extensions["promptproxy"].logs.flush()
    with app.app_context():
        key = db.session.scalars(sa.select(ApiKey).where(ApiKey.user_id == seeded.user_id)).one()
        assert key.last_used_at is not None


def test_expiry_in_the_past_is_refused(app, seeded):
    with app.app_context(), pytest.raises(manage.ManageError):
        manage.create_key("t", manage.get_user("alice"), expires_at=utcnow() - timedelta(days=1))
