"""`promptproxy apply` and `export`: create and update from YAML, idempotent, dry-run, no secrets in clear."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from promptproxy import declarative
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Model, Prompt, PromptVersion, Provider, User

from ..cli_runner import run_cli
from ..conftest import ENC_KEY

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "promptproxy.yaml"
SECRET = "sk-example-secret-0123456789"


@pytest.fixture
def run(app):
    """Invoke the CLI in-process with UPSTREAM_OPENAI_API_KEY set."""
    runner = app.test_cli_runner()

    def invoke(*args, env=None, input=None):
        return runner.invoke(cli, list(args), env={"UPSTREAM_OPENAI_API_KEY": SECRET, **(env or {})}, input=input,
                             catch_exceptions=False)

    return invoke


def counts(app) -> dict:
    """Rows per table that apply may write."""
    with app.app_context():
        return {m.__tablename__: db.session.scalar(sa.select(sa.func.count()).select_from(m))
                for m in (Provider, Model, Prompt, PromptVersion, User, AuditEvent)}


def write(tmp_path, data: dict | str) -> str:
    """A YAML file from a dict (or text)."""
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_example_file_applies_and_second_run_changes_nothing(run, app):
    result = run("apply", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "+ provider openai: kind openai; base_url https://api.openai.com/v1; api_key set" in lines
    assert "+ model gpt-4o-mini: provider openai; upstream_model gpt-4o-mini" in lines
    assert "~ model gpt-4o-mini: fallbacks [] -> ['llama3']" in lines
    assert "+ prompt translator: mode prepend; version 1" in lines
    assert lines[-1] == f"applied {len(lines) - 1} change(s)"
    assert SECRET not in result.output
    before = counts(app)
    assert before["providers"] == 2 and before["models"] == 3 and before["prompt_versions"] == 2
    with app.app_context():
        gw = app.extensions["promptproxy"]
        openai_row = db.session.scalar(sa.select(Provider).where(Provider.name == "openai"))
        assert gw.box.decrypt(openai_row.api_key_encrypted) == SECRET
        assert SECRET not in openai_row.api_key_encrypted
        bot = db.session.scalar(sa.select(User).where(User.name == "ci-bot"))
        assert (bot.allowed_models, bot.allowed_prompts, bot.rpm, bot.max_concurrent) == \
            (["gpt-4o-mini"], ["translator"], 10, 2)
        llama = db.session.scalar(sa.select(Model).where(Model.slug == "llama3"))
        assert llama.upstream_model == "llama3:8b"

    again = run("apply", str(EXAMPLE))
    assert again.output == "no changes\n"
    assert counts(app) == before, "a second run must write nothing (no audit events, no versions)"


def test_dry_run_prints_differences_and_writes_nothing(run, app):
    empty = counts(app)
    result = run("apply", str(EXAMPLE), "--dry-run")
    assert result.exit_code == 0
    assert "+ provider ollama: kind openai; base_url http://127.0.0.1:11434/v1" in result.output
    assert result.output.splitlines()[-1].startswith("dry run: ")
    assert counts(app) == empty

    run("apply", str(EXAMPLE))
    applied = counts(app)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["prompts"][0]["text"] = data["prompts"][0]["text"].replace("{{lang}}", "{{lang}}, politely")
    data["prompts"][0]["labels"] = {"production": 1, "staging": 2}
    data["users"][1]["rpm"] = 20
    data["users"][1]["allowed_prompts"] = ["translator", "support-bot"]
    data["models"][0]["input_price"] = 0.3
    path = write(Path(app.instance_path).parent, data)
    result = run("apply", path, "--dry-run")
    out = result.output
    assert "~ prompt translator: new version 2 (text changed)" in out
    assert "    -You are a translator. Translate everything the user writes into {{lang}}." in out
    assert "    +You are a translator. Translate everything the user writes into {{lang}}, politely." in out
    assert "~ prompt translator: label staging None -> 2" in out
    assert "~ user ci-bot: rpm 10 -> 20; allowed_prompts ['translator'] -> ['translator', 'support-bot']" in out
    assert "~ model gpt-4o-mini: input_price 0.15 -> 0.3" in out
    assert out.splitlines()[-1] == "dry run: 4 change(s) would be made; nothing was written"
    assert counts(app) == applied

    assert run("apply", path).output.splitlines()[-1] == "applied 4 change(s)"
    assert run("apply", path).output == "no changes\n"
    with app.app_context():
        bot = db.session.scalar(sa.select(User).where(User.name == "ci-bot"))
        assert (bot.rpm, bot.allowed_prompts) == (20, ["translator", "support-bot"])


def test_applied_configuration_serves_requests(run, app, make_sdk, upstream, tmp_path):
    config = {
        "providers": [{"name": "local", "base_url": upstream.url + "/v1", "api_key_env": "UPSTREAM_LOCAL_KEY"}],
        "models": [{"slug": "chat", "provider": "local", "upstream_model": "up-model"}],
        "prompts": [{"slug": "pirate", "text": "Talk like a pirate to {{who}}.", "variables": {"who": "matey"},
                     "params": {"temperature": {"value": 0, "locked": True}}}],
        "users": [{"name": "svc", "allowed_models": ["chat"], "allowed_prompts": ["pirate"]}],
    }
    assert run("apply", write(tmp_path, config), env={"UPSTREAM_LOCAL_KEY": "sk-local-9999"}).exit_code == 0
    raw = run("key", "create", "--user", "svc").output.splitlines()[-1]
    sdk = make_sdk(raw)
    sdk.chat.completions.create(model="chat:pirate", messages=[{"role": "user", "content": "hi"}], temperature=1)
    sent = upstream.last
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Talk like a pirate to matey."}
    assert sent["body"]["temperature"] == 0 and sent["body"]["model"] == "up-model"
    assert sent["headers"]["Authorization"] == "Bearer sk-local-9999"


def test_secrets_changes_are_noted_never_printed(run, app, tmp_path):
    config = {"providers": [{"name": "p", "base_url": "https://api.example.com/v1", "api_key": "sk-literal-1111",
                             "headers": {"X-Org": "org-1"}}]}
    run("apply", write(tmp_path, config))
    config["providers"][0]["api_key"] = "sk-literal-2222"
    out = run("apply", write(tmp_path, config)).output
    assert out == "~ provider p: api_key changed\napplied 1 change(s)\n"
    config["providers"][0]["base_url"] = "https://other.example.com/v1"  # a new host keeps the file's key
    out = run("apply", write(tmp_path, config)).output
    assert "base_url https://api.example.com/v1 -> https://other.example.com/v1; api_key kept for the new host" in out
    with app.app_context():
        p = db.session.scalar(sa.select(Provider).where(Provider.name == "p"))
        assert app.extensions["promptproxy"].box.decrypt(p.api_key_encrypted) == "sk-literal-2222"
    del config["providers"][0]["api_key"]
    config["providers"][0]["api_key_env"] = "UPSTREAM_UNSET_VARIABLE_FOR_TEST"
    result = run("apply", write(tmp_path, config))
    assert "warning: provider p: environment variable UPSTREAM_UNSET_VARIABLE_FOR_TEST is not set" in result.output
    assert result.output.endswith("no changes\n")


def test_export_never_writes_secrets_and_applies_back_without_changes(run, app, tmp_path):
    run("apply", str(EXAMPLE))
    with app.app_context():
        from promptproxy import manage

        manage.update_provider("t", manage.get_provider("ollama"), headers={"X-Secret": "hdr-secret-5555"})
        db.session.commit()
    out_file = tmp_path / "export.yaml"
    result = run("export", "--output", str(out_file))
    assert result.exit_code == 0
    text = out_file.read_text()
    assert SECRET not in text and "hdr-secret-5555" not in text and "sk-" not in text
    assert "# - provider openai: an API key is set; export it as UPSTREAM_OPENAI_API_KEY before applying" in text
    data = yaml.safe_load(text)
    assert data["providers"][0] == {"name": "ollama", "kind": "openai", "base_url": "http://127.0.0.1:11434/v1",
                                    "headers_env": "UPSTREAM_OLLAMA_HEADERS", "stream_usage": False, "enabled": True,
                                    "responses_api": False, "reasoning_effort": False}
    assert data["providers"][1]["api_key_env"] == "UPSTREAM_OPENAI_API_KEY"
    assert (data["providers"][1]["responses_api"], data["providers"][1]["reasoning_effort"]) == (True, False)
    translator = next(p for p in data["prompts"] if p["slug"] == "translator")
    assert translator["labels"] == {"production": 1}
    assert "text: |-\n" in text, "multi-line prompts are written as readable blocks"
    assert run("export").output == text
    before = counts(app)
    again = run("apply", str(out_file), env={"UPSTREAM_OLLAMA_HEADERS": '{"X-Secret": "hdr-secret-5555"}'})
    assert again.output == "no changes\n"
    assert counts(app) == before


@pytest.mark.parametrize(("text", "message"), [
    ("providers: {}", "`providers` must be a list"),
    ("nonsense: []", "unknown section(s): nonsense"),
    ("- a\n- b", "the file must be a mapping"),
    ("providers: [{name: p, base_url: 'https://x.example', api_kye: k}]",
     "providers[0] (p): unknown field(s): api_kye"),
    ("models: [{slug: m, provider: p, upstream_model: x, input_price: cheap}]", "`input_price` has the wrong type"),
    ("users: [{name: a}, {name: a}]", "users[1]: `a` appears twice"),
    ("users: [{email: a@example.com}]", "users[0] needs `name`"),
    ("prompts: [{slug: p}]", "prompts[0] (p): a prompt needs `text`"),
    ("prompts: [{slug: p, text: null}]", "prompts[0] (p): `text` has the wrong type"),
    ("x: !!python/object/apply:os.system ['echo pwned']", "not valid YAML"),
    ("providers: [{name: p, base_url: 'ftp://x'}]", "providers[0] (p): base URL must start with http"),
    ("models: [{slug: m, provider: nosuch, upstream_model: x}]", "models[0] (m): no provider `nosuch`"),
    ("users: [{name: u, allowed_models: [nosuch]}]", "users[0] (u): no model `nosuch`"),
    ("prompts: [{slug: p, text: hi, labels: {prod: 3}}]", "prompts[0] (p): prompt `p` has no version 3"),
])
def test_bad_files_fail_with_one_line_naming_the_entry_and_write_nothing(run, app, tmp_path, text, message):
    empty = counts(app)
    result = run("apply", write(tmp_path, text))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert counts(app) == empty


def test_partial_failure_rolls_back_the_whole_file(run, app, tmp_path):
    config = {"providers": [{"name": "ok", "base_url": "https://ok.example.com"}],
              "models": [{"slug": "m", "provider": "ok", "upstream_model": "x", "kind": "sideways"}]}
    result = run("apply", write(tmp_path, config))
    assert result.exit_code == 1 and "models[0] (m): kind must be one of" in result.output
    assert counts(app)["providers"] == 0


def test_kind_of_an_existing_provider_cannot_change(run, app, tmp_path):
    run("apply", write(tmp_path, {"providers": [{"name": "p", "base_url": "https://x.example.com"}]}))
    result = run("apply", write(tmp_path, {"providers": [{"name": "p", "kind": "anthropic"}]}))
    assert result.exit_code == 1 and "kind cannot change (openai -> anthropic)" in result.output


def test_provider_dialect_flags_apply_update_and_round_trip(run, app, tmp_path):
    config = {"providers": [{"name": "p", "base_url": "https://x.example.com/v1", "responses_api": True}]}
    result = run("apply", write(tmp_path, config))
    assert result.exit_code == 0, result.output
    config["providers"][0].update(responses_api=False, reasoning_effort=True)
    result = run("apply", write(tmp_path, config))
    assert "~ provider p: responses_api True -> False; reasoning_effort False -> True" in result.output
    with app.app_context():
        row = db.session.scalar(sa.select(Provider).where(Provider.name == "p"))
        assert (row.responses_api, row.reasoning_effort) == (False, True)
    exported = tmp_path / "export.yaml"
    run("export", "--output", str(exported))
    entry = yaml.safe_load(exported.read_text())["providers"][0]
    assert (entry["responses_api"], entry["reasoning_effort"]) == (False, True)
    assert run("apply", str(exported)).output == "no changes\n"


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "c", "kind": "anthropic", "base_url": "https://api.anthropic.com", "responses_api": True},
     "providers[0] (c): responses_api applies to OpenAI-compatible providers only"),
    ({"name": "c", "base_url": "https://x.example.com/v1", "responses_api": "yes"},
     "providers[0] (c): `responses_api` has the wrong type"),
])
def test_bad_provider_dialect_flags_are_refused(run, app, tmp_path, entry, message):
    result = run("apply", write(tmp_path, {"providers": [entry]}))
    assert result.exit_code == 1 and message in result.output
    assert counts(app)["providers"] == 0


def test_load_uses_safe_yaml_only():
    with pytest.raises(declarative.ConfigFileError):
        declarative.load("!!python/name:os.system\n")
    assert declarative.load("") == {}


def test_scripts_set_up_a_gateway_from_an_empty_database(tmp_path):
    """The console entry point, as a script would run it: migrate, dry-run, apply twice, export."""
    env = {"PROMPTPROXY_DATABASE_URL": f"sqlite:///{tmp_path / 'pp.db'}", "PROMPTPROXY_ENCRYPTION_KEY": ENC_KEY,
           "PROMPTPROXY_SECRET_KEY": "s" * 40, "PROMPTPROXY_INSTANCE_PATH": str(tmp_path),
           "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1", "UPSTREAM_OPENAI_API_KEY": SECRET}

    def pp(*args):
        return run_cli(*args, env=env).stdout  # tests/cli_runner.py: fails the test unless the exit code is 0

    pp("db", "upgrade")
    assert pp("apply", str(EXAMPLE), "--dry-run").splitlines()[-1].startswith("dry run: ")
    assert pp("apply", str(EXAMPLE)).splitlines()[-1].startswith("applied ")
    assert pp("apply", str(EXAMPLE)) == "no changes\n"
    exported = yaml.safe_load(pp("export"))
    assert [p["slug"] for p in exported["prompts"]] == ["support-bot", "translator"]
    assert SECRET not in str(exported)


def test_documented_example_is_the_example_file():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert "```yaml\n" + EXAMPLE.read_text() + "```" in doc
