"""One model, several endpoints: a chat model serves /v1/completions too, unless it declares otherwise."""
from __future__ import annotations

import json

import openai
import pytest
import requests
import sqlalchemy as sa

from promptproxy import declarative, manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Model, Provider

from ..conftest import log_rows, rows_when


def sdk(live, key):
    return openai.OpenAI(base_url=live + "/v1", api_key=key, max_retries=0)


def set_endpoints(app, slug, endpoints):
    with app.app_context():
        manage.update_model("t", manage.get_model(slug), endpoints=endpoints)
        db.session.commit()


def test_a_chat_model_serves_completions_without_a_second_registration(live, seeded, upstream, app):
    reply = sdk(live, seeded.key).completions.create(model="gpt-4o-mini:translator", prompt="Say hello")
    assert reply.choices[0].text == "Hello" and reply.model == "gpt-4o-mini"
    assert upstream.last["path"] == "/v1/completions"
    assert upstream.last["body"]["model"] == "real-model-name:latest"
    assert upstream.last["body"]["prompt"] == "Translate the user's words into French.\n\nSay hello"
    chat = sdk(live, seeded.key).chat.completions.create(model="gpt-4o-mini",
                                                         messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "Bonjour!"
    rows = rows_when(app, 2)
    assert [(r.endpoint, r.status, r.model) for r in rows] == [
        ("/v1/completions", 200, "gpt-4o-mini"), ("/v1/chat/completions", 200, "gpt-4o-mini")]
    assert rows[0].cost > 0  # priced as the model, on the completions endpoint too


def test_streamed_completions_on_a_chat_model(live, seeded, upstream):
    stream = sdk(live, seeded.key).completions.create(model="gpt-4o-mini", prompt="hi", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "Hello"
    assert upstream.last["path"] == "/v1/completions"


def test_a_model_limited_to_chat_refuses_completions_in_openai_format(live, seeded, upstream, app):
    set_endpoints(app, "gpt-4o-mini", ["chat"])
    with pytest.raises(openai.BadRequestError) as info:
        sdk(live, seeded.key).completions.create(model="gpt-4o-mini", prompt="hi")
    assert info.value.status_code == 400
    assert info.value.body == {"message": "The model `gpt-4o-mini` does not serve completions; it serves chat.",
                               "type": "invalid_request_error", "param": "model", "code": "wrong_model_kind"}
    assert upstream.requests == []
    assert [(r.status, r.error_type) for r in rows_when(app, 1)] == [(400, "wrong_model_kind")]


@pytest.mark.parametrize(("model", "path", "body", "served"), [
    ("text-davinci", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "completions"),
    ("embed", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "embeddings"),
    ("embed", "/v1/completions", {"prompt": "hi"}, "embeddings"),
    ("gpt-4o-mini", "/v1/embeddings", {"input": "hi"}, "chat, completions"),
])
def test_other_kinds_keep_their_own_endpoints(live, seeded, upstream, model, path, body, served):
    resp = requests.post(live + path, json={"model": model, **body},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10)
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "wrong_model_kind"
    assert resp.json()["error"]["message"].endswith(f"it serves {served}.")
    assert upstream.requests == []


def test_completions_on_an_anthropic_model_is_a_clear_400(live, seeded, claude_model, claude, app):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(live, seeded.key).completions.create(model="claude", prompt="hi")
    error = info.value.body
    assert error["code"] == "unsupported_for_provider" and error["param"] == "model"
    assert "anthropic" in error["message"] and "no completions endpoint" in error["message"]
    assert claude.requests == []
    with app.app_context():
        assert manage.served_endpoints(manage.get_model("claude")) == ["chat"]


def test_a_fallback_that_does_not_serve_completions_is_skipped(live, seeded, upstream, app):
    with app.app_context():
        provider = db.session.scalar(sa.select(Provider))
        down = manage.create_provider("t", "down", "openai", "http://127.0.0.1:9/v1")
        manage.create_model("t", "primary", down, "x", fallbacks=None)
        manage.create_model("t", "chat-only", provider, "y", endpoints=["chat"])
        manage.create_model("t", "both", provider, "z")
        manage.update_model("t", manage.get_model("primary"), fallbacks=["chat-only", "both"])
        db.session.commit()
    reply = sdk(live, seeded.key).completions.create(model="primary", prompt="hi")
    assert reply.choices[0].text == "Hello"
    assert [r["body"]["model"] for r in upstream.requests] == ["z"]


# -- the guards, on create and on update; a refused change changes nothing -----------------------------------
BAD = [
    ("chat", "endpoints must be a list of names"),
    (["chat", 7], "endpoints must be a list of names"),
    (["chat", "telepathy"], "unknown endpoint telepathy; choose from chat, completions, embeddings"),
    (["completions"], "a chat model must serve chat"),
    (["chat", "embeddings"], "embeddings stay separate: an embedding model serves only embeddings"),
]


@pytest.mark.parametrize(("endpoints", "message"), BAD)
def test_bad_endpoints_are_refused_on_create(app, seeded, endpoints, message):
    with app.app_context():
        provider = db.session.scalar(sa.select(Provider))
        with pytest.raises(manage.ManageError, match=message):
            manage.create_model("t", "new", provider, "m", endpoints=endpoints)
        db.session.rollback()
        assert db.session.scalar(sa.select(Model).where(Model.slug == "new")) is None


@pytest.mark.parametrize(("endpoints", "message"), BAD)
def test_bad_endpoints_are_refused_on_update(app, seeded, endpoints, message):
    with app.app_context():
        audits = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
        with pytest.raises(manage.ManageError, match=message):
            manage.update_model("t", manage.get_model("gpt-4o-mini"), endpoints=endpoints)
        db.session.rollback()
        assert manage.get_model("gpt-4o-mini").endpoints is None
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == audits


def test_an_embedding_model_serves_embeddings_only(app, seeded):
    with app.app_context():
        with pytest.raises(manage.ManageError, match="embeddings stay separate"):
            manage.update_model("t", manage.get_model("embed"), endpoints=["embeddings", "chat"])


REFUSED = r"the provider `anthropic` \(anthropic\) cannot serve completions"


def test_an_anthropic_provider_cannot_be_told_to_serve_completions(app, seeded, claude_model):
    with app.app_context():
        anthropic = manage.get_provider("anthropic")
        with pytest.raises(manage.ManageError, match=REFUSED):
            manage.create_model("t", "claude-2", anthropic, "c", endpoints=["chat", "completions"])
        db.session.rollback()
        with pytest.raises(manage.ManageError, match=REFUSED):
            manage.update_model("t", manage.get_model("claude"), endpoints=["chat", "completions"])
        db.session.rollback()
        manage.update_model("t", manage.get_model("gpt-4o-mini"), endpoints=["chat", "completions", "chat"])
        assert manage.get_model("gpt-4o-mini").endpoints is None  # the default, stored as such
        manage.update_model("t", manage.get_model("text-davinci"), endpoints=["completions", "chat"])
        db.session.commit()
        with pytest.raises(manage.ManageError, match=REFUSED):
            manage.update_model("t", manage.get_model("text-davinci"), provider=anthropic)
        db.session.rollback()
        assert manage.get_model("text-davinci").provider.name == "local"


def test_cli_declares_shows_and_resets_endpoints(app, seeded):
    runner = app.test_cli_runner()
    out = runner.invoke(cli, ["model", "create", "vllm", "--provider", "local", "--upstream-model", "m",
                              "--endpoints", "chat"])
    assert out.exit_code == 0, out.output
    shown = json.loads(runner.invoke(cli, ["model", "show", "vllm", "--json"]).output)
    assert shown["endpoints"] == ["chat"]
    listed = runner.invoke(cli, ["model", "list"]).output
    assert "vllm\tchat\tchat\tlocal" in listed and "gpt-4o-mini\tchat\tchat,completions\tlocal" in listed
    assert runner.invoke(cli, ["model", "update", "vllm", "--endpoints", ""]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["model", "show", "vllm", "--json"]).output)["endpoints"] == [
        "chat", "completions"]
    bad = runner.invoke(cli, ["model", "update", "vllm", "--endpoints", "chat,images"])
    assert bad.exit_code != 0 and "unknown endpoint images" in bad.output


def test_export_and_apply_carry_declared_endpoints(app, seeded):
    with app.app_context():
        manage.update_model("t", manage.get_model("gpt-4o-mini"), endpoints=["chat"])
        db.session.commit()
        exported, _ = declarative.export_data()
        by_slug = {m["slug"]: m for m in exported["models"]}
        assert by_slug["gpt-4o-mini"]["endpoints"] == ["chat"] and "endpoints" not in by_slug["text-davinci"]
        by_slug["gpt-4o-mini"]["endpoints"] = ["chat", "completions"]
        by_slug["vllm"] = {"slug": "vllm", "provider": "local", "upstream_model": "m", "endpoints": ["chat"]}
        result = declarative.apply({"models": list(by_slug.values())})
        db.session.commit()
        assert manage.get_model("gpt-4o-mini").declared_endpoints == ("chat", "completions")
        assert manage.get_model("vllm").declared_endpoints == ("chat",)
        assert any("endpoints ['chat'] -> ['chat', 'completions']" in c.fields for c in result.changes)


def test_log_rows_of_refused_calls_keep_the_model_name(live, seeded, app):
    set_endpoints(app, "gpt-4o-mini", ["chat"])
    with pytest.raises(openai.BadRequestError):
        sdk(live, seeded.key).completions.create(model="gpt-4o-mini", prompt="hi")
    assert [(r.model, r.endpoint) for r in log_rows(app)] == [("gpt-4o-mini", "/v1/completions")]
