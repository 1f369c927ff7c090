"""Run Codex and Claude Code against the capture server and save what they send as tests/fixtures/agents/*.

Usage: .venv/bin/python scripts/capture_agents.py [--out tests/fixtures/agents]
(needs `npm ci --prefix tests/e2e/agents`). Re-run it after bumping a client's pin and review the diff.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import clients  # noqa: E402
from tests.e2e.capture import CaptureServer  # noqa: E402

KEY = "sk-capture-not-a-real-key"


def scenarios():
    """(client dir, scenario, tool_first, client version, note, run(base_url, tmp) -> CompletedProcess)."""
    codex = f"codex-cli {clients.installed_version('@openai/codex')}"
    claude = f"claude-code {clients.installed_version('@anthropic-ai/claude-code')}"
    return [
        ("codex", "exec_turn", False, codex, "codex exec, one turn, stored-prompt model name",
         lambda url, tmp: clients.run_codex(url, KEY, "m:prompt", "say hi", tmp)),
        ("codex", "exec_tool_turn", True, codex, "codex exec; the first answer is an exec_command call",
         lambda url, tmp: clients.run_codex(url, KEY, "m:prompt", "run echo", tmp)),
        ("claude_code", "print_turn", False, claude, "claude -p with ANTHROPIC_AUTH_TOKEN (Bearer)",
         lambda url, tmp: clients.run_claude(url, KEY, "m:prompt", "say hi", tmp)),
        ("claude_code", "print_turn_api_key", False, claude, "claude -p with ANTHROPIC_API_KEY (x-api-key)",
         lambda url, tmp: clients.run_claude(url, KEY, "m", "say hi", tmp, api_key_header=True)),
        ("claude_code", "print_tool_turn", True, claude, "claude -p; the first answer is a Bash tool_use",
         lambda url, tmp: clients.run_claude(url, KEY, "m", "run echo", tmp, "--allowedTools", "Bash(echo:*)")),
    ]


def capture(out: Path) -> None:
    """Run every scenario against a fresh capture server and write one fixture per request."""
    for client_dir, name, tool_first, version, note, run in scenarios():
        server = CaptureServer(tool_first=tool_first).start()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                done = run(server.url, Path(tmp))
        finally:
            server.stop()
        target = out / client_dir
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob(f"{name}-*.json"):
            old.unlink()
        result = {"exit_code": done.returncode, "stdout": done.stdout, "stderr_tail": done.stderr[-2000:]}
        for req in server.requests:
            path = target / f"{name}-{req['seq']:02d}.json"
            doc = {"client": version, "scenario": note, "request_count": len(server.requests),
                   "client_result": result, **req}
            path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            print(f"{path}: {req['method']} {req['path']}")
        print(f"  {name}: exit {done.returncode}, stdout {done.stdout.strip()!r}")


def main() -> None:
    """Parse arguments and capture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/agents"))
    capture(parser.parse_args().out)


if __name__ == "__main__":
    main()
