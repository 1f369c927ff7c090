"""Stored prompts reach MCP clients only when an admin publishes them: CLI, dashboard, apply/export, migration."""
from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
import yaml
from flask_migrate import downgrade, upgrade
from mcp.shared.exceptions import MCPError

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import Prompt

from ..admin.conftest import admin_web, people  # noqa: F401 - dashboard fixtures
from .conftest import rpc, with_session

DRAFT = "Internal draft: never shown to members."


def add_prompt(app, slug: str, text: str = DRAFT, **fields) -> None:
    with app.app_context():
        manage.create_prompt("t", slug, text, **fields)
        db.session.commit()


def published(app, slug: str) -> bool | None:
    with app.app_context():
        prompt = db.session.scalar(sa.select(Prompt).where(Prompt.slug == slug))
        return None if prompt is None else prompt.mcp


def offered(live, key) -> list[str]:
    """The names prompts/list gives this key, through the official MCP client."""
    listed = with_session(live, key, lambda s: s.list_prompts())
    return sorted(p.name for p in listed.prompts)


def get_error(live, key, name: str):
    """The JSON-RPC error of prompts/get for `name`."""
    async def run(s):
        with pytest.raises(MCPError) as refused:
            await s.get_prompt(name, {})
        return refused.value.error

    return with_session(live, key, run)


# -- the MCP gateway -----------------------------------------------------------------------------------
def test_an_unpublished_prompt_is_neither_listed_nor_gettable(app, live, mcp_seed):
    add_prompt(app, "draft")  # ann may use every prompt; this one is not published
    assert offered(live, mcp_seed.ann) == ["greeter", "tools__review"]
    unpublished, unknown = get_error(live, mcp_seed.ann, "draft"), get_error(live, mcp_seed.ann, "no-such-prompt")
    assert (unpublished.code, unpublished.data) == (unknown.code, unknown.data)
    assert unpublished.message == unknown.message.replace("no-such-prompt", "draft")
    assert "Unknown prompt: draft" in unpublished.message and "never shown" not in unpublished.message


def test_publishing_offers_a_prompt_and_unpublishing_withdraws_it(app, live, mcp_seed):
    add_prompt(app, "draft")
    run = app.test_cli_runner()
    assert run.invoke(cli, ["prompt", "update", "draft", "--mcp"]).exit_code == 0
    assert offered(live, mcp_seed.ann) == ["draft", "greeter", "tools__review"]
    got = with_session(live, mcp_seed.ann, lambda s: s.get_prompt("draft", {}))
    assert got.messages[0].content.text == DRAFT
    assert run.invoke(cli, ["prompt", "update", "draft", "--no-mcp"]).exit_code == 0
    assert offered(live, mcp_seed.ann) == ["greeter", "tools__review"]
    assert "Unknown prompt: draft" in get_error(live, mcp_seed.ann, "draft").message


def test_a_published_prompt_is_still_offered_only_to_keys_that_may_use_it(app, live, mcp_seed):
    add_prompt(app, "board-notes", mcp=True)
    with app.app_context():
        manage.update_user("t", manage.get_user("tia"), allow_prompts=["greeter"])
        db.session.commit()
    assert offered(live, mcp_seed.tia) == ["greeter"]
    assert "Unknown prompt: board-notes" in get_error(live, mcp_seed.tia, "board-notes").message


def test_a_key_whose_only_mcp_use_would_be_unpublished_prompts_is_refused_at_connect(app, live, mcp_seed):
    with app.app_context():
        user = manage.create_user("t", "pia", all_prompts=True)  # every prompt, no MCP server
        _, key = manage.create_key("t", user)
        manage.update_prompt("t", manage.get_prompt("greeter"), mcp=False)  # no prompt is published now
        db.session.commit()
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    refused = rpc(live, key, init)
    assert refused.status_code == 403 and refused.json()["error"]["data"] == {"type": "mcp_access_denied"}
    assert "no stored prompt offered over MCP" in refused.json()["error"]["message"]
    with app.app_context():
        manage.update_prompt("t", manage.get_prompt("greeter"), mcp=True)  # published again: pia may connect
        db.session.commit()
    assert offered(live, key) == ["greeter"]


# -- the command line ----------------------------------------------------------------------------------
def test_cli_create_is_unpublished_by_default_and_the_flags_set_and_clear_it(app):
    run = app.test_cli_runner()
    assert run.invoke(cli, ["prompt", "create", "quiet", "--text", "x"]).exit_code == 0
    made = run.invoke(cli, ["prompt", "create", "loud", "--text", "x", "--mcp"])
    assert made.exit_code == 0, made.output
    assert (published(app, "quiet"), published(app, "loud")) == (False, True)
    assert json.loads(run.invoke(cli, ["prompt", "show", "loud", "--json"]).output)["mcp"] is True
    assert run.invoke(cli, ["prompt", "update", "loud", "--description", "d"]).exit_code == 0
    assert published(app, "loud") is True  # no flag: unchanged
    assert run.invoke(cli, ["prompt", "update", "loud", "--no-mcp"]).exit_code == 0
    assert run.invoke(cli, ["prompt", "update", "quiet", "--mcp"]).exit_code == 0
    assert (published(app, "quiet"), published(app, "loud")) == (True, False)


