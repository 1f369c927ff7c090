"""Deployments of one model: weighted choice, passive ejection, 429 pauses, limits, CLI, shared Redis state."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db

from ..conftest import REDIS_URL, base_config, log_rows, rows_when
from .conftest import chat, deploy

ERROR = (500, {"Content-Type": "application/json"}, '{"error": {"message": "boom"}}')


def first_deployment(app) -> int:
    with app.app_context():
        return manage.get_model("gpt-4o-mini").deployments[0].id


def test_weights_split_traffic_within_tolerance(client, seeded, upstream, second, app):
    deploy(app, second.url, weight=3)
    for _ in range(120):
        assert chat(client, seeded.key).status_code == 200
    share = len(second.requests) / 120
    assert 0.6 <= share <= 0.9  # weight 3 of 4: 75 %, binomial sd ~4 %: 4 sd either side
    assert len(upstream.requests) + len(second.requests) == 120
    assert second.last["body"]["model"] == "second-model"


def test_a_failing_deployment_is_ejected_without_client_visible_failures(client, seeded, upstream, second, app):
    good = deploy(app, second.url)
    bad = first_deployment(app)
    upstream.handler = lambda req: ERROR
    answers = [chat(client, seeded.key).status_code for _ in range(30)]
    assert answers == [200] * 30  # each failure was retried on the other deployment before the first byte
    assert len(upstream.requests) == 3  # ejected after 3 consecutive failures: no traffic since
    rows = rows_when(app, 30)
    assert {r.deployment_id for r in rows} == {good} and {r.status for r in rows} == {200}
    states = {s["deployment_id"]: s for s in app.extensions["promptproxy"].deployments.states(
        app.extensions["promptproxy"].catalog.model("gpt-4o-mini"))}
    assert states[bad]["health"] == "ejected" and states[bad]["errors"] == 3
    assert states[good]["health"] == "healthy" and states[good]["served"] == 30


def test_the_last_healthy_deployment_is_never_ejected(client, seeded, upstream, second, app):
    deploy(app, second.url)
    upstream.handler = second.handler = lambda req: ERROR
    for _ in range(12):
        assert chat(client, seeded.key).status_code == 500  # the upstream's own error, passed on
    gw = app.extensions["promptproxy"]
    health = [s["health"] for s in gw.deployments.states(gw.catalog.model("gpt-4o-mini"))]
    assert sorted(health) == ["ejected", "healthy"]  # one out, the other keeps serving however it fails
    upstream.handler = second.handler = upstream.default
    assert chat(client, seeded.key).status_code == 200


def test_client_errors_never_eject(client, seeded, upstream, second, app):
    deploy(app, second.url)
    upstream.handler = second.handler = lambda req: (400, {"Content-Type": "application/json"},
                                                     '{"error": {"message": "bad request"}}')
    for _ in range(8):
        resp = chat(client, seeded.key)
        assert resp.status_code == 400 and resp.json["error"]["message"] == "bad request"
    assert len(upstream.requests) + len(second.requests) == 8  # a 400 is not retried anywhere
    gw = app.extensions["promptproxy"]
    assert {s["health"] for s in gw.deployments.states(gw.catalog.model("gpt-4o-mini"))} == {"healthy"}


def test_a_429_pauses_that_deployment_for_its_retry_after(client, seeded, upstream, second, app):
    deploy(app, second.url)
    upstream.handler = lambda req: (429, {"Content-Type": "application/json", "Retry-After": "30"},
                                    '{"error": {"message": "slow down"}}')
    answers = [chat(client, seeded.key).status_code for _ in range(10)]
    assert answers == [200] * 10 and len(upstream.requests) <= 1
    gw = app.extensions["promptproxy"]
    states = gw.deployments.states(gw.catalog.model("gpt-4o-mini"))
    assert states[0]["health"] == "throttled" and 25 < states[0]["retry_in"] <= 30


def test_priority_keeps_the_spare_idle_until_the_primary_is_out(client, seeded, upstream, second, app):
    deploy(app, second.url, priority=1)
    for _ in range(10):
        assert chat(client, seeded.key).status_code == 200
    assert second.requests == []
    upstream.handler = lambda req: ERROR
    assert [chat(client, seeded.key).status_code for _ in range(5)] == [200] * 5
    assert len(second.requests) == 5


def test_deployment_rpm_answers_429_when_every_deployment_is_full(client, seeded, upstream, app):
    with app.app_context():
        m = manage.get_model("gpt-4o-mini")
        manage.deploy("t", m, m.provider, m.upstream_model, rpm=2)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    assert [chat(client, seeded.key).status_code for _ in range(2)] == [200, 200]
    resp = chat(client, seeded.key)
    assert resp.status_code == 429 and resp.json["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert len(upstream.requests) == 2
    assert [r.status for r in log_rows(app)] == [200, 200, 429]


def test_least_busy_spreads_evenly_without_favouring_the_first(client, seeded, upstream, second, app):
    deploy(app, second.url)
    with app.app_context():
        manage.update_model("t", manage.get_model("gpt-4o-mini"), strategy="least-busy")
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    for _ in range(100):  # sequential calls: in-flight is always 0, so ties must break at random
        assert chat(client, seeded.key).status_code == 200
    assert 25 <= len(second.requests) <= 75


def test_cli_deploy_show_undeploy_and_errors(app, seeded, second):
    runner = CliRunner()
    with app.app_context():
        manage.create_provider("t", "second", "openai", second.url + "/v1", api_key="sk-2")
        db.session.commit()
    out = runner.invoke(cli, ["model", "deploy", "gpt-4o-mini", "--provider", "second", "--upstream-model", "m2",
                              "--weight", "3", "--rpm", "100"], obj=_info(app))
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["model", "show", "gpt-4o-mini", "--json"], obj=_info(app))
    deps = __import__("orjson").loads(out.output)["deployments"]
    assert [(d["provider"], d["upstream_model"], d["weight"], d["rpm"], d["health"]) for d in deps] == [
        ("local", "real-model-name:latest", 1, None, "healthy"), ("second", "m2", 3, 100, "healthy")]
    bad = runner.invoke(cli, ["model", "deploy", "gpt-4o-mini", "--provider", "second", "--upstream-model", "m2",
                              "--rpm", "-1"], obj=_info(app))
    assert bad.exit_code != 0 and "rpm must be a whole number of at least 0" in bad.output
    cleared = runner.invoke(cli, ["model", "deploy", "gpt-4o-mini", "--provider", "second", "--upstream-model",
                                  "m2", "--rpm", "0"], obj=_info(app))
    assert cleared.exit_code == 0, cleared.output
    with app.app_context():  # --rpm 0 = no limit of its own
        assert [d.rpm for d in manage.get_model("gpt-4o-mini").deployments] == [None, None]
    out = runner.invoke(cli, ["model", "undeploy", "gpt-4o-mini", "--provider", "local", "--upstream-model",
                              "real-model-name:latest"], obj=_info(app))
    assert out.exit_code == 0, out.output
    with app.app_context():  # the model's own mapping follows its first remaining deployment
        m = manage.get_model("gpt-4o-mini")
        assert (m.provider.name, m.upstream_model) == ("second", "m2")
    last = runner.invoke(cli, ["model", "undeploy", "gpt-4o-mini", "--provider", "second", "--upstream-model", "m2"],
                         obj=_info(app))
    assert last.exit_code != 0 and "at least one deployment" in last.output


def _info(app):
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


@pytest.mark.skipif(not REDIS_URL, reason="needs PROMPTPROXY_TEST_REDIS_URL")
def test_two_instances_share_one_ejection_and_one_deployment_limit(db_url, tmp_path, redis_prefix, seeded, upstream,
                                                                    second, app):
    from promptproxy import create_app

    deploy(app, second.url, rpm=3, priority=1)  # the first deployment is always tried first
    bad = first_deployment(app)
    apps = [create_app({**base_config(db_url, tmp_path / f"i{i}"), "REDIS_URL": REDIS_URL,
                        "REDIS_PREFIX": redis_prefix}) for i in range(2)]
    try:
        upstream.handler = lambda req: ERROR
        clients = [a.test_client() for a in apps]
        served = [chat(clients[i % 2], seeded.key).status_code for i in range(3)]
        assert served == [200, 200, 200]  # 3 failures on deployment 1, each retried on deployment 2
        gws = [a.extensions["promptproxy"] for a in apps]
        for gw in gws:  # both instances see the one ejection
            with gw.app.app_context():
                gw.catalog.refresh(force=True)
                model = gw.catalog.model("gpt-4o-mini")
                states = {s["deployment_id"]: s["health"] for s in gw.deployments.states(model)}
            assert states[bad] == "ejected"
        # The second deployment's 3 RPM were spent across the two instances: neither sends it more this minute,
        # so the ejected first one (the only one left) serves, now that it works again.
        upstream.handler = upstream.default
        assert [chat(c, seeded.key).status_code for c in clients] == [200, 200]
        assert len(second.requests) == 3
    finally:
        for a in apps:
            a.extensions["promptproxy"].close()
