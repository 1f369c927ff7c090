"""MCP servers as a resource: CLI create/show/update/delete, encrypted credentials, the address guard, grants."""
from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import ApiKey, AuditEvent, McpServer, User

SECRET = "sk-mcp-credential-abcdef123456"


@pytest.fixture
def run(app):
    """Invoke the CLI against the test app; returns (exit code, output)."""
    runner = app.test_cli_runner()

    def invoke(*args):
        result = runner.invoke(cli, list(args))
        return result.exit_code, result.output

    return invoke


def server(app, name="gh"):
    with app.app_context():
        found = db.session.scalar(sa.select(McpServer).where(McpServer.name == name))
        db.session.expunge_all()
        return found


def test_create_show_list_never_reveal_credentials(app, run):
    code, out = run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp", "--api-key", SECRET,
                    "--header", "X-Token=hdr-secret-value-987", "--description", "GitHub tools")
    assert code == 0 and "gh__TOOL" in out
    stored = server(app)
    assert SECRET not in stored.api_key_encrypted and stored.api_key_encrypted.startswith("v1:")
    assert "hdr-secret-value-987" not in stored.headers_encrypted
    code, shown = run("mcp", "show", "gh", "--json")
    data = orjson.loads(shown)
    assert data["api_key"] == "sk-…3456" and data["headers"] == ["X-Token"] and data["description"] == "GitHub tools"
    _, listed = run("mcp", "list", "--json")
    for text in (shown, listed):
        assert SECRET not in text and "hdr-secret-value-987" not in text
    with app.app_context():
        audit = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.target_type == "mcp_server")).all()
        assert [a.action for a in audit] == ["create"] and SECRET not in str(audit[0].details)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/mcp", "http://169.254.169.254/mcp", "http://[::1]/mcp",
                                 "file:///etc/passwd", "http://user:pw@example.com/mcp"])
def test_the_address_guard_refuses_private_urls_on_create_and_update(app, run, url):
    assert run("mcp", "create", "ok", "--url", "http://93.184.215.14/mcp")[0] == 0
    app.config["ALLOW_PRIVATE_UPSTREAMS"] = False
    code, out = run("mcp", "create", "bad", "--url", url)
    assert code == 1 and "base URL" in out
    code, out = run("mcp", "update", "ok", "--url", url)
    assert code == 1 and "base URL" in out
    assert server(app, "bad") is None and server(app, "ok").url == "http://93.184.215.14/mcp"


def test_a_new_host_drops_the_stored_credentials(app, run):
    run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp", "--api-key", SECRET, "--header", "X-A=b")
    code, out = run("mcp", "update", "gh", "--url", "http://127.0.0.2:9/mcp")
    assert code == 0 and "api_key, headers, url" in out
    stored = server(app)
    assert stored.api_key_encrypted is None and stored.headers_encrypted is None
    run("mcp", "update", "gh", "--api-key", SECRET, "--timeout", "7", "--disabled")
    stored = server(app)
    assert stored.api_key_hint == "sk-…3456" and stored.timeout == 7 and not stored.enabled


@pytest.mark.parametrize("name", ["a__b", "_a", "a_", "has space", "", "x" * 49, "a/b"])
def test_bad_server_names_are_refused(app, run, name):
    code, out = run("mcp", "create", name, "--url", "http://127.0.0.1:9/mcp")
    assert code != 0 and server(app, name) is None


def test_bad_headers_are_refused_on_create_and_update(app, run):
    code, out = run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp", "--header", "Bad Name=x")
    assert code == 1 and "invalid name or value" in out and server(app) is None
    run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp", "--header", "X-A=b")
    code, out = run("mcp", "update", "gh", "--header", "X:Y=z")
    assert code == 1 and server(app).header_names == ["X-A"]


