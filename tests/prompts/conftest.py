"""Fixtures for the prompt library: the openai SDK against the live gateway, and a way to change prompts."""
from __future__ import annotations

import openai
import pytest

from promptproxy import manage
from promptproxy.extensions import db


@pytest.fixture
def make_sdk(live):
    """Official OpenAI clients for given keys, closed afterwards (open keep-alive connections keep waitress busy)."""
    clients = []

    def make(key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=live + "/v1", api_key=key, max_retries=0, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sdk(make_sdk, seeded):
    """The official OpenAI client, as alice (every model and prompt)."""
    return make_sdk(seeded.key)


@pytest.fixture
def change(app, seeded):
    """Run fn(prompt-or-None) in an app context as the CLI does: manage calls, then one commit."""

    def run(fn, slug: str | None = "translator"):
        with app.app_context():
            result = fn(manage.get_prompt(slug) if slug else None)
            db.session.commit()
            return result

    return run


def system_text(request: dict) -> str:
    """The first message's content as the upstream received it."""
    return request["body"]["messages"][0]["content"]


def chat(sdk, model: str, content: str = "hi", **kwargs):
    """One chat completion with a single user message."""
    return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)
