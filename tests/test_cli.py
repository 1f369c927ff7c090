"""The CLI forms scripts rely on, from an empty database to a working call through `promptproxy serve`."""
from __future__ import annotations

import json
import os
import re
from datetime import datetime
from functools import partial
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import RequestLog, User

from .cli_runner import process_env, run_cli
from .ops.procs import Server


@pytest.fixture
def cli_env(tmp_path, db_url):
    """PROMPTPROXY_* settings for the CLI on the test's database."""
    env = dict(PROMPTPROXY_DATABASE_URL=db_url, PROMPTPROXY_INSTANCE_PATH=str(tmp_path / "inst"),
               PROMPTPROXY_SECRET_KEY="s" * 40, PROMPTPROXY_ENCRYPTION_KEY="e" * 40,
               PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS="1")
    if not os.environ.get("PROMPTPROXY_TEST_DATABASE_URL"):
        # start from a truly empty database: the CLI migrates it
        path = Path(db_url[len("sqlite:///"):])
        path.unlink()
        env["PROMPTPROXY_DATABASE_URL"] = f"sqlite:///{path}"
    return env


@pytest.fixture
def pp(cli_env):
    """`promptproxy ARGS` on the test's database (tests/cli_runner.py: in-process, fails unless exit 0 when ok)."""
    return partial(run_cli, env=cli_env)


@pytest.mark.slow
def test_from_empty_database_to_a_working_call(pp, cli_env, upstream, tmp_path):
    pp("db", "upgrade")
    pp("provider", "create", "local", "--kind", "openai", "--base-url", upstream.url + "/v1",
       "--api-key", "sk-cli-upstream-9876")
    pp("model", "create", "gpt-4o-mini", "--provider", "local", "--upstream-model", "llama3:8b")
    pp("prompt", "create", "translator", "--text", "Translate into French.")
    pp("user", "create", "alice", "--email", "alice@example.com", "--all-models", "--all-prompts")
    out = pp("key", "create", "--user", "alice", "--name", "laptop", "--expires", "2099-01-01").stdout
    key = out.strip().splitlines()[-1]
    assert key.startswith("pp-") and len(key) > 40
    server = Server(process_env(cli_env), tmp_path / "server.log", threads=8)  # `serve` itself: a real process
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)
        resp = client.chat.completions.create(model="gpt-4o-mini:translator",
                                              messages=[{"role": "user", "content": "Good morning"}])
        assert resp.choices[0].message.content == "Bonjour!"
        assert upstream.last["body"]["model"] == "llama3:8b"
        assert upstream.last["body"]["messages"][0] == {"role": "system", "content": "Translate into French."}
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    finally:
        server.stop()
    output = server.output()
    assert "sk-cli-upstream-9876" not in output and key not in output
    rows = [json.loads(line) for line in pp("log", "--user", "alice", "--json").stdout.splitlines()]
    assert [(r["status"], r["model"], r["prompt"]) for r in rows] == [(404, "nope", None),
                                                                      (200, "gpt-4o-mini", "translator")]
    assert rows[1]["input_tokens"] == 11 and rows[1]["output_tokens"] == 7
    listing = pp("key", "list").stdout
    assert key not in listing and key[-4:] in listing
    shown = pp("provider", "show", "local", "--json").stdout
    assert "sk-cli-upstream-9876" not in shown and json.loads(shown)["api_key"] == "sk-…9876"


