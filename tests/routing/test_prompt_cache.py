"""Response cache settings on stored prompts: CLI, dashboard, apply/export, and the precedence over the model's."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import yaml

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Prompt, ResponseCacheEntry

from ..admin.conftest import admin_web, people  # noqa: F401 - dashboard fixtures
from .conftest import CHAT, chat
from .test_cache import set_cache


def prompt_cache(app, slug: str = "translator") -> tuple:
    with app.app_context():
        prompt = db.session.scalar(sa.select(Prompt).where(Prompt.slug == slug))
        return (prompt.cache_ttl, prompt.cache_scope) if prompt else None


def set_prompt_cache(app, ttl: int, scope: str | None = None, slug: str = "translator") -> None:
    with app.app_context():
        manage.update_prompt("t", manage.get_prompt(slug), cache_ttl=ttl, cache_scope=scope)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()


# -- the command line ----------------------------------------------------------------------------------
def test_cli_sets_a_prompts_cache_on_create_and_update_and_zero_turns_it_off(app):
    run = app.test_cli_runner()
    made = run.invoke(cli, ["prompt", "create", "faq", "--text", "Answer from the FAQ.", "--cache-ttl", "3600",
                            "--cache-scope", "shared"])
    assert made.exit_code == 0, made.output
    shown = json.loads(run.invoke(cli, ["prompt", "show", "faq", "--json"]).output)
    assert (shown["cache_ttl"], shown["cache_scope"]) == (3600, "shared")
    assert run.invoke(cli, ["prompt", "update", "faq", "--cache-ttl", "60", "--cache-scope", "user"]).exit_code == 0
    assert prompt_cache(app, "faq") == (60, "user")
    assert run.invoke(cli, ["prompt", "update", "faq", "--cache-ttl", "0"]).exit_code == 0
    assert prompt_cache(app, "faq") == (None, "user")
    with app.app_context():
        changes = db.session.scalars(sa.select(AuditEvent.details).where(AuditEvent.action == "update")).all()
    assert changes[-1] == {"cache_ttl": None}


@pytest.mark.parametrize(("args", "message"), [
    (["--cache-ttl", "-1"], "cache TTL must be 0 (off) to 2592000 seconds"),
    (["--cache-ttl", "2592001"], "cache TTL must be 0 (off) to 2592000 seconds"),
    (["--cache-scope", "everyone"], "Invalid value for '--cache-scope'"),
])
def test_cli_refuses_bad_cache_settings_and_changes_nothing(app, args, message):
    run = app.test_cli_runner()
    run.invoke(cli, ["prompt", "create", "faq", "--text", "x", "--cache-ttl", "30"])
    result = run.invoke(cli, ["prompt", "update", "faq", *args])
    assert result.exit_code != 0 and message in result.output
    assert prompt_cache(app, "faq") == (30, "user")
    created = run.invoke(cli, ["prompt", "create", "other", "--text", "x", *args])
    assert created.exit_code != 0 and prompt_cache(app, "other") is None


# -- the dashboard -------------------------------------------------------------------------------------
def test_dashboard_creates_and_edits_a_prompts_cache(admin_web, app):  # noqa: F811
    resp = admin_web.post("/admin/prompts", {"slug": "faq", "text": "Answer from the FAQ.", "mode": "prepend",
                                             "cache_ttl": "120", "cache_scope": "shared"}, hx="create-form")
    assert resp.status_code == 200 and "Created prompt faq." in resp.get_data(as_text=True)
    assert prompt_cache(app, "faq") == (120, "shared")
    with app.app_context():
        pid = manage.get_prompt("faq").id
    form = admin_web.hx_get(f"/admin/prompts/{pid}/edit", f"row-{pid}").get_data(as_text=True)
    assert 'name="cache_ttl"' in form and 'value="120"' in form and "Response cache TTL (seconds)" in form
    edit = {"text": "Answer from the FAQ.", "mode": "prepend", "cache_ttl": "45", "cache_scope": "user"}
    assert admin_web.post(f"/admin/prompts/{pid}/edit", edit, hx=f"row-{pid}").status_code == 200
    assert prompt_cache(app, "faq") == (45, "user")
    admin_web.post(f"/admin/prompts/{pid}/edit", {**edit, "cache_ttl": ""}, hx=f"row-{pid}")
    assert prompt_cache(app, "faq") == (None, "user")  # empty: the model's cache applies


def test_dashboard_refuses_a_bad_ttl_and_changes_nothing(admin_web, app):  # noqa: F811
    admin_web.post("/admin/prompts", {"slug": "faq", "text": "x", "mode": "prepend", "cache_ttl": "30"})
    with app.app_context():
        pid = manage.get_prompt("faq").id
    resp = admin_web.post(f"/admin/prompts/{pid}/edit", {"text": "x", "mode": "prepend", "cache_ttl": "-5"},
                          hx=f"row-{pid}")
    assert resp.status_code == 422 and "Number must be between 0 and 2592000." in resp.get_data(as_text=True)
    assert prompt_cache(app, "faq") == (30, "user")
    made = admin_web.post("/admin/prompts", {"slug": "bad", "text": "x", "mode": "prepend", "cache_scope": "all"},
                          hx="create-form")
    assert made.status_code == 422 and prompt_cache(app, "bad") is None


def test_the_edit_form_needs_its_csrf_token(admin_web, app):  # noqa: F811
    admin_web.post("/admin/prompts", {"slug": "faq", "text": "x", "mode": "prepend"})
    with app.app_context():
        pid = manage.get_prompt("faq").id
    resp = admin_web.client.post(f"/admin/prompts/{pid}/edit", data={"text": "x", "mode": "prepend",
                                                                      "cache_ttl": "60"})
    assert resp.status_code == 400 and prompt_cache(app, "faq") == (None, "user")


# -- apply and export ----------------------------------------------------------------------------------
def test_apply_and_export_carry_a_prompts_cache(app, tmp_path):
    run = app.test_cli_runner()
    path = tmp_path / "config.yaml"
    config = {"prompts": [{"slug": "faq", "text": "Answer from the FAQ.", "cache_ttl": 300, "cache_scope": "shared"},
                          {"slug": "plain", "text": "No cache."}]}
    path.write_text(yaml.safe_dump(config))
    assert run.invoke(cli, ["apply", str(path)]).exit_code == 0
    assert (prompt_cache(app, "faq"), prompt_cache(app, "plain")) == ((300, "shared"), (None, "user"))
    exported = tmp_path / "export.yaml"
    run.invoke(cli, ["export", "--output", str(exported)])
    prompts = {p["slug"]: p for p in yaml.safe_load(exported.read_text())["prompts"]}
    assert (prompts["faq"]["cache_ttl"], prompts["faq"]["cache_scope"]) == (300, "shared")
    assert "cache_ttl" not in prompts["plain"]
    assert run.invoke(cli, ["apply", str(exported)]).output == "no changes\n"
    config["prompts"][0]["cache_ttl"] = 0
    path.write_text(yaml.safe_dump(config))
    changed = run.invoke(cli, ["apply", str(path)])
    assert "~ prompt faq: cache_ttl 300 -> 0" in changed.output and prompt_cache(app, "faq") == (None, "shared")
    assert run.invoke(cli, ["apply", str(path)]).output == "no changes\n"


@pytest.mark.parametrize(("entry", "message"), [
    ({"cache_ttl": "an hour"}, "prompts[0] (faq): `cache_ttl` has the wrong type"),
    ({"cache_ttl": -1}, "prompts[0] (faq): cache TTL must be 0 (off) to 2592000 seconds"),
    ({"cache_scope": "everyone"}, "prompts[0] (faq): cache scope must be one of user, shared"),
])
def test_apply_refuses_bad_cache_settings_and_writes_nothing(app, tmp_path, entry, message):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"prompts": [{"slug": "faq", "text": "x", **entry}]}))
    result = app.test_cli_runner().invoke(cli, ["apply", str(path)])
    assert result.exit_code == 1 and message in result.output
    assert prompt_cache(app, "faq") is None


# -- precedence through the gateway --------------------------------------------------------------------
WITH_PROMPT = {**CHAT, "model": "gpt-4o-mini:translator"}


def test_a_prompts_ttl_caches_calls_using_it_when_the_model_has_none(client, seeded, upstream, app):
    set_prompt_cache(app, 90)
    first, second = chat(client, seeded.key, WITH_PROMPT), chat(client, seeded.key, WITH_PROMPT)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert "x-cache" not in chat(client, seeded.key).headers  # the model alone: no cache
    assert len(upstream.requests) == 2
    with app.app_context():
        entry = db.session.scalars(sa.select(ResponseCacheEntry)).one()
        assert (entry.expires_at - entry.created_at).total_seconds() == pytest.approx(90)


def test_a_prompts_scope_wins_over_the_models_and_zero_falls_back_to_the_model(client, seeded, upstream, app):
    set_cache(app, ttl=60)  # the model: per user
    with app.app_context():
        manage.update_user("t", manage.get_user("bob"), allow_prompts=["translator"])
        db.session.commit()
    set_prompt_cache(app, 600, "shared")
    chat(client, seeded.key, WITH_PROMPT)
    assert chat(client, seeded.other_key, WITH_PROMPT).headers["x-cache"] == "HIT"  # shared by the prompt
    chat(client, seeded.key)
    assert chat(client, seeded.other_key).headers["x-cache"] == "MISS"  # no prompt: the model's per-user cache
    set_prompt_cache(app, 0)
    chat(client, seeded.key, {**WITH_PROMPT, "temperature": 0})
    assert chat(client, seeded.other_key, {**WITH_PROMPT, "temperature": 0}).headers["x-cache"] == "MISS"
    assert chat(client, seeded.key, {**WITH_PROMPT, "temperature": 0}).headers["x-cache"] == "HIT"
    assert len(upstream.requests) == 5
