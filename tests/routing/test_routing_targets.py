"""Deployment limits are exact across workers sharing one state store."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from click.testing import CliRunner
from flask.cli import ScriptInfo

from promptproxy import create_app, manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.routing.deployments import Deployments

from ..conftest import base_config, log_rows
from .conftest import chat, deploy


def test_rpm_5_serves_exactly_5_of_24_calls_across_two_workers(db_url, tmp_path, seeded, upstream, app):
    with app.app_context():
        m = manage.get_model("gpt-4o-mini")
        dep = manage.deploy("t", m, m.provider, m.upstream_model, rpm=5)
        db.session.commit()
        dep_id = dep.id
    other = create_app(base_config(db_url, tmp_path / "worker2"))
    try:
        gw, gw2 = app.extensions["promptproxy"], other.extensions["promptproxy"]
        gw2.state = gw.state  # two workers, one shared store (what `serve` sets up)
        gw2.deployments = Deployments(other.config, gw2.state)
        clients = [app.test_client(), other.test_client()]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: chat(clients[i % 2], seeded.key), range(24)))
    finally:
        other.extensions["promptproxy"].close()
    assert sorted(a.status_code for a in answers) == [200] * 5 + [429] * 19
    refused = [a for a in answers if a.status_code == 429]
    assert {a.json["error"]["code"] for a in refused} == {"rate_limit_exceeded"}
    assert all("at its own rate limit" in a.json["error"]["message"] for a in refused)
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in refused)
    assert len(upstream.requests) == 5
    assert len([r for r in log_rows(app) if r.status == 200]) == 5
    out = CliRunner().invoke(cli, ["model", "show", "gpt-4o-mini", "--json"], obj=ScriptInfo(create_app=lambda: app))
    [shown] = __import__("orjson").loads(out.output)["deployments"]
    assert (shown["id"], shown["rpm"], shown["served"], shown["in_flight"], shown["health"]) == (dep_id, 5, 5, 0,
                                                                                                 "healthy")


def test_an_ejected_deployment_serves_when_the_healthy_one_is_at_its_rpm(client, seeded, upstream, second, app):
    deploy(app, second.url, rpm=3, priority=1)  # the first deployment is always tried first
    with app.app_context():
        bad = manage.get_model("gpt-4o-mini").deployments[0].id
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"}, '{"error": {"message": "boom"}}')
    assert [chat(client, seeded.key).status_code for _ in range(3)] == [200] * 3  # each retried on the second
    gw = app.extensions["promptproxy"]
    states = {s["deployment_id"]: s["health"] for s in gw.deployments.states(gw.catalog.model("gpt-4o-mini"))}
    assert states[bad] == "ejected"
    upstream.handler = upstream.default  # works again; the second has spent its 3 rpm
    resp = chat(client, seeded.key)
    assert resp.status_code == 200
    assert len(second.requests) == 3 and log_rows(app)[-1].deployment_id == bad


def test_a_drained_deployment_takes_no_traffic_while_another_serves(client, seeded, upstream, second, app):
    deploy(app, second.url, weight=0)
    assert [chat(client, seeded.key).status_code for _ in range(10)] == [200] * 10
    assert second.requests == []
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"}, '{"error": {"message": "boom"}}')
    resp = chat(client, seeded.key)  # the healthy one was tried and failed: the drained one is not a fallback
    assert resp.status_code == 500 and second.requests == []
