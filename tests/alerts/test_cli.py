"""`promptproxy webhook ...` through the console entry point: exit codes, messages, stored values, guard refusals."""
from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Webhook

from ..cli_runner import Result, cli_env, run_cli
from .conftest import deliveries

SECRET = "whsec-canary-5f2e9a"


@pytest.fixture
def cli(db_url, tmp_path):
    """`promptproxy webhook ARGS` (tests/cli_runner.py); private=True allows loopback URLs, as development does."""
    def run(*args: str, private: bool = True) -> Result:
        env = cli_env(db_url, tmp_path / "cli-instance", PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS="1" if private else "0")
        return run_cli("webhook", *args, env=env, ok=False)

    return run


def hooks(app) -> list[Webhook]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Webhook).order_by(Webhook.id)).all()
        db.session.expunge_all()
        return rows


def test_create_list_update_delete(cli, app, receiver):
    done = cli("create", "ops", "--url", receiver.url, "--events", "budget,provider", "--format", "slack",
               "--secret", SECRET)
    assert done.exit_code == 0 and done.stdout.strip() == "created webhook ops (id 1)"
    stored = hooks(app)[0]
    assert stored.events == ["budget", "provider"] and stored.format == "slack"
    assert stored.secret_encrypted.startswith("v1:") and SECRET not in stored.secret_encrypted
    listed = orjson.loads(cli("list", "--json").stdout)
    assert listed == {"id": 1, "name": "ops", "url": receiver.url.split("/hook")[0] + "/…",
                      "events": ["budget", "provider"], "format": "slack", "secret": True, "enabled": True}
    done = cli("update", "ops", "--events", "errors", "--disabled", "--secret", "")
    assert done.exit_code == 0 and done.stdout.strip() == "updated webhook ops: events, enabled, secret"
    stored = hooks(app)[0]
    assert stored.events == ["errors"] and not stored.enabled and stored.secret_encrypted is None
    assert cli("delete", "ops").stdout.strip() == "deleted webhook ops" and hooks(app) == []
    with app.app_context():
        actions = [a.action for a in db.session.scalars(sa.select(AuditEvent).where(
            AuditEvent.target_type == "webhook"))]
        details = orjson.dumps([a.details for a in db.session.scalars(sa.select(AuditEvent))]).decode()
    assert actions == ["create", "update", "delete"] and SECRET not in details and "secret-path" not in details


def test_test_command_reports_delivery_and_failure(cli, app, receiver):
    cli("create", "ops", "--url", receiver.url)
    done = cli("test", "ops")
    assert done.exit_code == 0 and done.stdout.strip() == "test delivery 1 delivered (HTTP 200)"
    receiver.statuses = [500]
    done = cli("test", "ops")
    assert done.exit_code == 1
    assert "test delivery 2 failed: HTTP 500 (status pending; retried by the server)" in done.stdout
    assert [d.status for d in deliveries(app)] == ["delivered", "pending"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("create", "ops", "--url", "http://127.0.0.1:9/h", "--events", "budget,weather"), 1,
     "events must be one or more of budget, errors, provider, key_expiry (unknown: weather)"),
    (("create", "ops", "--url", "http://127.0.0.1:9/h", "--events", ""), 1, "events must be one or more of"),
    (("create", "ops", "--url", "ftp://example.com/h"), 1, "must start with http:// or https://"),
    (("create", "ops", "--url", "https://user:pw@example.com/h"), 1, "must not contain credentials"),
    (("create", "bad:name", "--url", "http://127.0.0.1:9/h"), 1, "webhook name must be"),
    (("create", "ops", "--url", "http://127.0.0.1:9/h", "--format", "xml"), 2, "Invalid value for '--format'"),
    (("create", "ops"), 2, "Missing option '--url'"),
    (("update", "nope", "--url", "http://127.0.0.1:9/h"), 1, "no webhook `nope`"),
    (("delete", "nope"), 1, "no webhook `nope`"),
    (("test", "nope"), 1, "no webhook `nope`"),
])
def test_error_paths_change_nothing(cli, app, args, code, message):
    done = cli(*args)
    assert done.exit_code == code and message in done.stderr and "Traceback" not in done.stderr
    assert hooks(app) == []


def test_duplicate_name_is_refused(cli, app, receiver):
    cli("create", "ops", "--url", receiver.url)
    done = cli("create", "ops", "--url", receiver.url)
    assert done.exit_code == 1 and "webhook `ops` already exists" in done.stderr and len(hooks(app)) == 1


def test_address_guard_on_create_and_update(cli, app, receiver):
    done = cli("create", "ops", "--url", "http://169.254.169.254/latest", private=False)
    assert done.exit_code == 1 and "webhook URL points at a private or special address" in done.stderr
    assert hooks(app) == []
    cli("create", "ops", "--url", "https://hooks.example.com/services/T0/B0/x", private=True)
    for url in ("http://10.1.2.3/h", "http://[::1]/h", "http://localhost/h", "http://2130706433/h"):
        done = cli("update", "ops", "--url", url, "--events", "budget", private=False)
        assert done.exit_code == 1 and "webhook URL" in done.stderr, url
    stored = hooks(app)[0]
    assert stored.url == "https://hooks.example.com/services/T0/B0/x" and len(stored.events) == 4
