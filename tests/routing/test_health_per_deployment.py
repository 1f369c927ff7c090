"""Health per deployment (provider x upstream model): an upstream 429 pauses that one only."""
from __future__ import annotations

from ..conftest import log_rows
from .conftest import chat
from .health_helpers import add_chat_model, answer, breakers_on

LIMITED = "real-model-name:latest"  # gpt-4o-mini's upstream model on the seeded provider


def throttle_one_model(upstream, retry_after: str = "30"):
    """The upstream answers 429 with Retry-After for gpt-4o-mini's upstream model, normally for the others."""
    def handler(req):
        if (req["body"] or {}).get("model") == LIMITED:
            return answer(429, "Rate limit reached for requests", {"Retry-After": retry_after})
        return upstream.default(req)
    upstream.handler = handler


def test_a_429_on_one_upstream_model_leaves_the_providers_other_models_serving(client, seeded, upstream, app):
    breakers_on(app)
    throttle_one_model(upstream)
    assert chat(client, seeded.key).status_code == 429  # the upstream's own 429, passed on
    assert len(upstream.requests) == 1  # a Retry-After over RETRY_AFTER_CAP is not waited for

    again = chat(client, seeded.other_key)  # inside the upstream's Retry-After: not sent
    assert again.status_code == 429 and again.json["error"]["code"] == "rate_limit_exceeded"
    assert "slow down" in again.json["error"]["message"]
    assert 29 <= int(again.headers["Retry-After"]) <= 30
    assert len(upstream.requests) == 1

    headers = {"Authorization": f"Bearer {seeded.key}"}
    embed = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"}, headers=headers)
    assert embed.status_code == 200 and embed.json["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    completion = client.post("/v1/completions", json={"model": "text-davinci", "prompt": "hi"}, headers=headers)
    assert completion.status_code == 200 and completion.json["choices"][0]["text"] == "Hello"
    assert [r["body"]["model"] for r in upstream.requests] == [LIMITED, "text-embedding-3-small", "davinci-002"]
    assert [(r.model, r.status) for r in log_rows(app)] == [
        ("gpt-4o-mini", 429), ("gpt-4o-mini", 429), ("embed", 200), ("text-davinci", 200)]


def test_a_throttled_model_goes_to_its_fallback_on_the_same_provider_without_asking_again(client, seeded, upstream,
                                                                                          app):
    breakers_on(app)
    add_chat_model(app, "gpt-4o", "bigger-model", fallback_of="gpt-4o-mini")
    throttle_one_model(upstream)
    first = chat(client, seeded.key)
    assert first.status_code == 200 and first.json["model"] == "gpt-4o-mini"  # the name the client asked for
    second = chat(client, seeded.key)
    assert second.status_code == 200
    # The throttled upstream model was asked once; then skipped while its Retry-After runs.
    assert [r["body"]["model"] for r in upstream.requests] == [LIMITED, "bigger-model", "bigger-model"]
    rows = log_rows(app)
    assert [(r.status, r.model, r.upstream_model) for r in rows] == [(200, "gpt-4o", "bigger-model")] * 2
    assert rows[0].error_message.startswith("served by fallback `gpt-4o` after: gpt-4o-mini")


def test_a_429_without_retry_after_is_retried_and_pauses_nothing(client, seeded, upstream, app):
    breakers_on(app)
    calls = []

    def handler(req):
        calls.append(1)
        if len(calls) == 1:
            return answer(429, "busy")
        return upstream.default(req)
    upstream.handler = handler
    assert chat(client, seeded.key).status_code == 200  # retried with backoff
    assert chat(client, seeded.other_key).status_code == 200
    assert len(upstream.requests) == 3
