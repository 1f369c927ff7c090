"""Versions, pinning with @N and @label, rollback and forward, through the real API and the CLI."""
from __future__ import annotations

import openai
import pytest

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.models import AuditEvent, PromptVersion

from ..conftest import log_rows
from .conftest import chat, system_text

V1 = "Translate the user's words into French."
V2 = "Translate the user's words into German."
V3 = "Translate the user's words into Italian."


@pytest.fixture
def two_versions(change):
    """translator has v1 (French) and v2 (German)."""
    change(lambda p: manage.add_version("t", p, V2, note="German now"))


def test_newest_version_is_live_and_at_n_pins_a_version(sdk, upstream, app, two_versions):
    chat(sdk, "gpt-4o-mini:translator")
    assert system_text(upstream.last) == V2
    chat(sdk, "gpt-4o-mini:translator@1")
    assert system_text(upstream.last) == V1
    chat(sdk, "gpt-4o-mini:translator@2")
    assert system_text(upstream.last) == V2
    assert [(r.prompt, r.prompt_version) for r in log_rows(app)] == [("translator", 2), ("translator", 1),
                                                                     ("translator", 2)]


def test_database_ids_work_for_model_and_prompt(sdk, upstream, app, two_versions, change):
    ids = change(lambda p: (manage.get_model("gpt-4o-mini").id, p.id))
    chat(sdk, f"{ids[0]}:{ids[1]}@1")
    assert system_text(upstream.last) == V1
    assert upstream.last["body"]["model"] == "real-model-name:latest"


def test_rollback_pins_live_and_new_versions_do_not_unpin_until_forward(sdk, upstream, app, two_versions, change):
    change(lambda p: manage.set_live("t", p, 1))
    chat(sdk, "gpt-4o-mini:translator")
    assert system_text(upstream.last) == V1
    change(lambda p: manage.add_version("t", p, V3))
    chat(sdk, "gpt-4o-mini:translator")
    assert system_text(upstream.last) == V1, "a new version must not silently replace a pinned live version"
    chat(sdk, "gpt-4o-mini:translator@3")
    assert system_text(upstream.last) == V3
    change(lambda p: manage.set_live("t", p, 2))  # forward to a chosen version
    chat(sdk, "gpt-4o-mini:translator")
    assert system_text(upstream.last) == V2
    change(lambda p: manage.set_live("t", p, None))  # follow the newest again
    chat(sdk, "gpt-4o-mini:translator")
    assert system_text(upstream.last) == V3
    assert [r.prompt_version for r in log_rows(app)] == [1, 1, 3, 2, 3]


def test_labels_point_at_versions_and_move(sdk, upstream, app, two_versions, change):
    change(lambda p: (manage.set_label("t", p, "production", 1), manage.set_label("t", p, "staging", 2)))
    chat(sdk, "gpt-4o-mini:translator@production")
    assert system_text(upstream.last) == V1
    chat(sdk, "gpt-4o-mini:translator@staging")
    assert system_text(upstream.last) == V2
    change(lambda p: manage.set_label("t", p, "production", 2))
    chat(sdk, "gpt-4o-mini:translator@production")
    assert system_text(upstream.last) == V2
    assert [r.prompt_version for r in log_rows(app)] == [1, 2, 2]


@pytest.mark.parametrize(("ref", "named"), [("translator@9", "translator@9"), ("translator@0", "translator@0"),
                                            ("translator@nolabel", "translator@nolabel"), ("nosuch", "nosuch"),
                                            ("nosuch@1", "nosuch")])
def test_unknown_version_label_or_prompt_is_404_prompt_not_found(sdk, upstream, app, two_versions, ref, named):
    with pytest.raises(openai.NotFoundError) as info:
        chat(sdk, f"gpt-4o-mini:{ref}")
    assert info.value.code == "prompt_not_found"
    assert info.value.body["message"] == f"The prompt `{named}` does not exist or you do not have access to it."
    assert upstream.requests == []
    [row] = log_rows(app)
    assert (row.status, row.error_type, row.prompt_version) == (404, "prompt_not_found", None)


@pytest.mark.parametrize("model", ["gpt-4o-mini:translator@", "gpt-4o-mini:@1", "gpt-4o-mini@1", "gpt-4o-mini:",
                                   ":translator"])
