"""The provider breaker counts requests, not attempts; 5xx need failures from two keys, dead hosts do not."""
from __future__ import annotations

import json

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import log_rows
from ..faults import refused_url
from ..upstream import chat_response
from .conftest import CHAT, chat
from .health_helpers import JSON, answer, breakers_on

PAUSED = ("The upstream for this model is failing; the gateway paused requests to it. Try again later.")


def boom(text: str = "boom") -> dict:
    return {**CHAT, "messages": [{"role": "user", "content": text}]}


def boom_or_ok(req):
    """500 for requests saying "boom" (one caller's poison request), a normal answer otherwise."""
    body = req["body"] or {}
    if "boom" in json.dumps(body.get("messages")):
        return answer(500, "internal")
    return 200, JSON, json.dumps(chat_response(body.get("model", "?")))


def test_twelve_failing_requests_from_one_key_do_not_fail_another_keys_request(client, seeded, upstream, app):
    breakers_on(app)
    upstream.handler = boom_or_ok
    answers = [chat(client, seeded.key, boom()) for _ in range(12)]
    assert [(a.status_code, a.json["error"]["message"]) for a in answers] == [(500, "internal")] * 12
    assert len(upstream.requests) == 36  # each request was retried twice: 36 attempts, 12 requests
    resp = chat(client, seeded.other_key)
    assert resp.status_code == 200, resp.json
    assert len(upstream.requests) == 37


def test_the_same_failures_from_two_keys_open_it_and_half_open_recovers(client, seeded, upstream, app):
    clock = [1000.0]
    breakers_on(app, clock)
    upstream.handler = boom_or_ok
    keys = [seeded.key, seeded.other_key]
    assert [chat(client, keys[i % 2], boom()).status_code for i in range(10)] == [500] * 10
    sent = len(upstream.requests)

    clock[0] += 5
    fast = chat(client, seeded.other_key)  # a good request, but the provider is paused
    assert fast.status_code == 503 and fast.headers["Retry-After"] == "25"
    assert fast.json["error"] == {"message": PAUSED, "type": "server_error", "param": None,
                                  "code": "upstream_unavailable"}
    assert len(upstream.requests) == sent  # not sent

    clock[0] += 25  # cool-down over: one probe; it succeeds and closes the breaker
    assert chat(client, seeded.other_key).status_code == 200
    assert chat(client, seeded.key).status_code == 200
    assert len(upstream.requests) == sent + 2
    assert [r.status for r in log_rows(app)][-3:] == [503, 200, 200]


def test_a_failed_probe_opens_it_again(client, seeded, upstream, app):
    clock = [1000.0]
    breakers_on(app, clock)
    upstream.handler = lambda req: answer(503, "down")
    for i in range(10):
        chat(client, [seeded.key, seeded.other_key][i % 2])
    clock[0] += 30
    sent = len(upstream.requests)
    assert chat(client, seeded.key).status_code == 503  # the probe: the upstream's own 503
    assert len(upstream.requests) == sent + 1  # a probe is one attempt, not retried
    again = chat(client, seeded.key)
    assert again.status_code == 503 and again.json["error"]["message"] == PAUSED
    assert again.headers["Retry-After"] == "30"


def test_connect_failures_from_one_key_open_it_for_every_model_of_the_provider(client, seeded, upstream, app):
    breakers_on(app)
    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), base_url=refused_url())
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    answers = [chat(client, seeded.key) for _ in range(10)]
    assert {a.status_code for a in answers} == {502}
    assert all(a.json["error"]["message"] != PAUSED for a in answers)  # ten requests, not four: 30 attempts
    fast = chat(client, seeded.key)
    assert fast.status_code == 503 and fast.json["error"]["message"] == PAUSED
    assert 29 <= int(fast.headers["Retry-After"]) <= 30
    embed = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"},
                        headers={"Authorization": f"Bearer {seeded.key}"})
    assert embed.status_code == 503 and embed.json["error"]["message"] == PAUSED  # the host is down for all
