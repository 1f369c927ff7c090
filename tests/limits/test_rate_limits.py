"""RPM, TPM and concurrency per user and per key, on one process (memory) and with Redis."""
from __future__ import annotations

import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
import pytest

from promptproxy.ratelimit.limiter import Limiter, duration

from ..conftest import log_rows, rows_when
from ..upstream import chunk
from .conftest import chat, closed_port, parallel, set_limits

RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s)$")


def chat_calls(upstream) -> int:
    return sum(1 for r in upstream.requests if r["path"].endswith("/chat/completions"))


def test_rpm_exactly_n_of_50_parallel_requests_pass(live, seeded, app, upstream):
    set_limits(app, rpm=7)
    results = parallel(50, lambda i: chat(live, seeded.key))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 7 and statuses.count(429) == 43
    assert chat_calls(upstream) == 7  # refused calls never reach the upstream
    refused = next(r for r in results if r.status_code == 429)
    err = refused.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("requests", "rate_limit_exceeded", None)
    assert re.fullmatch(r"Rate limit reached for your user on requests per min \(RPM\): Limit 7\. "
                        r"Please try again in (\d+m)?\d+s\.", err["message"])
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "7"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    rows = log_rows(app)
    assert len(rows) == 50
    bad = [r for r in rows if r.status == 429]
    assert len(bad) == 43 and {r.error_type for r in bad} == {"rate_limit_exceeded"}
    assert all(r.cost is None and r.input_tokens is None for r in bad)


def test_rate_limit_headers_on_every_response(live, seeded, app):
    set_limits(app, rpm=5, tpm=1000)
    first = chat(live, seeded.key)
    second = chat(live, seeded.key)
    assert first.status_code == second.status_code == 200
    h1, h2 = first.headers, second.headers
    assert (h1["x-ratelimit-limit-requests"], h1["x-ratelimit-remaining-requests"]) == ("5", "4")
    assert (h2["x-ratelimit-limit-requests"], h2["x-ratelimit-remaining-requests"]) == ("5", "3")
    assert (h1["x-ratelimit-limit-tokens"], h1["x-ratelimit-remaining-tokens"]) == ("1000", "1000")
    assert h2["x-ratelimit-remaining-tokens"] == str(1000 - 18)  # the first call's real usage: 11 + 7
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert RESET.match(h2[name]), h2[name]
    assert "Retry-After" not in h2
    assert h2["x-upstream-ratelimit-remaining-requests"] == "99"  # the upstream's own, renamed


def test_no_limit_no_headers(live, seeded):
    resp = chat(live, seeded.key)
    assert resp.status_code == 200
    assert not [h for h in resp.headers if h.lower().startswith("x-ratelimit-limit")]


def test_key_limit_narrows_the_users(live, seeded, app):
    set_limits(app, rpm=10)
    set_limits(app, key_id=1, rpm=2)
    assert [chat(live, seeded.key).status_code for _ in range(2)] == [200, 200]
    third = chat(live, seeded.key)
    assert third.status_code == 429
    assert third.json()["error"]["message"].startswith("Rate limit reached for this API key on requests")
    assert third.headers["x-ratelimit-limit-requests"] == "2"


def test_a_key_cannot_loosen_its_users_limit(live, seeded, app):
    set_limits(app, rpm=2)
    set_limits(app, key_id=1, rpm=100)
    assert [chat(live, seeded.key).status_code for _ in range(3)] == [200, 200, 429]


def test_user_limit_is_shared_by_all_their_keys(live, seeded, app):
    from promptproxy import manage
    from promptproxy.extensions import db

    with app.app_context():
        _, second_key = manage.create_key("test", manage.get_user("alice"))
        db.session.commit()
    set_limits(app, rpm=2)
    assert chat(live, seeded.key).status_code == 200
    assert chat(live, second_key).status_code == 200
    assert chat(live, second_key).status_code == 429
    assert chat(live, seeded.other_key).status_code == 200  # another user: own window


def test_tpm_counted_from_real_usage_and_checked_before_the_next_call(live, seeded, app, upstream):
    set_limits(app, tpm=30)
    first, second = chat(live, seeded.key), chat(live, seeded.key)
    assert first.status_code == second.status_code == 200
    assert second.headers["x-ratelimit-remaining-tokens"] == "12"  # 30 - 18 used by the first
    third = chat(live, seeded.key)  # 36 tokens used: at/over the limit
    assert third.status_code == 429
    err = third.json()["error"]
    assert (err["type"], err["code"]) == ("tokens", "rate_limit_exceeded")
    assert err["message"].startswith("Rate limit reached for your user on tokens per min (TPM): Limit 30.")
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(third.headers["Retry-After"]) >= 1
    assert chat_calls(upstream) == 2


def test_streams_count_tokens_and_refusals_come_before_the_stream(live, seeded, app):
    set_limits(app, tpm=20, rpm=100)
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    for done in range(1, 3):  # 14 tokens each (11 in, 3 out, from the stream's usage chunk)
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
        assert raw.headers["x-ratelimit-limit-requests"] == "100"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "Bonjour!"
        # The SDK stops reading at [DONE]; the gateway charges the tokens and logs the row just after.
        assert len(rows_when(app, done)) == done
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert info.value.response.headers["content-type"].startswith("application/json")
    assert info.value.body["type"] == "tokens"
    rows = rows_when(app, 3)
    assert [r.status for r in rows] == [200, 200, 429]
    assert [r.stream for r in rows] == [True, True, True]


def gated_upstream(upstream):
    """Make the upstream hold every chat call until the returned event is set."""
    gate = threading.Event()
    default = upstream.default

    def handler(req):
        gate.wait(20)
        return default(req)

    upstream.handler = handler
    return gate