# -- the dashboard -------------------------------------------------------------------------------------
def test_dashboard_checkbox_publishes_and_unpublishes(admin_web, app):  # noqa: F811
    resp = admin_web.post("/admin/prompts", {"slug": "faq", "text": "Answer from the FAQ.", "mode": "prepend",
                                             "mcp": "y"}, hx="create-form")
    assert resp.status_code == 200 and "Created prompt faq." in resp.get_data(as_text=True)
    admin_web.post("/admin/prompts", {"slug": "plain", "text": "x", "mode": "prepend"}, hx="create-form")
    assert (published(app, "faq"), published(app, "plain")) == (True, False)
    with app.app_context():
        pid = manage.get_prompt("faq").id
    form = admin_web.hx_get(f"/admin/prompts/{pid}/edit", f"row-{pid}").get_data(as_text=True)
    checkbox = re.search(r'<input[^>]*name="mcp"[^>]*>', form).group(0)
    assert 'type="checkbox"' in checkbox and " checked" in checkbox and "Offer over MCP" in form
    edit = {"text": "Answer from the FAQ.", "mode": "prepend"}  # unticked: not sent
    resp = admin_web.post(f"/admin/prompts/{pid}/edit", edit, hx=f"row-{pid}")
    assert resp.status_code == 200 and published(app, "faq") is False
    assert admin_web.post(f"/admin/prompts/{pid}/edit", {**edit, "mcp": "y"}, hx=f"row-{pid}").status_code == 200
    assert published(app, "faq") is True


def test_the_dashboard_change_needs_its_csrf_token(admin_web, app):  # noqa: F811
    admin_web.post("/admin/prompts", {"slug": "faq", "text": "x", "mode": "prepend"})
    with app.app_context():
        pid = manage.get_prompt("faq").id
    resp = admin_web.client.post(f"/admin/prompts/{pid}/edit", data={"text": "x", "mode": "prepend", "mcp": "y"})
    assert resp.status_code == 400 and published(app, "faq") is False
    made = admin_web.client.post("/admin/prompts", data={"slug": "sneaky", "text": "x", "mode": "prepend",
                                                          "mcp": "y"})
    assert made.status_code == 400 and published(app, "sneaky") is None


# -- apply and export ----------------------------------------------------------------------------------
def test_apply_and_export_carry_publishing(app, tmp_path):
    run = app.test_cli_runner()
    path = tmp_path / "config.yaml"
    config = {"prompts": [{"slug": "faq", "text": "Answer from the FAQ.", "mcp": True},
                          {"slug": "plain", "text": "Not offered."}]}
    path.write_text(yaml.safe_dump(config))
    assert run.invoke(cli, ["apply", str(path)]).exit_code == 0
    assert (published(app, "faq"), published(app, "plain")) == (True, False)
    exported = tmp_path / "export.yaml"
    run.invoke(cli, ["export", "--output", str(exported)])
    prompts = {p["slug"]: p for p in yaml.safe_load(exported.read_text())["prompts"]}
    assert (prompts["faq"]["mcp"], prompts["plain"]["mcp"]) == (True, False)
    assert run.invoke(cli, ["apply", str(exported)]).output == "no changes\n"
    config["prompts"][0]["mcp"] = False
    path.write_text(yaml.safe_dump(config))
    changed = run.invoke(cli, ["apply", str(path)])
    assert "~ prompt faq: mcp True -> False" in changed.output and published(app, "faq") is False
    assert run.invoke(cli, ["apply", str(path)]).output == "no changes\n"
    path.write_text(yaml.safe_dump({"prompts": [{"slug": "faq", "text": "x", "mcp": "yes"}]}))
    bad = run.invoke(cli, ["apply", str(path)])
    assert bad.exit_code == 1 and "prompts[0] (faq): `mcp` has the wrong type" in bad.output


def test_exported_publishing_unpublishes_on_the_target(app, tmp_path):
    add_prompt(app, "faq", mcp=True)
    run = app.test_cli_runner()
    exported = tmp_path / "export.yaml"
    run.invoke(cli, ["export", "--output", str(exported)])
    with app.app_context():
        manage.update_prompt("t", manage.get_prompt("faq"), mcp=False)
        db.session.commit()
    assert "~ prompt faq: mcp False -> True" in run.invoke(cli, ["apply", str(exported)]).output
    assert published(app, "faq") is True


# -- the migration -------------------------------------------------------------------------------------
def test_the_migration_leaves_existing_prompts_unpublished(app):
    with app.app_context():
        downgrade(revision="0013_routeops")
        assert "mcp" not in {c["name"] for c in sa.inspect(db.engine).get_columns("prompts")}
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO prompts (slug, description, mode, latest_version, created_at, "
                                 "updated_at) VALUES ('old', '', 'prepend', 1, '2025-01-01', '2025-01-01')"))
        upgrade()
        with db.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT mcp FROM prompts WHERE slug = 'old'")) in (False, 0)
        if db.engine.dialect.name == "sqlite":  # plain ADD COLUMN: ids are still never reused
            with db.engine.connect() as conn:
                assert "AUTOINCREMENT" in conn.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = 'prompts'"))
        db.session.remove()
    add_prompt(app, "new")
    assert published(app, "new") is False
