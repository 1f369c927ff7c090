"""Moving a deployment: `export` on one server, `apply` on an empty one, reproduces prompts exactly."""
from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa
import yaml

from promptproxy import create_app
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import Prompt, PromptLabel, PromptVersion

from ..conftest import base_config

SECRET = "sk-moving-secret-0123456789"


@pytest.fixture
def fresh(tmp_path_factory, sqlite_template):
    """A second, empty server on its own SQLite database (the first may be PostgreSQL: a move across both)."""
    instance = tmp_path_factory.mktemp("target")
    url = f"sqlite:///{instance / 'target.db'}"
    shutil.copy(sqlite_template, instance / "target.db")  # migrated once per worker, as `template_db` is
    other = create_app(base_config(url, instance))
    yield other
    other.extensions["promptproxy"].close()
    with other.app_context():
        db.session.remove()
        db.engine.dispose()
    shutil.rmtree(instance, ignore_errors=True)


def invoke(app, *args):
    """Run a CLI command in-process against `app`; it must succeed."""
    result = app.test_cli_runner().invoke(cli, list(args), env={"UPSTREAM_LOCAL_API_KEY": SECRET},
                                          catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def prompts_state(app) -> dict:
    """Every prompt with its whole history, labels and pin, as comparable values."""
    with app.app_context():
        out = {}
        for p in db.session.scalars(sa.select(Prompt).order_by(Prompt.slug)):
            versions = db.session.scalars(sa.select(PromptVersion).where(PromptVersion.prompt_id == p.id)
                                          .order_by(PromptVersion.version))
            labels = db.session.scalars(sa.select(PromptLabel).where(PromptLabel.prompt_id == p.id))
            out[p.slug] = {
                "meta": (p.mode, p.description, p.latest_version, p.live_version),
                "versions": [(v.version, v.text, v.variables, v.tools, v.params, v.note, v.created_by, v.created_at)
                             for v in versions],
                "labels": sorted((lab.label, lab.version) for lab in labels)}
        return out


def build_history(app) -> None:
    """A provider, a model and two prompts: one with three versions, two labels and an older version pinned live."""
    invoke(app, "provider", "create", "local", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1",
           "--api-key", SECRET)
    invoke(app, "model", "create", "m1", "--provider", "local", "--upstream-model", "llama3:8b")
    invoke(app, "prompt", "create", "translator", "--text", "Translate into French.", "--note", "first")
    invoke(app, "prompt", "update", "translator", "--text", "Translate into {{lang}}.\nAnswer only with it.",
           "--variables", '{"lang": "French"}', "--note", "a variable")
    invoke(app, "prompt", "update", "translator", "--text", "Translate into {{lang}}, formally.",
           "--params", '{"temperature": {"value": 0, "locked": true}}')
    invoke(app, "prompt", "label", "translator", "production", "2")
    invoke(app, "prompt", "label", "translator", "staging", "3")
    invoke(app, "prompt", "rollback", "translator", "2")
    invoke(app, "prompt", "create", "plain", "--text", "Be brief.", "--mode", "replace")


def test_export_then_apply_on_an_empty_database_reproduces_history_labels_and_pins(app, fresh, tmp_path):
    build_history(app)
    exported = tmp_path / "move.yaml"
    invoke(app, "export", "--output", str(exported))
    text = exported.read_text()
    assert SECRET not in text
    history = yaml.safe_load(text)["prompts"][1]["versions"]
    assert [v["version"] for v in history] == [1, 2, 3] and history[1]["note"] == "a variable"
    assert str(history[0]["created_at"]).endswith("+00:00")  # an explicit UTC time, not a local guess

    out = invoke(fresh, "apply", str(exported))
    assert "translator: version 3 added from the history" in out

    assert prompts_state(fresh) == prompts_state(app)
    assert prompts_state(fresh)["translator"]["meta"][2:] == (3, 2)  # three versions, version 2 pinned live
    assert invoke(fresh, "apply", str(exported)) == "no changes\n"
    again = tmp_path / "again.yaml"
    invoke(fresh, "export", "--output", str(again))
    assert again.read_text() == text
    # the moved pin and labels serve: version 2's text is live
    shown = yaml.safe_load(invoke(fresh, "prompt", "show", "translator", "--json"))
    assert shown["live_version"] == 2 and shown["text"].startswith("Translate into {{lang}}.\n")


def test_old_export_files_without_history_still_apply(fresh, tmp_path):
    """The format before `versions`: text, labels and pins of versions the file itself creates."""
    old = {"prompts": [{"slug": "bot", "mode": "prepend", "description": "", "text": "Hello.",
                        "labels": {"production": 1}, "live_version": 1}]}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    invoke(fresh, "apply", str(path))
    state = prompts_state(fresh)["bot"]
    assert state["meta"][2:] == (1, 1) and state["labels"] == [("production", 1)]
    assert state["versions"][0][1] == "Hello."
    assert invoke(fresh, "apply", str(path)) == "no changes\n"


def test_a_history_that_differs_from_the_stored_one_is_refused_and_changes_nothing(app, fresh, tmp_path):
    build_history(app)
    exported = tmp_path / "move.yaml"
    invoke(app, "export", "--output", str(exported))
    invoke(fresh, "prompt", "create", "translator", "--text", "Something else entirely.")
    before = prompts_state(fresh)
    result = fresh.test_cli_runner().invoke(cli, ["apply", str(exported)], env={"UPSTREAM_LOCAL_API_KEY": SECRET})
    assert result.exit_code == 1
    assert "prompts[1] (translator): version 1 differs from the stored version 1" in result.output
    assert "drop `versions`" in result.output
    assert prompts_state(fresh) == before


@pytest.mark.parametrize(("versions", "message"), [
    ([{"version": 2, "text": "x"}], "versions must be numbered 1, 2, 3... in order (entry 1)"),
    ([{"version": 1, "text": "x"}, {"version": 3, "text": "y"}], "numbered 1, 2, 3... in order (entry 2)"),
    (["text"], "numbered 1, 2, 3... in order (entry 1)"),
    ([{"version": 1}], "versions[0] needs `text`"),
    ([{"version": 1, "text": "x", "author": "me"}], "unknown field(s): author"),
    ([{"version": 1, "text": "x", "created_at": "yesterday"}], "created_at 'yesterday' is not an ISO 8601 time"),
])
def test_bad_histories_fail_with_one_line_and_write_nothing(fresh, tmp_path, versions, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"prompts": [{"slug": "bot", "versions": versions}]}))
    result = fresh.test_cli_runner().invoke(cli, ["apply", str(path)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert prompts_state(fresh) == {}
