"""Two gateway processes sharing PostgreSQL and Redis enforce one rate limit and one budget together."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from promptproxy.extensions import db
from promptproxy.models import BudgetUsage

from ..conftest import ENC_KEY, PG_URL, REDIS_URL, free_port
from .conftest import chat, parallel, set_limits

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="needs PROMPTPROXY_TEST_DATABASE_URL (PostgreSQL) and PROMPTPROXY_TEST_REDIS_URL (Redis) to share state")]


@pytest.fixture
def gateways(app, seeded, redis_prefix, tmp_path):
    """Two `promptproxy serve` processes on the test database and one Redis prefix."""
    from promptproxy import manage

    with app.app_context():  # with an admin present, neither process writes a set-up token (a start-up race)
        manage.create_user("test", "root", role="admin")
        db.session.commit()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTPROXY_DATABASE_URL": PG_URL,
           "PROMPTPROXY_REDIS_URL": REDIS_URL, "PROMPTPROXY_REDIS_PREFIX": redis_prefix,
           "PROMPTPROXY_SECRET_KEY": "test-secret-key-0123456789abcdefgh", "PROMPTPROXY_ENCRYPTION_KEY": ENC_KEY,
           "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1", "PROMPTPROXY_THREADS": "32", "PROMPTPROXY_CACHE_TTL": "0",
           "PROMPTPROXY_INSTANCE_PATH": str(tmp_path / "gw-instance")}
    yield from serve_two(env, tmp_path)


def serve_two(env: dict, tmp_path: Path):
    """Start two `promptproxy serve` processes with `env`, yield their URLs once ready, SIGTERM them after."""
    procs, urls = [], []
    for i in range(2):
        port = free_port()
        log = open(tmp_path / f"gw{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, "-m", "promptproxy.cli", "serve", "--port", str(port)],
                                       cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, (proc, _) in zip(urls, procs, strict=True):
            wait_ready(url, proc, tmp_path)
        yield urls
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def wait_ready(url: str, proc, tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("gateway exited: " + "".join(p.read_text() for p in tmp_path.glob("gw*.log")))
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.05)
    pytest.fail("gateway did not start in 30 s")


def test_rpm_exactly_n_of_50_across_two_processes(gateways, app, seeded, upstream):
    set_limits(app, rpm=10)
    results = parallel(50, lambda i: chat(gateways[i % 2], seeded.key))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    assert sum(1 for r in upstream.requests if r["path"].endswith("/chat/completions")) == 10
    served_by = {i % 2 for i, r in enumerate(results) if r.status_code == 200}
    assert len(results) == 50 and served_by  # both processes took part in the race


def test_budget_shared_across_two_processes(gateways, app, seeded, upstream):
    import json

    from promptproxy import manage

    from ..upstream import chat_response

    with app.app_context():
        manage.update_model("test", manage.get_model("gpt-4o-mini"), input_price=1000.0, output_price=1000.0)
        db.session.commit()
    usage = {"prompt_tokens": 20, "completion_tokens": 1000, "total_tokens": 1020}
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"},
                                    json.dumps(chat_response(req["body"]["model"], usage=usage)))
    set_limits(app, budget=5.5, period="day")
    results = parallel(20, lambda i: chat(gateways[i % 2], seeded.key, max_tokens=1000))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    with app.app_context():
        [row] = db.session.scalars(sa.select(BudgetUsage)).all()
        assert row.reserved == 0 and row.spent == pytest.approx(5 * 1.02)


def test_group_budget_shared_by_members_across_two_processes(gateways, app, seeded, upstream):
    import json

    from promptproxy import groups, manage

    from ..upstream import chat_response

    with app.app_context():
        manage.update_model("test", manage.get_model("gpt-4o-mini"), input_price=1000.0, output_price=1000.0)
        groups.create_group("test", "research", budget=5.5, period="day")
        for name in ("alice", "bob"):
            groups.set_memberships("test", manage.get_user(name), add=["research"])
        db.session.commit()
    usage = {"prompt_tokens": 20, "completion_tokens": 1000, "total_tokens": 1020}
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"},
                                    json.dumps(chat_response(req["body"]["model"], usage=usage)))
    keys = (seeded.key, seeded.other_key)
    results = parallel(20, lambda i: chat(gateways[i % 2], keys[(i // 2) % 2], max_tokens=1000))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 5 and statuses.count(429) == 15
    assert all("for group 'research'" in r.json()["error"]["message"] for r in results if r.status_code == 429)
    with app.app_context():
        [row] = db.session.scalars(sa.select(BudgetUsage)).all()
        assert row.subject == "group:1" and row.reserved == 0 and row.spent == pytest.approx(5 * 1.02)
