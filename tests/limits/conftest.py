"""Fixtures for limits tests: setting limits through manage, parallel requests, a Redis-backed limiter."""
from __future__ import annotations

import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.ratelimit.limiter import Limiter

from ..conftest import REDIS_URL, WORKER, flush_prefix


def set_limits(app, user: str = "alice", key_id: int | None = None, **limits) -> None:
    """Change a user's (or a key's) limits as the CLI and the dashboard do."""
    with app.app_context():
        if key_id is not None:
            manage.update_key("test", manage.get_key(str(key_id)), **limits)
        else:
            manage.update_user("test", manage.get_user(user), **limits)
        db.session.commit()


def chat(base: str, key: str, model: str = "gpt-4o-mini", **extra) -> requests.Response:
    """One chat completion through the live gateway."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return requests.post(base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                         timeout=30)


def parallel(n: int, fn) -> list:
    """Run fn(i) for i in range(n) on n threads released together; results in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_prefix():
    """A key prefix unique to this test; its keys are deleted afterwards."""
    if not REDIS_URL:
        pytest.skip("PROMPTPROXY_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/15)")
    prefix = f"pp-test-{WORKER or 'main'}-{uuid.uuid4().hex[:12]}"
    yield prefix
    flush_prefix(REDIS_URL, prefix)


@pytest.fixture
def redis_limiter(app, redis_prefix):
    """Switch the app's limiter to Redis storage under a private prefix."""
    app.config.update(REDIS_URL=REDIS_URL, REDIS_PREFIX=redis_prefix)
    gw = app.extensions["promptproxy"]
    gw.limiter = Limiter(app)
    return gw.limiter
