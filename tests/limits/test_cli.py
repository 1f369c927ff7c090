"""The CLI forms scripts rely on, through the console entry point: exit codes, stored values, audit events."""
from __future__ import annotations

from functools import partial

import pytest
import sqlalchemy as sa

from promptproxy.extensions import db
from promptproxy.models import ApiKey, AuditEvent, Model, User

from ..cli_runner import cli_env, run_cli
from .conftest import chat


@pytest.fixture
def cli(db_url, tmp_path, seeded):
    """`promptproxy ARGS` against the test database (tests/cli_runner.py); the tests check the exit code."""
    return partial(run_cli, env=cli_env(db_url, tmp_path / "cli-instance"), ok=False)


def fetch(app, model, **where):
    with app.app_context():
        row = db.session.scalar(sa.select(model).filter_by(**where))
        db.session.expunge_all()
        return row


def audits(app) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor == "cli")
                                  .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return rows


def test_user_update_full_form(cli, app):
    done = cli("user", "update", "bob", "--rpm", "60", "--tpm", "40000", "--max-concurrent", "4",
               "--budget", "25.5", "--period", "week", "--allow-model", "embed", "--allow-model", "text-davinci",
               "--allow-prompt", "translator", "--all-prompts")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith("updated user bob")
    bob = fetch(app, User, name="bob")
    assert (bob.rpm, bob.tpm, bob.max_concurrent, bob.budget_usd, bob.budget_period) == (60, 40000, 4, 25.5, "week")
    assert bob.allowed_models == ["gpt-4o-mini", "embed", "text-davinci"]  # --allow-* add to the list
    assert bob.allowed_prompts == ["translator"] and bob.all_prompts is True and bob.all_models is False
    [event] = audits(app)
    assert (event.action, event.target_type, event.target) == ("update", "user", "bob")
    assert event.details["rpm"] == 60 and event.details["budget_period"] == "week"
    assert event.details["allowed_models"] == ["gpt-4o-mini", "embed", "text-davinci"]
    done = cli("user", "update", "bob", "--all-models")
    assert done.exit_code == 0 and fetch(app, User, name="bob").all_models is True


def test_key_update_full_form_and_limits_apply_to_requests(cli, app, live, seeded):
    done = cli("key", "update", "1", "--rpm", "1", "--tpm", "500", "--max-concurrent", "2", "--budget", "3",
               "--period", "day", "--allow-model", "gpt-4o-mini", "--allow-prompt", "translator")
    assert done.exit_code == 0, done.stderr
    key = fetch(app, ApiKey, id=1)
    assert (key.rpm, key.tpm, key.max_concurrent, key.budget_usd, key.budget_period) == (1, 500, 2, 3.0, "day")
    assert (key.allowed_models, key.allowed_prompts) == (["gpt-4o-mini"], ["translator"])
    [event] = audits(app)
    assert (event.action, event.target_type) == ("update", "key") and event.target.startswith("1 (")
    assert seeded.key not in event.target  # only prefix and last 4
    assert chat(live, seeded.key).status_code == 200
    assert chat(live, seeded.key).status_code == 429  # the CLI's --rpm 1 is live


def test_key_all_flags_mean_no_narrowing(cli, app):
    assert cli("key", "update", "2", "--no-all-models", "--allow-model", "gpt-4o-mini").exit_code == 0
    assert fetch(app, ApiKey, id=2).allowed_models == ["gpt-4o-mini"]
    done = cli("key", "update", "2", "--all-models", "--all-prompts")
    assert done.exit_code == 0, done.stderr
    key = fetch(app, ApiKey, id=2)
    assert (key.allowed_models, key.allowed_prompts) == (None, None)  # everything its user may use, no more
    assert audits(app)[-1].details == {"all_models": True, "all_prompts": True}


def test_model_update_prices(cli, app, live, seeded, upstream):
    done = cli("model", "update", "gpt-4o-mini", "--input-price", "2.5", "--output-price", "10",
               "--cached-input-price", "1.25")
    assert done.exit_code == 0, done.stderr
    model = fetch(app, Model, slug="gpt-4o-mini")
    assert (model.input_price, model.output_price, model.cached_input_price) == (2.5, 10.0, 1.25)
    [event] = audits(app)
    assert (event.action, event.target, event.details) == (
        "update", "gpt-4o-mini", {"input_price": 2.5, "output_price": 10.0, "cached_input_price": 1.25})
    from ..conftest import log_rows

    assert chat(live, seeded.key).status_code == 200
    [row] = log_rows(app)
    assert row.cost == pytest.approx((11 * 2.5 + 7 * 10) / 1e6)  # the new prices, at request time


@pytest.mark.parametrize(("args", "code", "message"), [
    (("user", "update", "nobody", "--rpm", "1"), 1, "no user `nobody`"),
    (("user", "update", "bob", "--rpm", "-1"), 1, "rpm must be 0 (no limit) or more"),
    (("user", "update", "bob", "--allow-model", "nope"), 1, "no model `nope`"),
    (("user", "update", "bob", "--period", "year"), 2, "'year' is not one of 'day', 'week', 'month'"),
    (("key", "update", "1", "--all-model"), 2, "No such option '--all-model'"),
    (("key", "update", "999", "--rpm", "1"), 1, "no key `999`"),
    (("model", "update", "gpt-4o-mini", "--input-price", "-1"), 1, "input_price must not be negative"),
])
def test_cli_errors_exit_non_zero_and_change_nothing(cli, app, args, code, message):
    done = cli(*args)
    assert done.exit_code == code
    assert message in done.stderr
    assert audits(app) == []
    assert fetch(app, User, name="bob").rpm is None