def test_concurrency_exact_under_parallel_load_and_slots_come_back(live, seeded, app, upstream):
    set_limits(app, max_concurrent=3)
    gate = gated_upstream(upstream)
    statuses = []
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(chat, live, seeded.key) for _ in range(20)]
        done = iter(as_completed(futures, timeout=20))
        for _ in range(17):  # refusals answer at once while three calls wait upstream
            statuses.append(next(done).result().status_code)
        assert statuses == [429] * 17
        gate.set()
        statuses += [f.result().status_code for f in done]
    assert statuses.count(200) == 3
    refused = chat  # after the three finished, their slots are free again
    assert refused(live, seeded.key).status_code == 200
    rows = [r for r in log_rows(app) if r.status == 429]
    assert len(rows) == 17 and "concurrent" in rows[0].error_message


def test_concurrency_refusal_body(live, seeded, app, upstream):
    set_limits(app, max_concurrent=1)
    gate = gated_upstream(upstream)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, live, seeded.key)
        while not upstream.requests:
            threading.Event().wait(0.01)
        refused = chat(live, seeded.key)
        gate.set()
        assert held.result().status_code == 200
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {"error": {
        "message": "Too many concurrent requests for your user: the limit is 1. Retry when one of them has finished.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


def test_a_stream_holds_its_slot_until_it_ends(live, seeded, app, upstream):
    set_limits(app, max_concurrent=1)
    gate = threading.Event()

    def handler(req):
        model = req["body"]["model"]

        def gen():
            yield f"data: {json.dumps(chunk(model, 'Bon', role=True))}\n\n"
            gate.wait(20)
            yield f"data: {json.dumps(chunk(model, 'jour', finish='stop'))}\n\n"
            yield "data: [DONE]\n\n"
        return 200, {"Content-Type": "text/event-stream"}, gen()

    upstream.handler = handler
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                         stream=True)
    parts = iter(stream)
    assert next(parts).choices[0].delta.content == "Bon"
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    gate.set()
    assert [c.choices[0].delta.content for c in parts] == ["jour"]
    # The slot is released when the gateway's generator ends, a moment after the client read [DONE].
    counters = app.extensions["promptproxy"].limiter.counters
    wait_until(lambda: not counters._counts)
    upstream.handler = upstream.default
    assert chat(live, seeded.key).status_code == 200


def wait_until(check, timeout: float = 5.0) -> None:
    """Poll a condition that another thread makes true."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_completions_and_embeddings_are_limited_too(live, seeded, app):
    import requests

    set_limits(app, rpm=2)
    auth = {"Authorization": f"Bearer {seeded.key}"}
    one = requests.post(live + "/v1/completions", json={"model": "text-davinci", "prompt": "a"}, headers=auth)
    two = requests.post(live + "/v1/embeddings", json={"model": "embed", "input": "a"}, headers=auth)
    three = requests.post(live + "/v1/embeddings", json={"model": "embed", "input": "a"}, headers=auth)
    assert [one.status_code, two.status_code, three.status_code] == [200, 200, 429]
    assert two.headers["x-ratelimit-remaining-requests"] == "0"


def test_duration_format():
    assert [duration(x) for x in (0.25, 1, 12.2, 60, 61, 360)] == ["250ms", "1s", "13s", "1m0s", "1m1s", "6m0s"]


# -- Redis ---------------------------------------------------------------------------------------------
def test_rpm_exact_with_redis_storage(live, seeded, app, upstream, redis_limiter):
    set_limits(app, rpm=9)
    statuses = [r.status_code for r in parallel(50, lambda i: chat(live, seeded.key))]
    assert statuses.count(200) == 9 and statuses.count(429) == 41
    assert chat_calls(upstream) == 9


def test_concurrency_exact_with_redis(live, seeded, app, upstream, redis_limiter):
    set_limits(app, max_concurrent=2)
    gate = gated_upstream(upstream)
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(chat, live, seeded.key) for _ in range(12)]
        done = iter(as_completed(futures, timeout=20))
        early = [next(done).result().status_code for _ in range(10)]
        gate.set()
        late = [f.result().status_code for f in done]
    assert early == [429] * 10 and late == [200, 200]
    assert chat(live, seeded.key).status_code == 200  # both slots released in Redis


def unreachable_limiter(app, fail_open: bool) -> Limiter:
    app.config.update(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0", LIMITS_FAIL_OPEN=fail_open)
    limiter = app.extensions["promptproxy"].limiter = Limiter(app)
    return limiter


def test_redis_down_fail_open_admits_and_warns(live, seeded, app, upstream, caplog):
    set_limits(app, rpm=1)
    unreachable_limiter(app, fail_open=True)
    with caplog.at_level(logging.WARNING, logger="promptproxy.limits"):
        statuses = [chat(live, seeded.key).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert chat_calls(upstream) == 3
    assert any("fail open" in r.getMessage() for r in caplog.records)


def test_redis_down_fail_closed_answers_503_without_upstream_call(live, seeded, app, upstream):
    set_limits(app, rpm=100)
    unreachable_limiter(app, fail_open=False)
    resp = chat(live, seeded.key)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.json() == {"error": {"message": "Rate limits cannot be checked right now; please retry shortly.",
                                     "type": "server_error", "param": None, "code": "limits_unavailable"}}
    assert chat_calls(upstream) == 0
    [row] = log_rows(app)
    assert (row.status, row.error_type) == (503, "limits_unavailable")


def test_redis_down_does_not_matter_without_limits(live, seeded, app):
    unreachable_limiter(app, fail_open=False)
    assert chat(live, seeded.key).status_code == 200
