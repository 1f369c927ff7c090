"""Streaming fixtures: the official SDK, provider tuning, fast retries, raw SSE reads."""
from __future__ import annotations

import json

import openai
import pytest
import requests

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import flush_logs, rows_when, use_fast_retries


@pytest.fixture(autouse=True)
def fast_retries(request):
    """Real retry logic with millisecond backoff, so fault tests stay fast."""
    use_fast_retries(request, retry_after_cap=20.0)


@pytest.fixture
def sdk(live, seeded):
    """The official OpenAI client pointed at the gateway (its own retries off)."""
    return openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)


def tune(app, name: str = "local", **options) -> None:
    """Change a provider's settings through manage, as the CLI does."""
    with app.app_context():
        manage.update_provider("t", manage.get_provider(name), **options)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()


def post(live, key, body, path="/v1/chat/completions", **kw) -> requests.Response:
    """POST and read the whole answer (SSE included) as bytes."""
    return requests.post(live + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kw)


def events(raw: bytes) -> list:
    """The data payloads of an SSE body: JSON objects, or the string '[DONE]'."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def one_row(app, wait: float = 5.0):
    """The single request-log row, waiting briefly for a stream's row to be queued."""
    rows = rows_when(app, 1, wait)
    assert len(rows) == 1, rows
    return rows[0]


__all__ = ["flush_logs", "tune", "post", "events", "one_row", "rows_when"]