def test_user_and_key_grants(app, run):
    run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp")
    run("user", "create", "uma")
    code, out = run("user", "update", "uma", "--allow-mcp", "nope")
    assert code == 1 and "no MCP server `nope`" in out
    code, out = run("user", "update", "uma", "--allow-mcp", "gh/bad tool")
    assert code == 1
    assert run("user", "update", "uma", "--allow-mcp", "gh/search", "--allow-mcp", "gh/search")[0] == 0
    with app.app_context():
        uma = db.session.scalar(sa.select(User).where(User.name == "uma"))
        assert uma.allowed_mcp == ["gh/search"] and not uma.all_mcp
        uma_id = uma.id
    assert run("user", "update", "uma", "--all-mcp")[0] == 0
    _, out = run("key", "create", "--user", "uma")
    key_id = out.split()[2]
    assert run("key", "update", key_id, "--allow-mcp", "gh")[0] == 0
    _, shown = run("key", "show", key_id, "--json")
    assert orjson.loads(shown)["allowed_mcp"] == ["gh"]
    assert run("key", "update", key_id, "--clear-mcp")[0] == 0
    assert run("key", "update", key_id, "--no-all-mcp")[0] == 0
    with app.app_context():
        key = db.session.get(ApiKey, int(key_id))
        assert key.allowed_mcp == [] and key.user_id == uma_id
    _, shown = run("user", "show", "uma", "--json")
    assert orjson.loads(shown)["all_mcp"] is True


def test_delete(app, run):
    run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp")
    assert run("mcp", "delete", "gh") == (0, "deleted MCP server gh\n")
    assert server(app) is None
    code, out = run("mcp", "delete", "gh")
    assert code == 1 and "no MCP server `gh`" in out


def test_apply_and_export_round_trip_without_secrets(app, run, tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM_GH_MCP_API_KEY", SECRET)
    path = tmp_path / "pp.yaml"
    path.write_text("mcp_servers:\n  - name: gh\n    url: http://127.0.0.1:9/mcp\n"
                    "    api_key_env: UPSTREAM_GH_MCP_API_KEY\n    description: GitHub\n"
                    "users:\n  - name: uma\n    allowed_mcp: [gh/search]\n")
    code, out = run("apply", str(path))
    assert code == 0 and "+ mcp_server gh: url http://127.0.0.1:9/mcp; api_key set" in out, out
    stored = server(app)
    assert stored.api_key_hint == "sk-…3456" and stored.description == "GitHub"
    with app.app_context():
        assert db.session.scalar(sa.select(User.allowed_mcp).where(User.name == "uma")) == ["gh/search"]
    code, exported = run("export")
    assert code == 0 and SECRET not in exported
    assert "api_key_env: UPSTREAM_GH_MCP_API_KEY" in exported and "- gh/search" in exported
    path.write_text(exported)
    assert run("apply", str(path)) == (0, "no changes\n")
    path.write_text("mcp_servers:\n  - name: gh\n    url: http://127.0.0.1:9/mcp\n    headers: {X-A: b}\n")
    code, out = run("apply", str(path))
    assert code == 0 and "headers changed" in out
    path.write_text("mcp_servers:\n  - name: new\n")
    code, out = run("apply", str(path))
    assert code == 1 and "a new MCP server needs `url`" in out


def test_rotate_encryption_key_re_encrypts_mcp_secrets(app, run):
    from promptproxy.crypto import Box

    run("mcp", "create", "gh", "--url", "http://127.0.0.1:9/mcp", "--api-key", SECRET, "--header", "X-A=b")
    app.config["OLD_ENCRYPTION_KEYS"] = (app.config["ENCRYPTION_KEY"],)
    app.config["ENCRYPTION_KEY"] = "a-brand-new-encryption-key-0123456789"
    new = Box(app.config["ENCRYPTION_KEY"], app.config["OLD_ENCRYPTION_KEYS"])
    app.extensions["promptproxy"].box = new
    code, out = run("rotate-encryption-key")
    assert code == 0 and "re-encrypted 2 secret(s)" in out
    stored = server(app)
    only_new = Box(app.config["ENCRYPTION_KEY"])
    assert only_new.decrypt(stored.api_key_encrypted) == SECRET
    assert orjson.loads(only_new.decrypt(stored.headers_encrypted)) == {"X-A": "b"}
