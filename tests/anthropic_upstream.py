"""A real local Anthropic-format upstream for end-to-end tests: answers from the documented fixtures."""
from __future__ import annotations

import json
from pathlib import Path

from .upstream import Upstream

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "anthropic"


def fixture_json(name: str) -> dict:
    """A JSON fixture."""
    return json.loads((FIXTURES / name).read_text())


def fixture_sse(name: str) -> list[str]:
    """An SSE fixture as its events, each ending in a blank line."""
    text = (FIXTURES / name).read_text().strip()
    return [block + "\n\n" for block in text.split("\n\n")]


def sse_events(name: str) -> list[tuple[str, dict]]:
    """An SSE fixture parsed into (event, data) pairs."""
    out = []
    for block in fixture_sse(name):
        lines = dict(line.split(": ", 1) for line in block.strip().split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


class AnthropicUpstream(Upstream):
    """Messages API: JSON answers, or the fixture event streams when `stream` is set; records requests."""

    text_response = "anthropic_response_text.json"
    tool_response = "anthropic_response_tool_use.json"
    text_stream = "anthropic_stream_text.sse"
    tool_stream = "anthropic_stream_tool_use.sse"

    def default(self, req):
        """Answer like api.anthropic.com, choosing the fixture by whether tools were offered."""
        body = req["body"] or {}
        if req["path"] == "/v1/messages/count_tokens":
            return 200, {"Content-Type": "application/json"}, json.dumps({"input_tokens": 42})
        if req["path"] != "/v1/messages":
            return 404, {"Content-Type": "application/json"}, json.dumps(
                {"type": "error", "error": {"type": "not_found_error", "message": "Not found"}})
        tools = bool(body.get("tools"))
        if body.get("stream"):
            return 200, {"Content-Type": "text/event-stream"}, iter(
                fixture_sse(self.tool_stream if tools else self.text_stream))
        return 200, {"Content-Type": "application/json", "request-id": "req_upstream_1"}, \
            json.dumps(fixture_json(self.tool_response if tools else self.text_response))
