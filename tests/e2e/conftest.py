"""Fixtures for the agent-client tests: an Anthropic upstream beside the OpenAI one, and scripted answers."""
from __future__ import annotations

import os

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from . import clients
from .capture import USAGE_IN, USAGE_OUT, reply

STORED_PROMPT = "Translate the user's words into French."  # prompt `translator` in `seeded`
CLAUDE_PRICES = {"input_price": 3.0, "output_price": 15.0}
# Cost of one scripted answer (USAGE_IN input, USAGE_OUT output tokens) per public model, in USD.
COST = {"gpt-4o-mini": (USAGE_IN * 1.0 + USAGE_OUT * 2.0) / 1e6,
        "claude": (USAGE_IN * CLAUDE_PRICES["input_price"] + USAGE_OUT * CLAUDE_PRICES["output_price"]) / 1e6}


class Script:
    """An upstream handler answering model calls in order with the given replies (the last one repeats).

    A reply is text (str) or a tool call (name, arguments); each goes out in the dialect of the path the gateway
    called (chat completions, Responses or Messages), streamed when the request asked for a stream.
    """

    def __init__(self, server, *replies: str | tuple[str, dict]):
        self.server = server
        self.replies = list(replies)
        self.calls: list[dict] = []

    def __call__(self, req):
        route = req["path"].split("?", 1)[0]
        body = req["body"] if isinstance(req["body"], dict) else {}
        nxt = self.replies[min(len(self.calls), len(self.replies) - 1)]
        answer = reply(route, body, nxt) if isinstance(nxt, str) else reply(route, body, call=nxt)
        if answer is None:
            return self.server.default(req)
        self.calls.append(req)
        status, ctype, payload = answer
        return status, {"Content-Type": ctype}, payload


@pytest.fixture
def models(app, seeded, claude):
    """`gpt-4o-mini` on the OpenAI-compatible upstream (from `seeded`) and `claude` on the Anthropic one."""
    with app.app_context():
        provider = manage.create_provider("t", "anthropic", "anthropic", claude.url,
                                          api_key="sk-ant-upstream-secret-5678")
        manage.create_model("t", "claude", provider, "claude-sonnet-4-5-20250929", **CLAUDE_PRICES)
        db.session.commit()
    return seeded


@pytest.fixture
def upstream_for(upstream, claude):
    """The mock upstream behind a public model name."""
    return {"gpt-4o-mini": upstream, "claude": claude}.get


@pytest.fixture
def script(upstream_for):
    """script(model, *replies) -> the Script now answering for that model's upstream."""
    def make(model: str, *replies: str | tuple[str, dict]) -> Script:
        server = upstream_for(model)
        server.handler = Script(server, *replies)
        return server.handler
    return make


def need(binary, name: str):
    """Skip unless the pinned CLI is installed under tests/e2e/agents (fail instead where CI requires them)."""
    if not binary.exists():
        reason = f"{name} is not installed: run `{clients.INSTALL}` (or `make agents`) first"
        if os.environ.get("PROMPTPROXY_REQUIRE_AGENTS"):
            pytest.fail(reason)
        pytest.skip(reason)
