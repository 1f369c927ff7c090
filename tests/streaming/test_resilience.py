"""Fallbacks, the per-provider circuit breaker, the overall deadline, and the retry policy itself."""
from __future__ import annotations

import pytest

from promptproxy import manage
from promptproxy.core.errors import Fault, UpstreamError
from promptproxy.extensions import db
from promptproxy.routing.breakers import Breakers, breaker_states
from promptproxy.routing.resilience import RetryPolicy, parse_retry_after

from ..faults import refused_url
from ..upstream import Upstream
from .conftest import events, one_row, post, tune

REFUSED = UpstreamError(502, "refused", fault=Fault.CONNECT)
STREAM = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def add_backup(app, upstream_url: str, name: str = "backup", slug: str = "backup-model",
               fallback_of: str = "gpt-4o-mini") -> None:
    """A second provider and model, appended to `fallback_of`'s fallback list."""
    with app.app_context():
        p = manage.create_provider("t", name, "openai", upstream_url + "/v1", api_key="sk-backup")
        manage.create_model("t", slug, p, f"{name}-upstream-model", input_price=3.0, output_price=4.0)
        primary = manage.get_model(fallback_of)
        manage.update_model("t", primary, fallbacks=[*(primary.fallbacks or []), slug])
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()


@pytest.fixture
def backup():
    """A second real upstream."""
    server = Upstream().start()
    yield server
    server.stop()


def test_fallback_serves_when_the_primary_is_down(live, seeded, backup, app):
    tune(app, base_url=refused_url(), api_key="sk-x")
    add_backup(app, backup.url)
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 200
    data = events(resp.content)
    assert {d["model"] for d in data[:-1]} == {"gpt-4o-mini"}  # the client sees the model it asked for
    assert backup.last["body"]["model"] == "backup-upstream-model"
    assert backup.last["headers"]["Authorization"] == "Bearer sk-backup"
    row = one_row(app)
    assert (row.status, row.error_type, row.model, row.upstream_model) == \
        (200, None, "backup-model", "backup-upstream-model")
    assert row.error_message == "served by fallback `backup-model` after: gpt-4o-mini upstream_unavailable, " \
        "gpt-4o-mini upstream_unavailable, gpt-4o-mini upstream_unavailable"
    assert row.cost == pytest.approx((11 * 3.0 + 3 * 4.0) / 1e6)  # priced as the model that served


def test_fallback_after_a_first_byte_timeout_without_retrying_it(live, seeded, upstream, backup, app):
    tune(app, first_byte_timeout=0.2)
    upstream.delay = 1.0
    add_backup(app, backup.url)
    resp = post(live, seeded.key, {**STREAM, "stream": False})
    assert resp.status_code == 200 and resp.json()["model"] == "gpt-4o-mini"
    assert (len(upstream.requests), len(backup.requests)) == (1, 1)


def test_client_errors_do_not_fall_back(live, seeded, upstream, backup, app):
    upstream.handler = lambda req: (400, {"Content-Type": "application/json"}, '{"error": {"message": "bad"}}')
    add_backup(app, backup.url)
    assert post(live, seeded.key, STREAM).status_code == 400
    assert backup.requests == []


def test_three_hanging_upstreams_end_within_one_deadline(live, seeded, upstream, app):
    hanging = [Upstream().start() for _ in range(2)]
    try:
        for i, server in enumerate(hanging):
            server.delay = 2.0
            add_backup(app, server.url, name=f"hang{i}", slug=f"hang-model-{i}")
        upstream.delay = 2.0
        tune(app, first_byte_timeout=0.3, total_timeout=0.5)
        for i in range(2):
            tune(app, name=f"hang{i}", first_byte_timeout=0.3)
        resp = post(live, seeded.key, STREAM)
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
        # 0.3 s on the primary and the 0.2 s left on the first fallback: the deadline, not 3 x 0.3 s.
        assert (len(upstream.requests), len(hanging[0].requests), len(hanging[1].requests)) == (1, 1, 0)
    finally:
        for server in hanging:
            server.stop()


