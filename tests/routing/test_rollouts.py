"""Prompt rollouts: a label split over versions by percentage, sticky per user, recorded, in apply/export."""
from __future__ import annotations

from collections import Counter

from click.testing import CliRunner
from flask.cli import ScriptInfo

from promptproxy import declarative, manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.proxy.resolve import rollout_version

from ..conftest import log_rows
from .conftest import CHAT, chat


def two_versions(app) -> int:
    with app.app_context():
        prompt = manage.get_prompt("translator")
        manage.add_version("t", prompt, "Translate into German.")
        db.session.commit()
        return prompt.id


def label(app, *words):
    return CliRunner().invoke(cli, ["prompt", "label", "translator", "production", *words],
                              obj=ScriptInfo(create_app=lambda: app))


def test_split_and_stickiness_over_200_users():
    split = ((1, 90), (2, 10))
    picks = {user: rollout_version(split, user, 7) for user in range(1, 201)}
    share = Counter(picks.values())[2] / 200
    assert 0.04 <= share <= 0.18  # 10 %, binomial sd ~2 %
    assert all(rollout_version(split, user, 7) == version for user, version in picks.items())  # sticky
    other_prompt = [rollout_version(split, user, 8) for user in range(1, 201)]
    assert other_prompt != list(picks.values())  # the hash includes the prompt: not the same users every time


def test_a_rollout_label_serves_each_user_their_version_and_records_it(client, seeded, upstream, app):
    prompt_id = two_versions(app)
    out = label(app, "1=50", "2=50")
    assert out.exit_code == 0, out.output
    assert "production -> version 1 50%, version 2 50%" in out.output
    app.extensions["promptproxy"].catalog.invalidate()
    for _ in range(3):
        assert chat(client, seeded.key, {**CHAT, "model": "gpt-4o-mini:translator@production"}).status_code == 200
    expected = rollout_version(((1, 50), (2, 50)), seeded.user_id, prompt_id)
    rows = log_rows(app)
    assert [r.prompt_version for r in rows] == [expected] * 3
    texts = {"Translate the user's words into French.": 1, "Translate into German.": 2}
    assert texts[upstream.last["body"]["messages"][0]["content"]] == expected
    out = CliRunner().invoke(cli, ["prompt", "compare", "translator", "--json"], obj=ScriptInfo(create_app=lambda: app))
    stats = [__import__("orjson").loads(line) for line in out.output.splitlines()]
    served = {s["version"]: s for s in stats}  # both versions of the rollout are listed, the other at 0
    assert sorted((v, s["requests"], s["errors"]) for v, s in served.items()) == sorted(
        [(expected, 3, 0), (3 - expected, 0, 0)])
    assert served[expected]["cost"] == sum(r.cost for r in rows)
    assert served[expected]["input_tokens"] == sum(r.input_tokens for r in rows)


def test_bad_rollouts_are_refused_and_change_nothing(app, seeded):
    two_versions(app)
    assert label(app, "1").exit_code == 0
    for words, message in ((["1=90", "2=20"], "add up to 100"), (["1=90", "3=10"], "version"),
                           (["1=x"], "VERSION=PERCENT"), (["1", "2"], "VERSION=PERCENT")):
        out = label(app, *words)
        assert out.exit_code == 1 and message in out.output, out.output
    with app.app_context():
        data, _ = declarative.export_data()
    assert next(p for p in data["prompts"] if p["slug"] == "translator")["labels"] == {"production": 1}


def test_export_and_apply_carry_a_rollout(app, seeded):
    two_versions(app)
    assert label(app, "1=90", "2=10").exit_code == 0
    with app.app_context():
        data, _ = declarative.export_data()
        entry = next(p for p in data["prompts"] if p["slug"] == "translator")
        assert entry["labels"] == {"production": {1: 90, 2: 10}}
        entry["labels"] = {"production": {"1": 70, "2": 30}}
        declarative.apply(data)
        db.session.commit()
        again, _ = declarative.export_data()
    assert next(p for p in again["prompts"] if p["slug"] == "translator")["labels"] == {"production": {1: 70, 2: 30}}
