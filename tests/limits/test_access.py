"""Allow-lists for models and prompts on every endpoint; keys narrow, never widen; /v1/models shows the combos."""
from __future__ import annotations

import openai
import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import log_rows
from .conftest import set_limits

MODEL_404 = "The model `{}` does not exist or you do not have access to it."
PROMPT_404 = "The prompt `{}` does not exist or you do not have access to it."


def not_found(kind: str, name: str) -> dict:
    message = (MODEL_404 if kind == "model" else PROMPT_404).format(name)
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": f"{kind}_not_found"}}


def call(client, key: str, endpoint: str, model: str, stream: bool = False):
    body = {"chat": {"messages": [{"role": "user", "content": "hi"}]}, "completions": {"prompt": "hi"},
            "embeddings": {"input": "hi"}}[endpoint]
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}
    return client.post(path[endpoint], json={"model": model, **body, **({"stream": True} if stream else {})},
                       headers={"Authorization": f"Bearer {key}"})


def model_ids(client, key: str) -> list[str]:
    resp = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200
    return [m["id"] for m in resp.get_json()["data"]]


@pytest.fixture
def carol(app, seeded):
    """A new user with no grants: the documented safe default is no access."""
    with app.app_context():
        user = manage.create_user("test", "carol")
        key, raw = manage.create_key("test", user)
        db.session.commit()
        return raw


CASES = [("chat", "gpt-4o-mini", False), ("chat", "gpt-4o-mini", True), ("completions", "text-davinci", False),
         ("completions", "text-davinci", True), ("embeddings", "embed", False)]


@pytest.mark.parametrize(("endpoint", "model", "stream"), CASES)
def test_new_user_has_no_access_anywhere(client, carol, upstream, endpoint, model, stream):
    resp = call(client, carol, endpoint, model, stream)
    assert resp.status_code == 404
    assert resp.mimetype == "application/json"
    assert resp.get_json() == not_found("model", model)
    assert not upstream.requests


def test_new_user_sees_no_models(client, carol):
    assert model_ids(client, carol) == []


def test_forbidden_model_answers_exactly_like_an_unknown_one(client, seeded, upstream):
    forbidden = call(client, seeded.other_key, "completions", "text-davinci")
    unknown = call(client, seeded.other_key, "completions", "no-such-model")
    assert forbidden.status_code == unknown.status_code == 404
    assert forbidden.get_json() == not_found("model", "text-davinci")
    assert unknown.get_json() == not_found("model", "no-such-model")
    assert not upstream.requests


@pytest.mark.parametrize(("endpoint", "model", "stream"), CASES)
def test_model_list_enforced_on_every_endpoint(client, app, seeded, upstream, endpoint, model, stream):
    # bob may use gpt-4o-mini only
    resp = call(client, seeded.other_key, endpoint, model, stream)
    if model == "gpt-4o-mini":
        assert resp.status_code == 200
        if stream:
            assert b"[DONE]" in resp.get_data()
    else:
        assert resp.status_code == 404 and resp.get_json() == not_found("model", model)
        assert not upstream.requests
        [row] = log_rows(app)
        assert (row.status, row.error_type, row.model) == (404, "model_not_found", model)


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_list_enforced_including_streams(client, app, seeded, upstream, stream):
    resp = call(client, seeded.other_key, "chat", "gpt-4o-mini:translator", stream)
    assert resp.status_code == 404
    assert resp.get_json() == not_found("prompt", "translator")
    assert not upstream.requests
    set_limits(app, user="bob", allow_prompts=["translator"])
    assert call(client, seeded.other_key, "chat", "gpt-4o-mini:translator", stream).status_code == 200
    assert upstream.last["body"]["messages"][0]["role"] == "system"


def test_prompt_on_a_completion_model_needs_both_grants(client, app, seeded):
    set_limits(app, user="bob", allow_prompts=["translator"])
    resp = call(client, seeded.other_key, "completions", "text-davinci:translator")
    assert resp.get_json() == not_found("model", "text-davinci")


