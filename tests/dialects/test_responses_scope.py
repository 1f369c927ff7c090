"""Stored Responses follow the calling key, not only its user: a key reads, deletes and continues only responses on
models it may use; deleting a user removes their stored responses. The official openai SDK against a live gateway."""
from __future__ import annotations

import openai
import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import StoredResponse, User

from ..conftest import rows_when


@pytest.fixture
def keys(app, seeded, live):
    """alice (every model) with her full key and a second key narrowed to `gpt-4o`, both as SDK clients."""
    with app.app_context():
        provider = manage.get_provider("local")
        manage.create_model("t", "gpt-4o", provider, "bigger-model")
        alice = db.session.get(User, seeded.user_id)
        narrow, raw = manage.create_key("t", alice, "narrow")
        manage.update_key("t", narrow, allow_models=["gpt-4o"])
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    full = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0, timeout=20)
    narrowed = openai.OpenAI(base_url=live + "/v1", api_key=raw, max_retries=0, timeout=20)
    yield full, narrowed
    full.close()
    narrowed.close()


def not_found(call) -> dict:
    """The error body of a call that must answer 404."""
    with pytest.raises(openai.NotFoundError) as info:
        call()
    return info.value.body


def as_unknown(body: dict, hidden: str, unknown: str) -> dict:
    """The body with the unknown id in place of the hidden one: both must read the same."""
    return {**body, "message": body["message"].replace(hidden, unknown)}


def stored(app, user_id: int) -> int:
    """How many stored responses a user has in the database."""
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(StoredResponse)
                                 .where(StoredResponse.user_id == user_id))


def test_a_narrowed_key_cannot_read_a_response_on_a_model_it_may_not_use(keys):
    full, narrowed = keys
    made = full.responses.create(model="gpt-4o-mini", input="Hi")
    hidden = not_found(lambda: narrowed.responses.retrieve(made.id))
    unknown = not_found(lambda: narrowed.responses.retrieve("resp_unknown"))
    assert hidden["code"] == "response_not_found" and as_unknown(hidden, made.id, "resp_unknown") == unknown
    listed = not_found(lambda: narrowed.responses.input_items.list(made.id))
    assert as_unknown(listed, made.id, "resp_unknown") == unknown
    assert full.responses.retrieve(made.id).output_text == "Bonjour!"  # the user's other key still reads it


def test_a_narrowed_key_cannot_continue_a_response_on_a_model_it_may_not_use(keys, upstream):
    full, narrowed = keys
    made = full.responses.create(model="gpt-4o-mini", input="Hi")
    sent = len(upstream.requests)
    hidden = not_found(lambda: narrowed.responses.create(model="gpt-4o", input="And?", previous_response_id=made.id))
    unknown = not_found(lambda: narrowed.responses.create(model="gpt-4o", input="And?",
                                                          previous_response_id="resp_unknown"))
    assert hidden["code"] == "response_not_found" and as_unknown(hidden, made.id, "resp_unknown") == unknown
    assert len(upstream.requests) == sent  # nothing of the conversation went upstream
    follow = full.responses.create(model="gpt-4o", input="And?", previous_response_id=made.id)
    assert follow.previous_response_id == made.id
    assert upstream.last["body"]["messages"][:2] == [{"role": "user", "content": "Hi"},
                                                     {"role": "assistant", "content": "Bonjour!"}]


def test_a_narrowed_key_cannot_delete_a_response_on_a_model_it_may_not_use(keys):
    full, narrowed = keys
    made = full.responses.create(model="gpt-4o-mini", input="Hi")
    hidden = not_found(lambda: narrowed.responses.delete(made.id))
    unknown = not_found(lambda: narrowed.responses.delete("resp_unknown"))
    assert hidden["code"] == "response_not_found" and as_unknown(hidden, made.id, "resp_unknown") == unknown
    assert full.responses.retrieve(made.id).id == made.id  # still there
    full.responses.delete(made.id)
    assert not_found(lambda: full.responses.retrieve(made.id))["code"] == "response_not_found"


def test_a_narrowed_key_keeps_its_own_models_responses_and_shares_them_with_the_full_key(keys):
    full, narrowed = keys
    made = narrowed.responses.create(model="gpt-4o", input="Hi")
    assert narrowed.responses.retrieve(made.id).output_text == "Bonjour!"
    assert full.responses.retrieve(made.id).id == made.id  # the user's responses, on a model both keys may use
    follow = narrowed.responses.create(model="gpt-4o", input="And?", previous_response_id=made.id)
    narrowed.responses.delete(follow.id)
    assert not_found(lambda: full.responses.retrieve(follow.id))["code"] == "response_not_found"


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "deactivated"])
def test_deleting_a_user_removes_their_stored_responses(app, keys, seeded, hard):
    full, _ = keys
    made = full.responses.create(model="gpt-4o-mini", input="A whole conversation")
    with app.app_context():
        _, carol_key = manage.create_key("t", manage.create_user("t", "carol", all_models=True))
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    carol = openai.OpenAI(base_url=str(full.base_url), api_key=carol_key, max_retries=0, timeout=20)
    kept = carol.responses.create(model="gpt-4o-mini", input="Not alice's")
    carol.close()
    assert stored(app, seeded.user_id) == 1
    assert len(rows_when(app, 2)) == 2  # her request row is written (the log is asynchronous): she has history
    with app.app_context():
        outcome = manage.delete_user("t", db.session.get(User, seeded.user_id), hard=hard)
        db.session.commit()
        assert outcome == ("deleted" if hard else "deactivated")  # she has request rows: history
        assert db.session.get(StoredResponse, made.id) is None
        assert db.session.get(StoredResponse, kept.id) is not None  # another user's are untouched
    assert stored(app, seeded.user_id) == 0