def test_resource_commands_list_show_update_delete(pp, upstream):
    pp("db", "upgrade")
    pp("provider", "create", "p1", "--base-url", upstream.url + "/v1")
    pp("model", "create", "m1", "--provider", "p1", "--upstream-model", "x", "--kind", "completion")
    pp("prompt", "create", "pr", "--text", "v1 text", "--mode", "replace")
    pp("user", "create", "u1")
    assert "m1" in pp("model", "list").stdout
    assert json.loads(pp("model", "show", "m1", "--json").stdout)["kind"] == "completion"
    pp("model", "update", "m1", "--input-price", "0.15", "--output-price", "0.6")
    assert json.loads(pp("model", "show", "m1", "--json").stdout)["output_price"] == 0.6
    pp("prompt", "update", "pr", "--text", "v2 text")
    versions = [json.loads(x) for x in pp("prompt", "versions", "pr", "--json").stdout.splitlines()]
    assert [(v["version"], v["live"]) for v in versions] == [(2, True), (1, False)]
    pp("prompt", "rollback", "pr", "1")
    assert json.loads(pp("prompt", "show", "pr", "--json").stdout)["text"] == "v1 text"
    pp("user", "update", "u1", "--rpm", "5", "--allow-model", "m1")
    shown = json.loads(pp("user", "show", "u1", "--json").stdout)
    assert shown["rpm"] == 5 and shown["allowed_models"] == ["m1"] and "password_hash" not in shown
    key_id = pp("key", "create", "--user", "u1").stdout.splitlines()[0].split()[2]
    pp("key", "revoke", key_id)
    assert "revoked" in pp("key", "list", "--user", "u1").stdout
    assert pp("provider", "delete", "p1", ok=False).exit_code == 1
    pp("model", "delete", "m1")
    pp("provider", "delete", "p1")
    pp("user", "delete", "u1")
    assert "u1" not in pp("user", "list").stdout


def test_provider_dialect_flags_create_show_update(pp, upstream):
    pp("db", "upgrade")
    pp("provider", "create", "native", "--base-url", upstream.url + "/v1", "--responses-api",
       "--reasoning-effort")
    shown = json.loads(pp("provider", "show", "native", "--json").stdout)
    assert (shown["responses_api"], shown["reasoning_effort"]) == (True, True)
    out = pp("provider", "update", "native", "--no-responses-api").stdout
    assert "responses_api" in out and "reasoning_effort" not in out
    shown = json.loads(pp("provider", "show", "native", "--json").stdout)
    assert (shown["responses_api"], shown["reasoning_effort"]) == (False, True)
    pp("provider", "update", "native", "--responses-api", "--no-reasoning-effort")
    assert "responses_api: True" in pp("provider", "show", "native").stdout
    pp("provider", "create", "plain", "--base-url", upstream.url + "/v1")
    shown = json.loads(pp("provider", "show", "plain", "--json").stdout)
    assert (shown["responses_api"], shown["reasoning_effort"]) == (False, False)


def test_responses_api_is_refused_on_an_anthropic_provider(pp, upstream):
    pp("db", "upgrade")
    proc = pp("provider", "create", "claude", "--kind", "anthropic", "--base-url", upstream.url,
              "--responses-api", ok=False)
    assert proc.exit_code == 1 and "responses_api applies to OpenAI-compatible providers only" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "claude" not in pp("provider", "list").stdout
    pp("provider", "create", "claude", "--kind", "anthropic", "--base-url", upstream.url,
       "--reasoning-effort")
    proc = pp("provider", "update", "claude", "--responses-api", ok=False)
    assert proc.exit_code == 1 and "responses_api applies to OpenAI-compatible providers only" in proc.stderr
    assert json.loads(pp("provider", "show", "claude", "--json").stdout)["responses_api"] is False
    pp("provider", "update", "claude", "--no-responses-api")


@pytest.mark.parametrize("args,message", [
    (["model", "create", "m", "--provider", "nope", "--upstream-model", "x"], "no provider `nope`"),
    (["user", "create", "bad name"], "user name must be"),
    (["provider", "create", "p", "--base-url", "ftp://x"], "http:// or https://"),
    (["key", "create", "--user", "ghost"], "no user `ghost`"),
    (["prompt", "create", "a:b", "--text", "x"], "prompt slug must be"),
    (["key", "create", "--user", "x", "--expires", "tomorrow"], "YYYY-MM-DD"),
])
def test_bad_arguments_give_one_line_error_and_nonzero_exit(pp, args, message):
    pp("db", "upgrade")
    proc = pp(*args, ok=False)
    assert proc.exit_code != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_database_schema_is_a_clear_error(pp):
    proc = pp("user", "list", ok=False)
    if os.environ.get("PROMPTPROXY_TEST_DATABASE_URL"):
        pytest.skip("the PostgreSQL test database is already migrated")
    assert proc.exit_code == 1 and "promptproxy db upgrade" in proc.stderr and "Traceback" not in proc.stderr


def test_audit_events_for_cli_changes(pp, cli_env, db_url):
    pp("db", "upgrade")
    pp("user", "create", "u1")
    pp("user", "update", "u1", "--rpm", "3")
    engine = sa.create_engine(cli_env["PROMPTPROXY_DATABASE_URL"])
    with engine.connect() as conn:
        events = conn.execute(sa.text("SELECT actor, action, target FROM audit_events ORDER BY id")).all()
    engine.dispose()
    assert [tuple(e) for e in events] == [("cli", "create", "u1"), ("cli", "update", "u1")]


