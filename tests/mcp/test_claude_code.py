"""Claude Code (the pinned CLI) configured with the gateway's /mcp reports the server connected."""
from __future__ import annotations

import subprocess

from ..e2e import clients
from ..e2e.conftest import need


def claude(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    """One `claude` command in a throwaway HOME."""
    return subprocess.run([str(clients.CLAUDE), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=clients.TIMEOUT, check=False)


def test_claude_mcp_list_reports_the_gateway_connected(live, mcp_seed, tools, tmp_path):
    need(clients.CLAUDE, "Claude Code")
    env = clients.claude_env(live, "unused-model-key", tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    added = claude("mcp", "add", "--transport", "http", "--scope", "user", "promptproxy", f"{live}/mcp",
                   "--header", f"Authorization: Bearer {mcp_seed.ann}", env=env, cwd=work)
    assert added.returncode == 0, added.stderr
    listed = claude("mcp", "list", env=env, cwd=work)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("promptproxy"))
    assert f"{live}/mcp" in line and "✔ Connected" in line, listed.stdout


def test_claude_mcp_list_reports_a_refused_key_as_failed(live, mcp_seed, tmp_path):
    need(clients.CLAUDE, "Claude Code")
    env = clients.claude_env(live, "unused-model-key", tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    claude("mcp", "add", "--transport", "http", "--scope", "user", "promptproxy", f"{live}/mcp",
           "--header", f"Authorization: Bearer {mcp_seed.ned}", env=env, cwd=work)
    listed = claude("mcp", "list", env=env, cwd=work)
    line = next(line for line in listed.stdout.splitlines() if line.startswith("promptproxy"))
    assert "Failed to connect" in line and "HTTP 403" in line and "no MCP access" in line, listed.stdout