def test_breaker_opens_after_three_failures_then_answers_503_without_calling(live, seeded, upstream, app):
    clock = [1000.0]
    gw = app.extensions["promptproxy"]
    gw.retry = RetryPolicy(max_retries=0)
    gw.breakers = Breakers(threshold=3, cooldown=30.0, clock=lambda: clock[0], state=gw.state)
    upstream.handler = lambda req: (503, {"Content-Type": "application/json"}, '{"error": {"message": "down"}}')
    # 5xx count once they come from two keys (issue 27: one caller cannot pause a provider for everyone).
    keys = [seeded.key, seeded.other_key, seeded.key]
    assert [post(live, key, STREAM).status_code for key in keys] == [503, 503, 503]
    with app.test_request_context():
        [state] = breaker_states().values()
    assert (state["name"], state["state"], state["failures"], state["retry_in"]) == ("local", "open", 3, 30.0)

    clock[0] += 10
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "20"
    assert resp.json() == {"error": {"message": "The upstream for this model is failing; the gateway paused "
                                                "requests to it. Try again later.",
                                     "type": "server_error", "param": None, "code": "upstream_unavailable"}}
    assert len(upstream.requests) == 3  # the open breaker spared the upstream
    assert one_row_status(app)[-1] == (503, "upstream_unavailable")

    clock[0] += 25  # cool-down over: one probe goes through; it fails, so the breaker opens again
    assert post(live, seeded.key, STREAM).status_code == 503
    assert len(upstream.requests) == 4
    assert gw.breakers.states()[1]["state"] == "open"

    clock[0] += 31
    upstream.handler = upstream.default  # the probe succeeds and closes the breaker
    assert post(live, seeded.key, STREAM).status_code == 200
    assert gw.breakers.states()[1] == {"name": "local", "state": "closed", "failures": 0, "retry_in": 0.0,
                                       "last_error": "upstream_error"}


def one_row_status(app):
    from ..conftest import log_rows

    return [(r.status, r.error_type) for r in log_rows(app)]


def test_open_breaker_skips_to_the_fallback(live, seeded, upstream, backup, app):
    gw = app.extensions["promptproxy"]
    gw.breakers = Breakers(threshold=3, cooldown=30.0, state=gw.state)
    add_backup(app, backup.url)
    with app.app_context():
        pid = manage.get_provider("local").id
    for _ in range(3):
        gw.breakers.failure(type("P", (), {"id": pid, "name": "local"})(), REFUSED)
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 200
    assert upstream.requests == [] and len(backup.requests) == 1


def test_half_open_lets_one_probe_through():
    clock = [0.0]
    provider = type("P", (), {"id": 7, "name": "p"})()
    breakers = Breakers(threshold=2, cooldown=5.0, clock=lambda: clock[0])
    breakers.failure(provider, REFUSED)
    assert breakers.allow(provider)
    breakers.failure(provider, REFUSED)
    assert not breakers.allow(provider)
    clock[0] = 5.0
    assert breakers.allow(provider) and not breakers.allow(provider)  # one probe at a time
    clock[0] = 10.0
    assert breakers.allow(provider)  # a probe that never reported does not keep it shut
    breakers.success(provider)
    assert breakers.allow(provider) and breakers.states()[7]["state"] == "closed"


def test_breaker_threshold_zero_disables_it():
    provider = type("P", (), {"id": 1, "name": "p"})()
    breakers = Breakers(threshold=0)
    for _ in range(10):
        breakers.failure(provider, REFUSED)
    assert breakers.allow(provider)


def test_retry_policy_delays():
    policy = RetryPolicy(max_retries=2, backoff=0.5, backoff_max=8.0, retry_after_cap=20.0)
    assert 0.25 <= policy.delay(1, None) <= 0.5
    assert 0.5 <= policy.delay(2, None) <= 1.0
    assert 4.0 <= RetryPolicy(backoff=0.5, backoff_max=8.0).delay(10, None) <= 8.0
    assert policy.delay(1, 3.0) == 3.0
    assert policy.delay(1, 21.0) is None


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "7"}, 7.0), ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0), ({"retry-after": "soon"}, None), ({}, None),
])
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


def test_fallback_list_set_from_the_cli(app, seeded, backup):
    add_backup(app, backup.url)
    from promptproxy.cli import cli

    result = app.test_cli_runner().invoke(cli, args=["model", "update", "gpt-4o-mini", "--fallback", "backup-model",
                                 "--fallback", "text-davinci"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert manage.get_model("gpt-4o-mini").fallbacks == ["backup-model", "text-davinci"]