def test_models_list_shows_only_usable_models_and_combos(client, app, seeded):
    assert model_ids(client, seeded.other_key) == ["gpt-4o-mini"]
    set_limits(app, user="bob", allow_prompts=["translator"], allow_models=["embed", "text-davinci"])
    assert model_ids(client, seeded.other_key) == ["embed", "gpt-4o-mini", "gpt-4o-mini:translator",
                                                   "text-davinci", "text-davinci:translator"]
    resp = client.get("/v1/models/text-davinci", headers={"Authorization": f"Bearer {seeded.key}"})
    assert resp.status_code == 200
    hidden = client.get("/v1/models/embed:translator", headers={"Authorization": f"Bearer {seeded.other_key}"})
    assert hidden.status_code == 404 and hidden.get_json() == not_found("model", "embed:translator")


def test_sdk_models_list_parses_the_combos(live, seeded):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    models = list(sdk.models.list())
    assert {m.id for m in models} == {"embed", "gpt-4o-mini", "gpt-4o-mini:translator", "text-davinci",
                                      "text-davinci:translator"}
    assert all(m.object == "model" and m.owned_by == "promptproxy" for m in models)
    combo = next(m for m in models if m.id == "gpt-4o-mini:translator")
    assert combo.model_extra["prompt"] == "translator"
    assert sdk.models.retrieve("gpt-4o-mini:translator").id == "gpt-4o-mini:translator"


def test_key_narrows_its_users_lists(client, app, seeded, upstream):
    set_limits(app, key_id=1, allow_models=["embed"])
    assert model_ids(client, seeded.key) == ["embed"]
    assert call(client, seeded.key, "embeddings", "embed").status_code == 200
    resp = call(client, seeded.key, "chat", "gpt-4o-mini", stream=True)
    assert resp.get_json() == not_found("model", "gpt-4o-mini")
    set_limits(app, key_id=1, allow_models=["gpt-4o-mini"], allow_prompts=["translator"])
    assert call(client, seeded.key, "chat", "gpt-4o-mini:translator").status_code == 200


def test_key_prompt_list_narrows_too(client, app, seeded):
    with app.app_context():
        manage.create_prompt("test", "poet", "Answer in verse.")
        db.session.commit()
    set_limits(app, key_id=1, allow_prompts=["poet"])
    assert call(client, seeded.key, "chat", "gpt-4o-mini:poet").status_code == 200
    resp = call(client, seeded.key, "chat", "gpt-4o-mini:translator")
    assert resp.get_json() == not_found("prompt", "translator")
    assert "gpt-4o-mini:translator" not in model_ids(client, seeded.key)


def test_key_cannot_widen_its_users_lists(client, app, seeded, upstream):
    # bob: gpt-4o-mini only, no prompts; his key (id 2) lists more
    set_limits(app, key_id=2, allow_models=["gpt-4o-mini", "text-davinci", "embed"], allow_prompts=["translator"])
    assert model_ids(client, seeded.other_key) == ["gpt-4o-mini"]
    assert call(client, seeded.other_key, "embeddings", "embed").get_json() == not_found("model", "embed")
    assert call(client, seeded.other_key, "chat", "gpt-4o-mini:translator").get_json() == \
        not_found("prompt", "translator")
    assert call(client, seeded.other_key, "chat", "gpt-4o-mini").status_code == 200
    assert len(upstream.requests) == 1


def test_all_models_flag_covers_models_added_later(client, app, seeded, upstream):
    with app.app_context():
        provider = manage.get_provider("local")
        manage.create_model("test", "brand-new", provider, "brand-new-upstream")
        db.session.commit()
    assert "brand-new" in model_ids(client, seeded.key)  # alice: all models
    assert "brand-new" not in model_ids(client, seeded.other_key)  # bob: a list
    assert call(client, seeded.key, "chat", "brand-new").status_code == 200
    assert upstream.last["body"]["model"] == "brand-new-upstream"


def test_revoking_all_models_takes_effect(client, app, seeded):
    set_limits(app, all_models=False)
    assert call(client, seeded.key, "chat", "gpt-4o-mini").get_json() == not_found("model", "gpt-4o-mini")
    assert model_ids(client, seeded.key) == []
