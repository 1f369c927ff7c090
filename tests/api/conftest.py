"""Fixtures for Claude tests: a local Anthropic-format upstream and a Claude-backed model."""
from __future__ import annotations

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import rows_when, use_fast_retries

CLAUDE_SECRET = "sk-ant-upstream-secret-5678"
# USD per million tokens, Claude Sonnet's list prices: input, output, cache read, cache write.
CLAUDE_PRICES = {"input_price": 3.0, "output_price": 15.0, "cached_input_price": 0.3, "cache_write_price": 3.75}


@pytest.fixture(autouse=True)
def fast_retries(request):
    """Real retry logic with millisecond backoff: tests of upstream errors wait for no backoff."""
    use_fast_retries(request)


@pytest.fixture
def claude_model(app, seeded, claude):
    """Provider `anthropic` (kind anthropic) and model `claude` on it, plus a tool-bearing prompt."""
    with app.app_context():
        provider = manage.create_provider("t", "anthropic", "anthropic", claude.url, api_key=CLAUDE_SECRET)
        manage.create_model("t", "claude", provider, "claude-sonnet-4-5-20250929", **CLAUDE_PRICES)
        db.session.commit()
    return "claude"


def settled_rows(app, count: int = 1, patience: float = 10.0):
    """Log rows once `count` exist: a stream's row is written after its last byte reaches the client."""
    return rows_when(app, count, patience)
