"""Two gateway processes sharing PostgreSQL and Redis behave as one gateway (needs both, so opt-in)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ..cli_runner import cli_env, run_cli
from ..conftest import PG_URL, REDIS_URL, rows_when
from .procs import Server, server_env

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="scale-out needs a shared database and Redis: set PROMPTPROXY_TEST_DATABASE_URL (PostgreSQL) "
           "and PROMPTPROXY_TEST_REDIS_URL")]


@pytest.fixture
def pair(app, seeded, db_url, tmp_path):
    """Two `promptproxy serve` processes on different ports, one database, one Redis."""
    servers = []
    try:
        for i in range(2):
            env = server_env(db_url, tmp_path / f"instance{i}", PROMPTPROXY_REDIS_URL=REDIS_URL,
                             PROMPTPROXY_LOG_FLUSH_INTERVAL="0.1")
            # One process each (not `--workers auto`): each worker's catalog sees the revoked key on its own second,
            # and with a quick in-process CLI the last request below could reach one that has not yet looked.
            servers.append(Server(env, tmp_path / f"server{i}.log", workers=1))
        yield servers
    finally:
        for server in servers:
            server.stop()


def chat(base: str, key: str) -> requests.Response:
    """One chat completion."""
    return requests.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                         json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def test_two_processes_write_one_consistent_request_log(app, seeded, pair):
    n = 40
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: chat(pair[i % 2].url, seeded.key), range(n)))
    assert [r.status_code for r in responses] == [200] * n
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == n
    rows = rows_when(app, n, wait=15)
    assert {r.request_id for r in rows} == ids
    assert len(rows) == n


def test_key_revoked_on_the_cli_is_refused_by_both_processes(app, seeded, pair, db_url, tmp_path):
    for server in pair:
        assert chat(server.url, seeded.key).status_code == 200
    with app.app_context():
        from promptproxy.extensions import db
        from promptproxy.models import ApiKey

        key_id = db.session.scalar(db.select(ApiKey.id).where(ApiKey.user_id == seeded.user_id))
    # The servers are the other processes; the CLI writes the same database from this one (tests/cli_runner.py).
    out = run_cli("key", "revoke", str(key_id), env=cli_env(db_url, tmp_path / "cli"), ok=False)
    assert out.exit_code == 0, out.stderr
    for server in pair:
        deadline = time.monotonic() + 10  # catalog revision check: about a second per process
        status = chat(server.url, seeded.key).status_code
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = chat(server.url, seeded.key).status_code
        r = chat(server.url, seeded.key)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
