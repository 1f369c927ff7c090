"""Run Codex and Claude Code against the capture server and save what they send as tests/fixtures/agents/*.

Usage: .venv/bin/python scripts/capture_agents.py [--out tests/fixtures/agents]
(needs `npm ci --prefix tests/e2e/agents`). Re-run it after bumping a client's pin and review the diff.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e import clients  # noqa: E402
from tests.e2e.capture import CaptureServer  # noqa: E402

KEY = "sk-capture-not-a-real-key"


WEATHER = ("get_weather", {"city": "Paris"})


def agents_sdk(url: str, streamed: bool) -> SimpleNamespace:
    """One Agents SDK run (Responses API model, one function tool, tracing off) against url."""
    import openai
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return "18C and sunny"

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    agent = Agent(name="Weather", instructions="Answer briefly.", tools=[get_weather],
                  model=OpenAIResponsesModel(model="m:prompt", openai_client=client))
    config = RunConfig(tracing_disabled=True)

    async def run():
        if not streamed:
            return await Runner.run(agent, "Weather in Paris?", run_config=config)
        result = Runner.run_streamed(agent, "Weather in Paris?", run_config=config)
        async for _ in result.stream_events():
            pass
        return result
    return SimpleNamespace(returncode=0, stdout=asyncio.run(run()).final_output, stderr="")


def openai_sdk(url: str, streamed: bool) -> SimpleNamespace:
    """client.responses.create, or client.responses.stream, against url."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    if not streamed:
        resp = client.responses.create(model="m:prompt", instructions="Be brief.", input="Good morning")
        return SimpleNamespace(returncode=0, stdout=resp.output_text, stderr="")
    with client.responses.stream(model="m:prompt", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Hello everyone"}]}]) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    return SimpleNamespace(returncode=0, stdout=text, stderr="")


def scenarios():
    """(client dir, scenario, tool_first, client version, note, run(base_url, tmp) -> CompletedProcess)."""
    codex = f"codex-cli {clients.installed_version('@openai/codex')}"
    claude = f"claude-code {clients.installed_version('@anthropic-ai/claude-code')}"
    agents = f"openai-agents {version('openai-agents')} (openai {version('openai')})"
    oai = f"openai-python {version('openai')}"
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
        ("agents_sdk", "runner_tool_turn", WEATHER, agents, "Runner.run, OpenAIResponsesModel, one function tool",
         lambda url, tmp: agents_sdk(url, streamed=False)),
        ("agents_sdk", "runner_streamed_tool_turn", WEATHER, agents, "Runner.run_streamed, same agent",
         lambda url, tmp: agents_sdk(url, streamed=True)),
        ("openai_sdk", "responses_create", False, oai, "client.responses.create(instructions=..., input=str)",
         lambda url, tmp: openai_sdk(url, streamed=False)),
        ("openai_sdk", "responses_stream", False, oai, "client.responses.stream(input=[message])",
         lambda url, tmp: openai_sdk(url, streamed=True)),
    ]


def capture(out: Path) -> None:
    """Run every scenario against a fresh capture server and write one fixture per request."""
    for client_dir, name, tool_first, client, note, run in scenarios():
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
            doc = {"client": client, "scenario": note, "request_count": len(server.requests),
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
