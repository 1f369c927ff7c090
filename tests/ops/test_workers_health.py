"""Issue 27 under `promptproxy serve --workers 2`: deployment limits and the breaker are one across workers."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from .test_workers import chat, on_both_workers, served_by, start


@pytest.fixture
def pair(app, seeded, db_url, tmp_path):
    """Two workers with the shipped breaker settings (the tests' config turns breakers off in-process only)."""
    server = start(db_url, tmp_path, PROMPTPROXY_RETRY_BACKOFF="0.001", PROMPTPROXY_RETRY_BACKOFF_MAX="0.004")
    yield server
    server.stop()


@pytest.mark.slow
def test_a_deployment_rpm_of_5_serves_exactly_5_across_workers(app, seeded, upstream, pair):
    with app.app_context():
        m = manage.get_model("gpt-4o-mini")
        manage.deploy("t", m, m.provider, m.upstream_model, rpm=5)
        db.session.commit()
    statuses = on_both_workers(pair, seeded.key, 4)
    assert set(served_by(pair)) == {1, 2}, "all requests landed on one worker"
    assert statuses.count(200) == 5  # not 5 per worker
    assert statuses.count(429) == len(statuses) - 5
    assert sum(1 for r in upstream.requests if r["path"].endswith("/chat/completions")) == 5


@pytest.mark.slow
def test_one_keys_failures_on_both_workers_do_not_pause_the_provider(app, seeded, upstream, pair):
    def boom_or_ok(req):
        if "boom" in json.dumps((req["body"] or {}).get("messages")):
            return 500, {"Content-Type": "application/json"}, '{"error": {"message": "internal"}}'
        return upstream.default(req)
    upstream.handler = boom_or_ok
    boom = [{"role": "user", "content": "boom"}]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: chat(pair.url, seeded.key, messages=boom), range(12)))
    assert [a.status_code for a in answers] == [500] * 12
    assert chat(pair.url, seeded.other_key).status_code == 200
    with ThreadPoolExecutor(4) as pool:  # the same failures from a second key: the breaker opens for everyone
        list(pool.map(lambda i: chat(pair.url, seeded.other_key, messages=boom), range(4)))
    paused = chat(pair.url, seeded.key)
    assert paused.status_code == 503 and paused.json()["error"]["code"] == "upstream_unavailable"
    assert 1 <= int(paused.headers["Retry-After"]) <= 30
