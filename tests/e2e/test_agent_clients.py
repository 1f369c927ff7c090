"""Real agent clients through the live gateway: Codex CLI, Claude Code, the OpenAI Agents SDK and the openai SDK's
Responses API, each on an OpenAI-compatible model and on an Anthropic one, with a stored prompt.

The CLIs come from `npm ci --prefix tests/e2e/agents` (tests skip without them); they run offline against the
gateway on 127.0.0.1 with a throwaway HOME and a timeout. Upstream answers are scripted per test, in whichever
dialect the gateway speaks to that upstream (chat completions, Responses or Messages).
"""
from __future__ import annotations

import asyncio

import openai
import pytest

from ..conftest import rows_when
from . import clients
from .capture import USAGE_IN, USAGE_OUT
from .conftest import COST, STORED_PROMPT, need

MODELS = ["gpt-4o-mini", "claude"]
UPSTREAM_MODEL = {"gpt-4o-mini": "real-model-name:latest", "claude": "claude-sonnet-4-5-20250929"}
# The inbound format the gateway records for /v1/responses calls (RequestLog.inbound_format).
RESPONSES_INBOUND = "responses"
WEATHER_RESULT = "18C and sunny"


# -- what an upstream received, whatever its dialect ----------------------------------------------------------
def text_of(content) -> str:
    """The text of a message's content: a string, or the joined text parts."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def system_texts(req: dict) -> list[str]:
    """The system/developer texts the upstream got, in order (chat, Responses or Messages body)."""
    body = req["body"]
    if req["path"].split("?")[0].endswith("/messages"):
        system = body.get("system")
        return [system] if isinstance(system, str) else [b["text"] for b in system or []]
    if "messages" in body:
        return [text_of(m["content"]) for m in body["messages"] if m["role"] in ("system", "developer")]
    items = body["input"] if isinstance(body.get("input"), list) else []
    head = [body["instructions"]] if body.get("instructions") else []
    return head + [text_of(i.get("content")) for i in items if i.get("role") in ("system", "developer")]


def user_texts(req: dict) -> list[str]:
    """The user messages' texts the upstream got, in order."""
    body = req["body"]
    messages = body.get("messages") or (body["input"] if isinstance(body.get("input"), list) else [])
    if isinstance(body.get("input"), str):
        return [body["input"]]
    return [text_of(m.get("content")) for m in messages if m.get("role") == "user"]


def tool_results(req: dict) -> list[str]:
    """Tool results carried back to the upstream (chat `tool` messages, function_call_output, tool_result)."""
    body = req["body"]
    out = [m["content"] for m in body.get("messages") or [] if m.get("role") == "tool"]
    out += [i["output"] for i in body.get("input") or [] if isinstance(i, dict) and i.get("type") ==
            "function_call_output"]
    for m in body.get("messages") or []:
        if isinstance(m.get("content"), list):
            out += [text_of(b["content"]) for b in m["content"] if b.get("type") == "tool_result"]
    return [text_of(r) for r in out]


def assert_stored_prompt_first(req: dict, model: str) -> None:
    """The upstream got the provider's model name and the stored prompt ahead of any client system text."""
    assert req["body"]["model"] == UPSTREAM_MODEL[model]
    system = system_texts(req)
    assert system and system[0].startswith(STORED_PROMPT), system[:1]


def assert_one_row(app, model: str, endpoint: str, inbound: str, stream: bool = True, calls: int = 1):
    """The call's request-log row: 200, its endpoint and dialect, the stored prompt, tokens and cost."""
    rows = rows_when(app, 1)
    assert len(rows) == 1, [(r.endpoint, r.status) for r in rows]
    row = rows[0]
    assert (row.status, row.endpoint, row.inbound_format) == (200, endpoint, inbound)
    assert (row.model, row.prompt, row.stream) == (model, "translator", stream)
    assert (row.input_tokens, row.output_tokens) == (USAGE_IN * calls, USAGE_OUT * calls)
    assert row.cost == pytest.approx(COST[model] * calls)


