"""Stored Responses API answers: ownership, history for previous_response_id, deletion, retention, migration."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from promptproxy import create_app
from promptproxy.cli import cli
from promptproxy.core.catalog import Principal
from promptproxy.dialects import responses_store
from promptproxy.dialects.responses_wire import chat_to_response, input_items
from promptproxy.extensions import db
from promptproxy.models import StoredResponse, utcnow

from ..conftest import base_config


def caller(user_id: int) -> Principal:
    """The principal of a key that may use every model (reads are scoped to the calling key)."""
    return Principal(key_id=7, user_id=user_id, user_name=f"user{user_id}", role="member", user_active=True,
                     expires_at=None, revoked=False, models=None, prompts=None)


OWNER, STRANGER = caller(1), caller(2)


def answer(response_id: str, text: str, request: dict, created_at: int | None = None) -> dict:
    """A Response object for a one-message answer."""
    chat = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    created = int(utcnow().timestamp()) if created_at is None else created_at
    return chat_to_response(chat, response_id=response_id, model="gpt-4o-mini", request=request, created_at=created)


def store_turn(response_id: str, text: str, request: dict, previous: str | None = None, created_at=None):
    """Save one turn as the Responses dialect will: its history, its input and the answer."""
    context = responses_store.history(previous, OWNER) if previous else []
    return responses_store.save(
        response=answer(response_id, text, request, created_at), user_id=OWNER.user_id, key_id=7,
        model="gpt-4o-mini", input_items=input_items(request), context=context, previous_response_id=previous,
    )


def test_the_owner_reads_a_stored_response(app):
    with app.app_context():
        store_turn("resp_1", "Hello!", {"input": "Hi"})
        row = responses_store.load("resp_1", OWNER)
        assert (row.model, row.key_id, row.previous_response_id) == ("gpt-4o-mini", 7, None)
        assert row.response["output"][0]["content"][0]["text"] == "Hello!"
        assert row.input_items == [{"type": "message", "role": "user",
                                    "content": [{"type": "input_text", "text": "Hi"}]}]


def test_another_users_response_reads_as_missing(app):
    with app.app_context():
        store_turn("resp_1", "Hello!", {"input": "Hi"})
        assert responses_store.load("resp_1", STRANGER) is None
        assert responses_store.history("resp_1", STRANGER) is None


def test_an_unknown_response_reads_as_missing(app):
    with app.app_context():
        assert responses_store.load("resp_nope", OWNER) is None
        assert responses_store.history("resp_nope", OWNER) is None


def test_history_chains_every_earlier_turn(app):
    with app.app_context():
        store_turn("resp_1", "Paris.", {"input": "Capital of France?"})
        store_turn("resp_2", "Rome.", {"input": "And Italy?"}, previous="resp_1")
        texts = [item["content"][0]["text"] for item in responses_store.history("resp_2", OWNER)]
        assert texts == ["Capital of France?", "Paris.", "And Italy?", "Rome."]
        assert responses_store.load("resp_2", OWNER).previous_response_id == "resp_1"


def test_the_owner_deletes_a_stored_response(app):
    with app.app_context():
        store_turn("resp_1", "Hello!", {"input": "Hi"})
        assert responses_store.delete("resp_1", OWNER) is True
        assert responses_store.load("resp_1", OWNER) is None
        assert responses_store.delete("resp_1", OWNER) is False


def test_another_user_cannot_delete_a_stored_response(app):
    with app.app_context():
        store_turn("resp_1", "Hello!", {"input": "Hi"})
        assert responses_store.delete("resp_1", STRANGER) is False
        assert responses_store.load("resp_1", OWNER) is not None


def test_the_row_time_is_the_responses_created_at(app):
    with app.app_context():
        store_turn("resp_1", "Hello!", {"input": "Hi"}, created_at=1_700_000_000)
        assert responses_store.load("resp_1", OWNER).created_at.isoformat() == "2023-11-14T22:13:20"


def test_retention_prunes_old_stored_responses(app):
    old = int((utcnow() - timedelta(days=40)).timestamp())
    with app.app_context():
        store_turn("resp_old", "Old.", {"input": "Hi"}, created_at=old)
        store_turn("resp_new", "New.", {"input": "Hi"})
    result = app.test_cli_runner().invoke(cli, args=["prune", "--days", "30"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalars(sa.select(StoredResponse.id)).all() == ["resp_new"]


def test_the_migration_goes_down_and_up_again(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTPROXY_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(base_config(f"sqlite:///{tmp_path / 'mig.db'}", tmp_path))
    try:
        with app.app_context():
            upgrade()
            assert "stored_responses" in sa.inspect(db.engine).get_table_names()
            downgrade(revision="0002_ops")
            assert "stored_responses" not in sa.inspect(db.engine).get_table_names()
            upgrade()
            indexes = {ix["name"] for ix in sa.inspect(db.engine).get_indexes("stored_responses")}
            assert indexes == {"ix_stored_responses_user_id", "ix_stored_responses_created_at"}
    finally:
        app.extensions["promptproxy"].close()
        with app.app_context():
            db.engine.dispose()
