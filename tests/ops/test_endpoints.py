"""/healthz, /readyz, /metrics and the access log, as an operator and Prometheus see them."""
from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime

import openai
import pytest
import sqlalchemy as sa

from promptproxy import create_app
from promptproxy.core.errors import GatewayError
from promptproxy.extensions import db

from ..conftest import base_config


def test_healthz_is_alive(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_readyz_ok_at_head(client):
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["migrations"]["current"] == body["migrations"]["head"]
    assert "0002_ops" in body["migrations"]["head"][0] or body["migrations"]["head"]


def test_readyz_503_when_migrations_are_behind(app, client):
    with app.app_context():
        current = db.session.scalar(sa.text("SELECT version_num FROM alembic_version"))
        db.session.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
        db.session.commit()
    try:
        r = client.get("/readyz")
        assert r.status_code == 503
        body = r.get_json()
        assert body["status"] == "unavailable"
        assert body["migrations"]["current"] == ["0001"]
        assert "promptproxy db upgrade" in body["reason"]
    finally:
        with app.app_context():
            db.session.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": current})
            db.session.commit()


def test_readyz_503_when_database_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTPROXY_INSTANCE_PATH", str(tmp_path))
    url = "postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none?connect_timeout=2"
    app = create_app(base_config(url, tmp_path))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json() == {"status": "unavailable", "database": "unreachable or not set up"}
    assert b"secret-pw" not in r.data and b"127.0.0.1" not in r.data
    app.extensions["promptproxy"].close()


def test_readyz_503_while_draining(app, client):
    app.extensions["promptproxy"].draining = True
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["reason"] == "shutting down"


def metric(text: str, name: str, **labels) -> float | None:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        series, _, rest = head.partition("{")
        if series != name or line.startswith("#"):
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
        if {k: v.strip('"') for k, v in found.items()} == {k: str(v) for k, v in labels.items()}:
            return float(value)
    return None


def test_metrics_count_requests_tokens_cost_and_never_name_keys(app, live, seeded):
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    list(stream)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="secret-model-name-xyz", messages=[{"role": "user", "content": "x"}])
    text = app.test_client().get("/metrics").get_data(as_text=True)
    ok = {"endpoint": "/v1/chat/completions", "model": "gpt-4o-mini", "provider": "local", "status": "200"}
    assert metric(text, "promptproxy_requests_total", **ok) == 4
    assert metric(text, "promptproxy_requests_total", endpoint="/v1/chat/completions", model="-", provider="-",
                  status="404") == 1
    assert metric(text, "promptproxy_tokens_total", model="gpt-4o-mini", provider="local", direction="input") == 44
    assert metric(text, "promptproxy_tokens_total", model="gpt-4o-mini", provider="local", direction="output") == 24
    assert metric(text, "promptproxy_cost_usd_total", model="gpt-4o-mini", provider="local") == pytest.approx(
        (44 * 1.0 + 24 * 2.0) / 1e6)
    assert metric(text, "promptproxy_request_duration_seconds_count", endpoint="/v1/chat/completions",
                  model="gpt-4o-mini", provider="local") == 4
    assert metric(text, "promptproxy_time_to_first_token_seconds_count", model="gpt-4o-mini", provider="local") == 1
    assert metric(text, "promptproxy_log_queue_rows") is not None
    for secret in (seeded.key, seeded.key[:12], "alice", "secret-model-name-xyz", "sk-upstream-secret"):
        assert secret not in text


def test_metrics_count_upstream_errors_and_limit_refusals(app, live, seeded, upstream):
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"}, json.dumps({"error": {
        "message": "boom", "type": "server_error"}}))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    gw = app.extensions["promptproxy"]

    class Refuse:
        def admit(self, call, body):
            raise GatewayError(429, "Rate limit reached.", code="rate_limit_exceeded")

    gw.limiter = Refuse()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert metric(text, "promptproxy_upstream_errors_total", model="gpt-4o-mini", provider="local",
                  error_type="upstream_error") == 1
    assert metric(text, "promptproxy_limit_refusals_total", endpoint="/v1/chat/completions", model="gpt-4o-mini",
                  reason="rate_limit_exceeded") == 1


def test_metrics_token(app):
    app.config["METRICS_TOKEN"] = "metrics-token-123"
    client = app.test_client()
    r = client.get("/metrics")
    assert r.status_code == 401 and r.get_json() == {"error": "metrics need a valid bearer token"}
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-123"})
    assert r.status_code == 200 and b"promptproxy_requests" in r.data


