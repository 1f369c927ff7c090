"""The gateway's one shared-state store: chosen once, and the limiter, the cache and the login throttle all use it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promptproxy import create_app
from promptproxy.admin.auth import GENERIC_FAILURE
from promptproxy.core import sharedstore
from promptproxy.core.sharedstore import SharedCounters
from promptproxy.routing import deployments

from .admin.conftest import ADMIN_PW, login, people  # noqa: F401 - the fixture
from .conftest import REDIS_URL, base_config
from .limits.conftest import closed_port, redis_prefix  # noqa: F401 - the fixture

# The health branch moves deployments onto gw.state; until then routing/deployments.py makes a client of its own.
OWN_DEPLOYMENT_CLIENT = hasattr(deployments, "RedisStore")


def make_app(db_url, where, **settings):
    """Another instance of the gateway on the same database."""
    return create_app({**base_config(db_url, where), **settings})


def test_the_limiter_counts_in_the_workers_file_when_serve_shares_one(db_url, tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    sharedstore.create(path)
    gw = make_app(db_url, tmp_path / "a", SHARED_STORE=path).extensions["promptproxy"]
    try:
        assert gw.state.kind == "file"
        assert gw.limiter.state is gw.state and gw.limiter.storage is gw.state.limits_storage()
        assert isinstance(gw.limiter.counters, SharedCounters) and gw.limiter.counters.shared is gw.state.shared
        assert gw.cache.redis is None  # the cache's entries stay in the database without Redis
    finally:
        gw.close()


@pytest.mark.skipif(not REDIS_URL, reason="needs PROMPTPROXY_TEST_REDIS_URL")
def test_with_redis_the_limiter_cache_and_login_throttle_use_the_states_client(db_url, tmp_path,
                                                                              redis_prefix):  # noqa: F811
    app = make_app(db_url, tmp_path / "a", REDIS_URL=REDIS_URL, REDIS_PREFIX=redis_prefix)
    gw = app.extensions["promptproxy"]
    try:
        assert gw.state.kind == "redis"
        assert gw.limiter.storage is gw.state.limits_storage()
        assert gw.limiter.storage.get_connection() is gw.state.client
        assert gw.cache.redis is gw.state.client
        assert app.extensions["admin_login_throttle"].storage is gw.state.limits_storage()
    finally:
        gw.close()


@pytest.mark.skipif(not REDIS_URL, reason="needs PROMPTPROXY_TEST_REDIS_URL")
@pytest.mark.xfail(OWN_DEPLOYMENT_CLIENT, strict=True, reason="routing/deployments.py has its own Redis client")
def test_one_redis_client_per_app(db_url, tmp_path, redis_prefix, monkeypatch):  # noqa: F811
    import redis

    made = []
    real = redis.Redis.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    gw = make_app(db_url, tmp_path / "a", REDIS_URL=REDIS_URL, REDIS_PREFIX=redis_prefix).extensions["promptproxy"]
    gw.close()
    assert len(made) == 1


def test_without_redis_nothing_imports_redis(db_url, tmp_path):
    """redis-py costs ~8 MB per process: neither the in-process store nor the workers' file may load it."""
    path = str(tmp_path / "shared.sqlite3")
    sharedstore.create(path)
    code = (
        "import json, sys\n"
        "from promptproxy import create_app\n"
        "for extra in ({}, {'SHARED_STORE': sys.argv[1]}):\n"
        "    app = create_app({**json.loads(sys.argv[2]), **extra})\n"
        "    state = app.extensions['promptproxy'].state\n"
        "    state.take('k', 1, 1, 60); state.limits_storage().acquire_entry('k', 1, 60)\n"
        "    assert app.test_client().post('/admin/login', data={}).status_code == 400\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PROMPTPROXY_REDIS_URL", "PROMPTPROXY_SHARED_STORE")}
    args = [sys.executable, "-c", code, path, json.dumps(base_config(db_url, tmp_path))]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(not REDIS_URL, reason="needs PROMPTPROXY_TEST_REDIS_URL")
def test_two_instances_with_redis_count_login_failures_once(db_url, tmp_path, redis_prefix, people):  # noqa: F811 - fixtures
    apps = [make_app(db_url, tmp_path / f"i{i}", REDIS_URL=REDIS_URL, REDIS_PREFIX=redis_prefix,
                     LOGIN_MAX_FAILURES=3, WTF_CSRF_ENABLED=True) for i in range(2)]
    try:
        clients = [a.test_client() for a in apps]
        statuses = [login(clients[i % 2], "root@example.com", "wrong-password-1").status_code for i in range(4)]
        assert statuses == [401, 401, 429, 429]  # the third failure blocks the key on both instances
        resp = login(clients[1], "root@example.com", ADMIN_PW)
        assert resp.status_code == 429 and GENERIC_FAILURE in resp.get_data(as_text=True)
    finally:
        for a in apps:
            a.extensions["promptproxy"].close()


def test_login_still_throttles_in_process_when_redis_is_down(db_url, tmp_path, people, caplog):  # noqa: F811
    app = make_app(db_url, tmp_path / "a", REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0", LOGIN_MAX_FAILURES=2)
    try:
        client = app.test_client()
        with caplog.at_level("WARNING", logger="promptproxy.admin"):
            failed = [login(client, "root@example.com", "wrong-password-1") for _ in range(3)]
        assert [r.status_code for r in failed] == [401, 429, 429]
        assert all(GENERIC_FAILURE in r.get_data(as_text=True) for r in failed)
        assert any("login throttle store unavailable" in r.getMessage() for r in caplog.records)
        assert login(client, "mia@example.com", "member-password-1").status_code == 303  # password login still works
    finally:
        app.extensions["promptproxy"].close()
