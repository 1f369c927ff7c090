"""Completions, embeddings, the singular aliases and injection modes, through the official SDK."""
from __future__ import annotations

import openai
import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import log_rows


@pytest.fixture
def sdk(live, seeded):
    """The official OpenAI client pointed at the gateway."""
    return openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)


def test_completions_with_stored_prompt_string_and_array(sdk, upstream):
    resp = sdk.completions.create(model="text-davinci:translator", prompt="cat")
    assert resp.choices[0].text == "Hello" and resp.model == "text-davinci"
    assert upstream.last["body"]["prompt"] == "Translate the user's words into French.\n\ncat"
    assert upstream.last["body"]["model"] == "davinci-002"
    sdk.completions.create(model="text-davinci:translator", prompt=["a", "b"])
    assert upstream.last["body"]["prompt"] == ["Translate the user's words into French.\n\na",
                                               "Translate the user's words into French.\n\nb"]


def test_embeddings(sdk, upstream, app):
    resp = sdk.embeddings.create(model="embed", input=["a", "b"])
    assert len(resp.data) == 2 and resp.data[0].embedding == [0.1, 0.2, 0.3]
    assert upstream.last["path"] == "/v1/embeddings"
    assert upstream.last["body"]["model"] == "text-embedding-3-small"
    assert upstream.last["body"]["input"] == ["a", "b"]
    row = log_rows(app)[-1]
    assert (row.endpoint, row.input_tokens, row.status) == ("/v1/embeddings", 5, 200)


def test_singular_aliases_of_the_original(client, seeded, upstream):
    headers = {"Authorization": f"Bearer {seeded.key}"}
    resp = client.post("/v1/chat/completion", json={"model": "gpt-4o-mini:translator",
                                                    "messages": [{"role": "user", "content": "x"}]}, headers=headers)
    assert resp.status_code == 200 and upstream.last["path"] == "/v1/chat/completions"
    resp = client.post("/v1/completion", json={"model": "text-davinci", "prompt": "x"}, headers=headers)
    assert resp.status_code == 200 and upstream.last["path"] == "/v1/completions"


def test_model_and_prompt_by_database_id(app, client, seeded, upstream):
    with app.app_context():
        model_id, prompt_id = manage.get_model("gpt-4o-mini").id, manage.get_prompt("translator").id
    resp = client.post("/v1/chat/completions", json={"model": f"{model_id}:{prompt_id}",
                                                     "messages": [{"role": "user", "content": "x"}]},
                       headers={"Authorization": f"Bearer {seeded.key}"})
    assert resp.status_code == 200
    assert upstream.last["body"]["messages"][0]["content"] == "Translate the user's words into French."


@pytest.mark.parametrize("mode,client_system,expect_status,expect_roles", [
    ("replace", True, 200, ["system", "user"]),
    ("reject", True, 400, None),
    ("reject", False, 200, ["system", "user"]),
])
def test_injection_modes(app, client, seeded, upstream, mode, client_system, expect_status, expect_roles):
    with app.app_context():
        manage.update_prompt("t", manage.get_prompt("translator"), mode=mode)
        db.session.commit()
    messages = ([{"role": "system", "content": "mine"}] if client_system else []) + [{"role": "user", "content": "x"}]
    resp = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini:translator", "messages": messages},
                       headers={"Authorization": f"Bearer {seeded.key}"})
    assert resp.status_code == expect_status
    if expect_roles:
        sent = upstream.last["body"]["messages"]
        assert [m["role"] for m in sent] == expect_roles
        assert sent[0]["content"] == "Translate the user's words into French."
    else:
        assert resp.get_json()["error"]["code"] == "system_not_allowed"


def test_prompt_variables_filled(app, client, seeded, upstream):
    with app.app_context():
        manage.create_prompt("t", "tr", "Translate into {{lang}}.", variables={"lang": "French"})
        db.session.commit()
    headers = {"Authorization": f"Bearer {seeded.key}"}
    body = {"model": "gpt-4o-mini:tr", "messages": [{"role": "user", "content": "x"}],
            "prompt_variables": {"lang": "{{lang}} German"}}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    assert upstream.last["body"]["messages"][0]["content"] == "Translate into {{lang}} German."
    assert "prompt_variables" not in upstream.last["body"]
    body.pop("prompt_variables")
    client.post("/v1/chat/completions", json=body, headers=headers)
    assert upstream.last["body"]["messages"][0]["content"] == "Translate into French."


def test_models_list_respects_allow_list(live, seeded):
    bob = openai.OpenAI(base_url=live + "/v1", api_key=seeded.other_key, max_retries=0)
    assert [m.id for m in bob.models.list()] == ["gpt-4o-mini"]
    assert bob.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        bob.models.retrieve("embed")


def test_models_list_exposes_no_upstream_details(client, seeded):
    text = client.get("/v1/models", headers={"Authorization": f"Bearer {seeded.key}"}).get_data(as_text=True)
    assert "real-model-name" not in text and "127.0.0.1" not in text and "sk-" not in text
