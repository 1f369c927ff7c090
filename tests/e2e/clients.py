"""Run the pinned agent CLIs (Codex, Claude Code) once, offline, against a base URL, with no prompts.

Each run gets a fresh HOME (and CODEX_HOME) and an environment built from nothing, so no user config, proxy or
real key leaks in, and every run is bounded by a timeout.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

AGENTS_DIR = Path(__file__).resolve().parent / "agents"
BIN = AGENTS_DIR / "node_modules" / ".bin"
CODEX = BIN / "codex"
CLAUDE = BIN / "claude"
INSTALL = "npm ci --prefix tests/e2e/agents"
TIMEOUT = 60
KEY_ENV = "PROMPTPROXY_KEY"


def installed_version(package: str) -> str | None:
    """The installed version of an npm package under tests/e2e/agents, or None."""
    manifest = AGENTS_DIR / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def base_env(home: Path) -> dict:
    """A minimal environment: a throwaway HOME, the system PATH, nothing else of the caller's."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def codex_config(base_url: str, model: str) -> str:
    """config.toml for `codex exec`: our provider over the Responses API, no approvals, no sandbox, no phoning home."""
    return f"""model = {json.dumps(model)}
model_provider = "pp"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false

[model_providers.pp]
name = "PromptProxy"
base_url = {json.dumps(base_url.rstrip("/") + "/v1")}
env_key = "{KEY_ENV}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""


def codex_command(prompt: str) -> list[str]:
    """The `codex exec` command line (no git repo needed, the answer alone on stdout)."""
    return [str(CODEX), "exec", "--skip-git-repo-check", prompt]


def run_codex(base_url: str, key: str, model: str, prompt: str, tmp: Path) -> subprocess.CompletedProcess:
    """One non-interactive Codex turn against base_url (the gateway's root, without /v1)."""
    codex_home = tmp / "codex-home"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(base_url, model))
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = base_env(tmp / "home") | {"CODEX_HOME": str(codex_home), KEY_ENV: key}
    return subprocess.run(codex_command(prompt), cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


def claude_env(base_url: str, key: str, home: Path, api_key_header: bool = False) -> dict:
    """Claude Code's environment: our base URL and key, no updater, telemetry, error reports or other traffic."""
    env = base_env(home) | {
        "ANTHROPIC_BASE_URL": base_url.rstrip("/"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no HEAD /api/hello preflight, no metrics, no updates
        "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",  # it retries even a 401, with backoff, for minutes
    }
    env["ANTHROPIC_API_KEY" if api_key_header else "ANTHROPIC_AUTH_TOKEN"] = key
    return env


def claude_command(prompt: str, model: str, *extra: str) -> list[str]:
    """The `claude -p` command line: print mode answers once and exits."""
    return [str(CLAUDE), "-p", prompt, "--model", model, *extra]


def run_claude(base_url: str, key: str, model: str, prompt: str, tmp: Path, *extra: str,
               api_key_header: bool = False) -> subprocess.CompletedProcess:
    """One non-interactive Claude Code turn against base_url (the gateway's root, without /v1)."""
    work = tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = claude_env(base_url, key, tmp / "home", api_key_header)
    return subprocess.run(claude_command(prompt, model, *extra), cwd=work, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
