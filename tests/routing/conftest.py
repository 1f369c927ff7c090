"""Routing fixtures: a second and third real upstream, deployments added through manage, fast retries."""
from __future__ import annotations

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import shared_server, use_fast_retries
from ..limits.conftest import redis_prefix  # noqa: F401 - the shared per-test Redis prefix
from ..upstream import Upstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def fast_retries(request):
    """Real retry logic with millisecond backoff."""
    use_fast_retries(request)


second_servers = shared_server(lambda: Upstream().start())


@pytest.fixture
def second(second_servers):
    """Another real OpenAI-compatible upstream, as new."""
    return second_servers.take()


def deploy(app, url: str, name: str = "second", slug: str = "gpt-4o-mini", **fields) -> int:
    """A provider at `url` added as a deployment of `slug`; returns the deployment id."""
    with app.app_context():
        provider = manage.create_provider("t", name, "openai", url + "/v1", api_key="sk-" + name)
        dep = manage.deploy("t", manage.get_model(slug), provider, f"{name}-model", **fields)
        db.session.commit()
        ident = dep.id
    app.extensions["promptproxy"].catalog.invalidate()
    return ident


def chat(client, key, body=None, headers=None):
    """POST a chat completion through the Flask test client."""
    return client.post("/v1/chat/completions", json=body or CHAT,
                       headers={"Authorization": f"Bearer {key}", **(headers or {})})