def test_version_and_help_show_only_this_program():
    runner = CliRunner()
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and re.fullmatch(r"promptproxy \d+\.\d+\.\d+\S*\n", version.output)
    shown = runner.invoke(cli, ["--help"])
    assert shown.exit_code == 0
    options = shown.output.split("Options:")[1].split("Commands:")[0]
    assert re.findall(r"^\s+(-\S+)", options, re.M) == ["--version", "--help"]
    for leftover in ("--env-file", "dotenv", "--app", "--debug", "FLASK"):
        assert leftover not in shown.output
    for command in ("serve", "create-admin", "provider", "model", "prompt", "user", "key", "log", "apply", "export",
                    "db"):
        assert re.search(rf"^  {command} ", shown.output, re.M), command
    refused = runner.invoke(cli, ["-A", "other:app", "user", "list"])
    assert refused.exit_code == 2 and "No such option '-A'" in refused.output


def _log_rows(app) -> None:
    """A served call with a stored prompt, an estimate on a stream, and a refusal with no tokens or cost."""
    with app.app_context():
        manage.create_user("t", "alice", all_models=True)
        alice = db.session.scalar(sa.select(User).where(User.name == "alice"))
        db.session.add_all([
            RequestLog(request_id="r1", created_at=datetime(2026, 3, 4, 5, 6, 7, 890000), user_id=alice.id,
                       model="gpt-4o-mini", prompt="translator", prompt_version=2, endpoint="/v1/chat/completions",
                       status=200, input_tokens=23, output_tokens=16, cost=0.0000129, latency_ms=12.4),
            RequestLog(request_id="r2", created_at=datetime(2026, 3, 4, 5, 6, 8), user_id=alice.id,
                       model="gpt-4o-mini", endpoint="/v1/messages", stream=True, status=200, input_tokens=5,
                       output_tokens=0, usage_estimated=True, cost=0.0, latency_ms=30.0),
            RequestLog(request_id="r3", created_at=datetime(2026, 3, 4, 5, 6, 9), user_id=None, model="nope\x1b[2J",
                       endpoint="/v1/chat/completions", status=404, error_type="model_not_found", latency_ms=0.6),
        ])
        db.session.commit()


def test_log_is_a_table_with_a_header_and_utc_times(app):
    _log_rows(app)
    out = app.test_cli_runner().invoke(cli, ["log"]).output
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "USER", "MODEL", "ENDPOINT", "STATUS", "TOKENS", "IN/OUT", "COST",
                                "$", "LATENCY", "ERROR"]
    assert lines[1].split() == ["2026-03-04T05:06:09Z", "-", "nope\\x1b[2J", "/v1/chat/completions", "404", "-", "-",
                                "1", "ms", "model_not_found"]
    assert lines[2].split() == ["2026-03-04T05:06:08Z", "alice", "gpt-4o-mini", "/v1/messages", "200", "5/0~",
                                "0.000000", "30", "ms", "-"]
    assert lines[3].split() == ["2026-03-04T05:06:07Z", "alice", "gpt-4o-mini:translator@2", "/v1/chat/completions",
                                "200", "23/16", "0.000013", "12", "ms", "-"]
    assert "None" not in out
    # columns line up: every row's status sits under the header's STATUS
    status_end = lines[0].index("STATUS") + len("STATUS")
    assert all(line[status_end - 3:status_end] in ("404", "200") for line in lines[1:])


def test_log_json_times_say_utc(app):
    _log_rows(app)
    rows = [json.loads(x) for x in app.test_cli_runner().invoke(cli, ["log", "--json"]).output.splitlines()]
    assert [r["created_at"] for r in rows] == ["2026-03-04T05:06:09Z", "2026-03-04T05:06:08Z",
                                               "2026-03-04T05:06:07.890000Z"]
    assert rows[0]["input_tokens"] is None and rows[0]["error_type"] == "model_not_found"


def test_log_with_no_requests_says_so(app):
    result = app.test_cli_runner().invoke(cli, ["log"])
    assert result.exit_code == 0 and result.output == "no requests logged yet\n"