# -- Codex CLI: `codex exec` over the Responses API ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_codex_exec_one_turn(model, live, models, script, app, tmp_path):
    need(clients.CODEX, "Codex CLI")
    answers = script(model, "Bonjour, Codex!")
    done = clients.run_codex(live, models.key, f"{model}:translator", "say hi", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "Bonjour, Codex!"
    [sent] = answers.calls
    assert_stored_prompt_first(sent, model)
    assert user_texts(sent)[-1].endswith("say hi")
    assert any("You are a coding agent running in the Codex CLI" in t for t in system_texts(sent))
    assert_one_row(app, model, "/v1/responses", RESPONSES_INBOUND)


@pytest.mark.slow
def test_codex_runs_a_tool_and_sends_its_output_back(live, models, script, app, tmp_path):
    need(clients.CODEX, "Codex CLI")
    answers = script("gpt-4o-mini", ("exec_command", {"cmd": "echo tool-ran-here"}), "Done.")
    done = clients.run_codex(live, models.key, "gpt-4o-mini:translator", "run echo", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "Done."
    first, second = answers.calls
    assert_stored_prompt_first(second, "gpt-4o-mini")
    assert any("tool-ran-here" in r for r in tool_results(second))
    rows = rows_when(app, 2)
    assert [(r.endpoint, r.status) for r in rows] == [("/v1/responses", 200)] * 2


def test_codex_with_a_wrong_key_exits_non_zero(live, models, tmp_path):
    need(clients.CODEX, "Codex CLI")
    done = clients.run_codex(live, "pp-not-a-key", "gpt-4o-mini:translator", "say hi", tmp_path)
    assert done.returncode != 0
    assert done.stdout.strip() == ""
    assert "401" in done.stderr or "nauthorized" in done.stderr


# -- Claude Code: `claude -p` over /v1/messages ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_claude_code_print_one_turn(model, live, models, script, app, tmp_path):
    need(clients.CLAUDE, "Claude Code")
    answers = script(model, "Bonjour, Claude!")
    done = clients.run_claude(live, models.key, f"{model}:translator", "say hi", tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.strip() == "Bonjour, Claude!"
    [sent] = answers.calls
    assert_stored_prompt_first(sent, model)
    assert user_texts(sent)[0].endswith("say hi")
    assert_one_row(app, model, "/v1/messages", "anthropic")


@pytest.mark.slow
def test_claude_code_with_x_api_key(live, models, script, app, tmp_path):
    need(clients.CLAUDE, "Claude Code")
    script("gpt-4o-mini", "Bonjour!")
    done = clients.run_claude(live, models.key, "gpt-4o-mini:translator", "say hi", tmp_path, api_key_header=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.strip() == "Bonjour!"
    assert_one_row(app, "gpt-4o-mini", "/v1/messages", "anthropic")


@pytest.mark.slow
def test_claude_code_runs_a_tool_and_sends_its_result_back(live, models, script, app, tmp_path):
    need(clients.CLAUDE, "Claude Code")
    answers = script("gpt-4o-mini", ("Bash", {"command": "echo tool-ran-here", "description": "Print"}), "Done.")
    done = clients.run_claude(live, models.key, "gpt-4o-mini:translator", "run echo", tmp_path,
                              "--allowedTools", "Bash(echo:*)")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.strip() == "Done."
    first, second = answers.calls
    assert_stored_prompt_first(second, "gpt-4o-mini")
    assert any("tool-ran-here" in r for r in tool_results(second))
    assert [(r.endpoint, r.status) for r in rows_when(app, 2)] == [("/v1/messages", 200)] * 2


def test_claude_code_with_a_wrong_key_exits_non_zero(live, models, tmp_path):
    need(clients.CLAUDE, "Claude Code")
    done = clients.run_claude(live, "pp-not-a-key", "gpt-4o-mini:translator", "say hi", tmp_path)
    assert done.returncode != 0
    assert "401" in done.stdout + done.stderr or "nvalid" in done.stdout + done.stderr


# -- openai SDK: client.responses.create / .stream ------------------------------------------------------------
@pytest.fixture
def sdk(live, models):
    """The official OpenAI client pointed at the gateway."""
    return openai.OpenAI(base_url=live + "/v1", api_key=models.key, max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_responses_create_whole(model, sdk, script, app):
    answers = script(model, "Bonjour!")
    resp = sdk.responses.create(model=f"{model}:translator", instructions="Be brief.", input="Good morning")
    assert resp.output_text == "Bonjour!"
    assert resp.status == "completed"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (USAGE_IN, USAGE_OUT)
    [sent] = answers.calls
    assert_stored_prompt_first(sent, model)
    assert "Be brief." in system_texts(sent)[0] + "".join(system_texts(sent)[1:])
    assert user_texts(sent) == ["Good morning"]
    assert_one_row(app, model, "/v1/responses", RESPONSES_INBOUND, stream=False)


@pytest.mark.parametrize("model", MODELS)
def test_responses_stream(model, sdk, script, app):
    answers = script(model, "Bonjour tout le monde!")
    with sdk.responses.stream(model=f"{model}:translator", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Hello everyone"}]}]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Bonjour tout le monde!"
    assert final.output_text == "Bonjour tout le monde!"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (USAGE_IN, USAGE_OUT)
    [sent] = answers.calls
    assert_stored_prompt_first(sent, model)
    assert user_texts(sent) == ["Hello everyone"]
    assert_one_row(app, model, "/v1/responses", RESPONSES_INBOUND)


# -- OpenAI Agents SDK: an Agent with one function tool --------------------------------------------------------
def weather_agent(live: str, key: str, model: str, api: str, called: list[str]):
    """An Agent on the gateway with one tool, over the Responses API or chat completions."""
    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        called.append(city)
        return WEATHER_RESULT

    client = openai.AsyncOpenAI(base_url=live + "/v1", api_key=key, max_retries=0)
    kind = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    return Agent(name="Weather", instructions="Answer briefly.", tools=[get_weather],
                 model=kind(model=f"{model}:translator", openai_client=client))


def run_agent(agent, prompt: str, streamed: bool):
    """Run the agent to its final output (streamed or not), with tracing off (it would call out)."""
    from agents import RunConfig, Runner

    config = RunConfig(tracing_disabled=True)
    if not streamed:
        return Runner.run_sync(agent, prompt, run_config=config)

    async def consume():
        result = Runner.run_streamed(agent, prompt, run_config=config)
        async for _ in result.stream_events():
            pass
        return result
    return asyncio.run(consume())


@pytest.mark.parametrize(("model", "api", "streamed"), [
    ("gpt-4o-mini", "responses", False), ("gpt-4o-mini", "responses", True), ("claude", "responses", False),
    ("gpt-4o-mini", "chat", False), ("claude", "chat", True)])
def test_agents_sdk_calls_its_tool_then_answers(model, api, streamed, live, models, script, app):
    answers = script(model, ("get_weather", {"city": "Paris"}), "Il fait 18C à Paris.")
    called: list[str] = []
    result = run_agent(weather_agent(live, models.key, model, api, called), "Weather in Paris?", streamed)
    assert result.final_output == "Il fait 18C à Paris."
    assert called == ["Paris"]
    first, second = answers.calls
    for sent in (first, second):
        assert_stored_prompt_first(sent, model)
        assert any("Answer briefly." in t for t in system_texts(sent))
    assert user_texts(first) == ["Weather in Paris?"]
    assert tool_results(second) == [WEATHER_RESULT]
    endpoint = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    rows = rows_when(app, 2)
    assert [(r.endpoint, r.status, r.model, r.prompt) for r in rows] == [(endpoint, 200, model, "translator")] * 2
    assert sum(r.input_tokens for r in rows) == 2 * USAGE_IN
    assert [r.stream for r in rows] == [streamed] * 2
    assert {r.inbound_format for r in rows} == {RESPONSES_INBOUND if api == "responses" else "openai"}
