"""Groups from the CLI and `apply`/`export`: create, update, delete, membership, refusals, `log --group`."""
from __future__ import annotations

import sqlalchemy as sa
import yaml

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Group


def invoke(app, *args):
    """The CLI in-process."""
    return app.test_cli_runner().invoke(cli, list(args))


def group_row(app, name="research"):
    with app.app_context():
        g = db.session.scalar(sa.select(Group).where(Group.name == name))
        if g is None:
            return None
        return {"rpm": g.rpm, "tpm": g.tpm, "max_concurrent": g.max_concurrent, "budget_usd": g.budget_usd,
                "budget_period": g.budget_period, "allowed_models": g.allowed_models, "all_prompts": g.all_prompts,
                "members": [u.name for u in g.members], "description": g.description}


# -- CLI ------------------------------------------------------------------------------------------------------
def test_cli_group_lifecycle_and_membership(app, seeded):
    out = invoke(app, "group", "create", "research", "--rpm", "60", "--tpm", "1000", "--max-concurrent", "4",
                 "--budget", "25", "--period", "week", "--allow-model", "gpt-4o-mini", "--all-prompts",
                 "--description", "ML team")
    assert out.exit_code == 0 and "created group research" in out.output
    assert invoke(app, "user", "update", "alice", "--group", "research").exit_code == 0
    assert invoke(app, "user", "update", "bob", "--group", "research").exit_code == 0
    assert group_row(app) == {"rpm": 60, "tpm": 1000, "max_concurrent": 4, "budget_usd": 25.0,
                              "budget_period": "week", "allowed_models": ["gpt-4o-mini"], "all_prompts": True,
                              "members": ["alice", "bob"], "description": "ML team"}
    shown = invoke(app, "group", "show", "research", "--json").output
    assert '"members":["alice","bob"]' in shown
    assert "research\t2 members\tML team" in invoke(app, "group", "list").output
    assert '"groups":["research"]' in invoke(app, "user", "show", "bob", "--json").output
    out = invoke(app, "group", "update", "research", "--rpm", "0", "--budget", "30", "--name", "ml")
    assert out.exit_code == 0, out.output
    assert group_row(app, "ml")["rpm"] is None and group_row(app, "ml")["budget_usd"] == 30.0
    assert invoke(app, "user", "update", "bob", "--no-group", "ml").exit_code == 0
    assert group_row(app, "ml")["members"] == ["alice"]
    assert invoke(app, "group", "delete", "ml").exit_code == 0
    assert group_row(app, "ml") is None
    with app.app_context():
        actions = db.session.execute(sa.select(AuditEvent.action, AuditEvent.target_type, AuditEvent.target)
                                     .where(AuditEvent.actor == "cli")).all()
    assert ("create", "group", "research") in actions and ("delete", "group", "ml") in actions
    assert ("update", "user", "bob") in actions


def test_cli_refusals_exit_1_with_a_message_and_change_nothing(app, seeded):
    assert invoke(app, "group", "create", "research", "--rpm", "5").exit_code == 0
    cases = [
        (("group", "create", "research"), "group `research` already exists"),
        (("group", "create", "bad name"), "group name must be"),
        (("group", "create", "new", "--allow-model", "nope"), "no model `nope`"),
        (("group", "update", "research", "--rpm", "-3"), "rpm must be 0 (no limit) or more"),
        (("group", "update", "research", "--allow-prompt", "nope"), "no prompt `nope`"),
        (("group", "update", "nope", "--rpm", "1"), "no group `nope`"),
        (("user", "update", "bob", "--group", "nope", "--rpm", "9"), "no group `nope`"),
    ]
    for args, message in cases:
        out = invoke(app, *args)
        assert out.exit_code == 1 and message in out.output, (args, out.output)
    assert group_row(app)["rpm"] == 5 and group_row(app, "new") is None
    with app.app_context():
        bob = manage.get_user("bob")
        assert (bob.rpm, bob.groups) == (None, [])  # the refused group left the user's other changes undone


def test_log_filters_by_group(app, seeded, live):
    from .limits.conftest import chat

    assert invoke(app, "group", "create", "research").exit_code == 0
    assert invoke(app, "user", "update", "bob", "--group", "research").exit_code == 0
    chat(live, seeded.key)
    chat(live, seeded.other_key)
    from .conftest import log_rows

    assert len(log_rows(app)) == 2
    out = invoke(app, "log", "--group", "research", "--json")
    assert out.exit_code == 0 and out.output.count('"user":"bob"') == 1 and '"user":"alice"' not in out.output


# -- apply / export -----------------------------------------------------------------------------------------
def test_apply_creates_groups_and_memberships_and_export_round_trips(app, seeded, tmp_path):
    data = {"groups": [{"name": "research", "description": "ML", "allowed_models": ["gpt-4o-mini"],
                        "budget_usd": 50, "budget_period": "month", "rpm": 100}],
            "users": [{"name": "bob", "groups": ["research"]}, {"name": "carol", "groups": ["research"]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    out = invoke(app, "apply", str(path))
    assert out.exit_code == 0, out.output
    assert "+ group research" in out.output
    assert group_row(app)["members"] == ["bob", "carol"] and group_row(app)["budget_usd"] == 50.0
    again = invoke(app, "apply", str(path))
    assert again.exit_code == 0 and "research" not in again.output  # idempotent
    exported = yaml.safe_load(invoke(app, "export").output)
    [g] = exported["groups"]
    assert (g["name"], g["allowed_models"], g["budget_usd"], g["rpm"]) == ("research", ["gpt-4o-mini"], 50.0, 100)
    assert {u["name"]: u["groups"] for u in exported["users"]}["bob"] == ["research"]
    path.write_text(yaml.safe_dump({"users": [{"name": "bob", "groups": []}]}))
    assert invoke(app, "apply", str(path)).exit_code == 0
    assert group_row(app)["members"] == ["carol"]


def test_apply_refuses_an_unknown_group_and_bad_fields(app, seeded, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"users": [{"name": "bob", "groups": ["nope"]}]}))
    out = invoke(app, "apply", str(path))
    assert out.exit_code == 1 and "users[0] (bob): no group `nope`" in out.output
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rpm": "fast"}]}))
    out = invoke(app, "apply", str(path))
    assert out.exit_code == 1 and "groups[0] (g): `rpm` has the wrong type" in out.output
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad name"}]}))
    out = invoke(app, "apply", str(path))
    assert out.exit_code == 1 and "group name must be" in out.output
    assert group_row(app, "g") is None
