"""The settings that were read but not declared are now accepted and honoured, from the environment and the file.

Each test builds the app as a user would configure it: `PROMPTPROXY_*` variables, or the instance folder's
promptproxy.toml read by `create_app()`, then checks what a user notices (`model show`, `x-cache`, `Retry-After`).
A control row with the defaults shows the behaviour is the setting's doing.
"""
from __future__ import annotations

import json

import orjson
import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from promptproxy import create_app, manage
from promptproxy.cli import cli
from promptproxy.config import SETTINGS_FILE
from promptproxy.extensions import db
from promptproxy.settings import BY_NAME

from .conftest import base_config, shared_server
from .limits.conftest import closed_port, set_limits
from .upstream import Upstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ERROR = (500, {"Content-Type": "application/json"}, '{"error": {"message": "boom"}}')

second_servers = shared_server(lambda: Upstream().start())


@pytest.fixture
def second(second_servers):
    """Another real OpenAI-compatible upstream, as new."""
    return second_servers.take()


def toml(values: dict) -> str:
    """Settings as promptproxy.toml lines (TOML strings are JSON strings here: no control characters)."""
    def literal(v):
        return str(v).lower() if isinstance(v, bool) else json.dumps(v) if isinstance(v, str) else repr(v)
    return "".join(f"{name} = {literal(value)}\n" for name, value in values.items())


@pytest.fixture(params=["environment", "file"])
def configured(request, db_url, tmp_path, monkeypatch):
    """Make an app on the test's database with some settings from PROMPTPROXY_* variables or from promptproxy.toml."""
    apps = []

    def make(**values):
        instance = tmp_path / f"instance-{len(apps)}"
        instance.mkdir()
        monkeypatch.setenv("PROMPTPROXY_INSTANCE_PATH", str(instance))
        base = {k: v for k, v in base_config(db_url, instance).items() if k in BY_NAME}  # TESTING is Flask's
        base.update(RETRY_BACKOFF=0.001, RETRY_BACKOFF_MAX=0.004)  # retries on another deployment without waiting
        if request.param == "environment":
            for name, value in values.items():
                monkeypatch.setenv(f"PROMPTPROXY_{name}", str(value).lower() if isinstance(value, bool) else str(value))
            app = create_app(base)
        else:
            (instance / SETTINGS_FILE).write_text(toml({**base, **values}))
            app = create_app()  # as `serve` does: the instance's file, then the environment
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["promptproxy"].close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def chat(app, key: str, body: dict | None = None):
    """One chat completion through the app's test client."""
    return app.test_client().post("/v1/chat/completions", json=body or CHAT,
                                  headers={"Authorization": f"Bearer {key}"})


def model_show(app) -> list[dict]:
    """`promptproxy model show gpt-4o-mini --json`: the deployments with their health."""
    out = CliRunner().invoke(cli, ["model", "show", "gpt-4o-mini", "--json"], obj=ScriptInfo(create_app=lambda: app))
    assert out.exit_code == 0, out.output
    return orjson.loads(out.output)["deployments"]


# -- deployments ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "health", "retry_in"), [
    ({}, "healthy", (0, 0)),  # the default: 3 failures in a row before an ejection
    ({"DEPLOYMENT_EJECT_AFTER": 1}, "ejected", (5, 10)),  # ejected for the default 10 s
    ({"DEPLOYMENT_EJECT_AFTER": 1, "DEPLOYMENT_EJECT_SECONDS": 100}, "ejected", (50, 100)),
    ({"DEPLOYMENT_EJECT_AFTER": 1, "DEPLOYMENT_EJECT_SECONDS": 100, "DEPLOYMENT_EJECT_MAX_SECONDS": 4}, "ejected",
     (0, 4)),
], ids=["defaults", "eject-after", "eject-seconds", "eject-max-seconds"])
def test_deployment_ejection_follows_the_settings(configured, seeded, upstream, second, values, health, retry_in):
    app = configured(**values)
    with app.app_context():
        provider = manage.create_provider("t", "second", "openai", second.url + "/v1", api_key="sk-second")
        manage.deploy("t", manage.get_model("gpt-4o-mini"), provider, "second-model", priority=1)  # a spare
        db.session.commit()
    upstream.handler = lambda req: ERROR
    assert chat(app, seeded.key).status_code == 200  # the first deployment failed once; the spare answered
    assert len(upstream.requests) == 1 and len(second.requests) == 1
    first, spare = model_show(app)
    assert (first["provider"], first["health"], spare["health"]) == ("local", health, "healthy")
    low, high = retry_in
    assert first["retry_in"] == 0 if health == "healthy" else low < first["retry_in"] <= high


# -- response cache --------------------------------------------------------------------------------------------------
def cached_twice(app, key: str) -> list[str]:
    """Turn gpt-4o-mini's cache on, ask the same question twice: the two `x-cache` headers."""
    with app.app_context():
        manage.update_model("t", manage.get_model("gpt-4o-mini"), cache_ttl=60)
        db.session.commit()
    return [chat(app, key).headers["x-cache"] for _ in range(2)]


@pytest.mark.parametrize(("values", "caches"), [
    ({}, ["MISS", "HIT"]),
    ({"RESPONSE_CACHE_MAX_ENTRY_BYTES": 64}, ["MISS", "MISS"]),  # the answer is larger: never stored
], ids=["defaults", "max-entry-bytes"])
def test_an_answer_over_the_entry_cap_is_not_cached(configured, seeded, upstream, values, caches):
    app = configured(**values)
    assert cached_twice(app, seeded.key) == caches
    assert len(upstream.requests) == caches.count("MISS")


@pytest.mark.parametrize(("values", "caches"), [
    ({"RESPONSE_CACHE_PRUNE_EVERY": 1}, ["MISS", "HIT"]),  # pruned after each write, but 64 MiB is room enough
    ({"RESPONSE_CACHE_MAX_BYTES": 1}, ["MISS", "HIT"]),  # over the total, but not pruned before the 100th write
    ({"RESPONSE_CACHE_PRUNE_EVERY": 1, "RESPONSE_CACHE_MAX_BYTES": 1}, ["MISS", "MISS"]),  # dropped once stored
], ids=["prune-every", "max-bytes", "both"])
def test_the_cache_is_pruned_to_its_total_as_often_as_set(configured, seeded, upstream, values, caches):
    app = configured(**values)
    assert cached_twice(app, seeded.key) == caches
    assert len(upstream.requests) == caches.count("MISS")


# -- limits ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "retry_after"), [
    ({}, "5"),
    ({"LIMITS_RETRY_SECONDS": 42}, "42"),
], ids=["defaults", "limits-retry-seconds"])
def test_an_unreachable_limit_store_asks_clients_to_retry_after_the_setting(configured, seeded, upstream, values,
                                                                             retry_after, app):
    set_limits(app, rpm=5)
    limited = configured(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0", LIMITS_FAIL_OPEN=False, **values)
    for _ in range(2):  # the first finds Redis down; the second skips it for that long and answers the same
        resp = chat(limited, seeded.key)
        assert resp.status_code == 503 and resp.json["error"]["code"] == "limits_unavailable"
        assert resp.headers["Retry-After"] == retry_after
    assert upstream.requests == []