def test_malformed_model_string_is_400_with_param_model(sdk, upstream, model):
    with pytest.raises(openai.BadRequestError) as info:
        chat(sdk, model)
    assert (info.value.code, info.value.param) == ("invalid_model", "model")
    assert upstream.requests == []


def test_prompt_access_is_respected_for_users_and_narrowed_keys(make_sdk, seeded, upstream, app, change):
    bob = make_sdk(seeded.other_key)
    chat(bob, "gpt-4o-mini")  # bob may use the model...
    with pytest.raises(openai.NotFoundError) as info:  # ...but not the prompt, same answer as an unknown one
        chat(bob, "gpt-4o-mini:translator@1")
    assert info.value.code == "prompt_not_found"
    assert not any(m.id.startswith("gpt-4o-mini:") for m in bob.models.list())

    def narrowed_key(_):
        manage.create_prompt("t", "other", "Other text.")
        key, raw = manage.create_key("t", manage.get_user("alice"))
        manage.update_key("t", key, allow_prompts=["other"])
        return raw

    narrow = make_sdk(change(narrowed_key, None))
    with pytest.raises(openai.NotFoundError):
        chat(narrow, "gpt-4o-mini:translator")
    chat(narrow, "gpt-4o-mini:other")
    assert system_text(upstream.last) == "Other text."
    assert len(upstream.requests) == 2


def test_versions_are_immutable_rows_and_every_change_is_audited(app, two_versions, change):
    change(lambda p: (manage.set_live("t", p, 1), manage.set_label("t", p, "production", 2)))
    with app.app_context():
        from promptproxy.extensions import db

        texts = [v.text for v in db.session.scalars(db.select(PromptVersion).order_by(PromptVersion.version))]
        actions = [(e.action, e.target) for e in db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id))]
    assert texts == [V1, V2]
    assert ("version", "translator@2") in actions
    assert ("rollback", "translator") in actions and ("label", "translator") in actions


def test_label_validation_and_rollback_to_missing_version_are_refused(app, change):
    for call in (lambda p: manage.set_label("t", p, "12", 1), lambda p: manage.set_label("t", p, "a:b", 1),
                 lambda p: manage.set_label("t", p, "prod", 7), lambda p: manage.set_live("t", p, 7)):
        with pytest.raises(manage.ManageError):
            change(call)


# -- the CLI forms scripts rely on ---------------------------------------------------------------------
@pytest.fixture
def run(app):
    """Invoke the promptproxy CLI in-process against the test app."""
    runner = app.test_cli_runner()

    def invoke(*args):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result

    return invoke


def test_cli_update_versions_label_rollback(run, seeded, sdk, upstream):
    assert run("prompt", "update", "translator", "--text", V2, "--note", "German").output == \
        "prompt translator: saved version 2\n"
    assert run("prompt", "update", "translator", "--params", '{"temperature": {"value": 0}}').output == \
        "prompt translator: saved version 3\n"
    out = run("prompt", "versions", "translator").output.splitlines()
    assert [line.split("\t")[0] for line in out] == ["* 3", "  2", "  1"]
    assert run("prompt", "label", "translator", "production", "2").output == \
        "prompt translator: production -> version 2\n"
    assert run("prompt", "rollback", "translator", "1").output == "prompt translator: live version is now 1\n"
    chat(sdk, "gpt-4o-mini:translator")
    assert system_text(upstream.last) == V1
    chat(sdk, "gpt-4o-mini:translator@production")
    assert system_text(upstream.last) == V2
    chat(sdk, "gpt-4o-mini:translator@3")  # v3 keeps v2's text and adds the parameter
    assert system_text(upstream.last) == V2 and upstream.last["body"]["temperature"] == 0
    versions = run("prompt", "versions", "translator", "--json").output.splitlines()
    assert '"live":true' in versions[2] and '"labels":["production"]' in versions[1]
    assert run("prompt", "rollback", "translator", "0").output == "prompt translator: live version is now the newest\n"


def test_cli_errors_are_one_line_and_exit_1(run, seeded):
    for args, message in ((("prompt", "rollback", "translator", "9"), "prompt `translator` has no version 9"),
                          (("prompt", "label", "translator", "42", "1"), "label must be"),
                          (("prompt", "update", "nosuch", "--text", "x"), "no prompt `nosuch`"),
                          (("prompt", "update", "translator", "--text", "  "), "prompt text must not be empty")):
        result = run(*args)
        assert result.exit_code == 1, args
        assert message in result.output