def test_access_log_one_json_line_per_request_without_the_key(app, live, seeded, caplog):
    caplog.set_level(logging.INFO, logger="promptproxy.access")
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini:translator",
                                                           messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live + "/v1", api_key="pp-wrong-key", max_retries=0).models.list()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "promptproxy.access"]
    assert len(lines) == 2
    first = lines[0]
    assert first["request_id"] == raw.headers["x-request-id"]
    assert (first["method"], first["path"], first["status"], first["model"], first["prompt"]) == (
        "POST", "/v1/chat/completions", 200, "gpt-4o-mini", "translator")
    assert first["latency_ms"] > 0
    assert (lines[1]["method"], lines[1]["path"], lines[1]["status"]) == ("GET", "/v1/models", 401)
    after = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.999Z")
    for line in lines:  # when, in UTC, saying so
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line["time"]
        assert before <= line["time"] <= after
    text = caplog.text
    assert seeded.key not in text and "pp-wrong-key" not in text


@pytest.mark.parametrize("trusted, expected", [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_client_address_from_x_forwarded_for_only_behind_a_trusted_proxy(db_url, tmp_path, monkeypatch, trusted,
                                                                         expected):
    from ..conftest import log_rows

    monkeypatch.setenv("PROMPTPROXY_INSTANCE_PATH", str(tmp_path))
    app = create_app({**base_config(db_url, tmp_path), "TRUSTED_PROXIES": trusted})
    try:
        r = app.test_client().get("/v1/models", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
                                  environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert r.status_code == 401
        assert [row.client_ip for row in log_rows(app)] == [expected]
    finally:
        app.extensions["promptproxy"].close()


def test_migration_heads_agree_with_alembic_and_follow_branches(tmp_path):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from promptproxy.extensions import MIGRATIONS_DIR
    from promptproxy.ops import migration_heads

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    assert migration_heads(MIGRATIONS_DIR) == frozenset(ScriptDirectory.from_config(config).get_heads())
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, down in (("a", None), ("b", "a"), ("c", "a")):
        (versions / f"{name}.py").write_text(f"revision = {name!r}\ndown_revision: str | None = {down!r}\n")
    assert migration_heads(str(tmp_path)) == {"b", "c"}  # two branches, two heads
    merged = tmp_path / "merged"
    (merged / "versions").mkdir(parents=True)
    for path in versions.iterdir():
        (merged / "versions" / path.name).write_text(path.read_text())
    (merged / "versions" / "d.py").write_text("revision = 'd'\ndown_revision = ('b', 'c')\n")
    assert migration_heads(str(merged)) == {"d"}


def test_serving_loads_neither_alembic_nor_redis(db_url, tmp_path):
    # Idle memory: Alembic (~11 MB) is for `promptproxy db`, redis-py (~8 MB) only when PROMPTPROXY_REDIS_URL is set.
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from promptproxy.cli import cli\n"
        "from promptproxy import create_app\n"
        "assert cli.get_command(None, 'serve') is not None\n"
        "app = create_app()\n"
        "client = app.test_client()\n"
        "assert client.get('/readyz').status_code == 200\n"
        "assert client.get('/v1/models').status_code == 401\n"
        "print(sorted(m for m in ('alembic', 'flask_migrate', 'redis', 'yaml') if m in sys.modules))\n"
    )
    env = {**os.environ, "PROMPTPROXY_DATABASE_URL": str(db_url), "PROMPTPROXY_ENCRYPTION_KEY": "k" * 40,
           "PROMPTPROXY_SECRET_KEY": "s" * 40, "PROMPTPROXY_INSTANCE_PATH": str(tmp_path)}
    env.pop("PROMPTPROXY_REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_batched_access_log_writes_every_line_off_the_request_threads():
    # `serve` writes access lines from one thread in batches; none may be lost or cut, and close() writes the rest.
    import io
    import threading

    from promptproxy.ops import BatchedStreamHandler

    stream = io.StringIO()
    handler = BatchedStreamHandler(stream, interval=0.02)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("promptproxy.test-batched")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        def emit(worker):
            for i in range(200):
                logger.info(json.dumps({"worker": worker, "i": i}))
        threads = [threading.Thread(target=emit, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < 1600 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue().count("\n") == 1600  # written by the handler's own thread, without close()
        logger.info(json.dumps({"worker": "last", "i": 0}))
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1601 and lines[-1] == {"worker": "last", "i": 0}
    for worker in range(8):  # each thread's lines in its own order
        assert [x["i"] for x in lines if x["worker"] == worker] == list(range(200))
