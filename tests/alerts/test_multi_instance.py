"""Two `promptproxy serve` processes sharing PostgreSQL send each budget threshold once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import ENC_KEY, PG_URL, wait_for
from ..limits.conftest import chat, set_limits
from ..limits.test_multi_instance import serve_two
from .conftest import deliveries, make_hook
from .test_events import dollars_per_token

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs PROMPTPROXY_TEST_DATABASE_URL (PostgreSQL) to share")


@pytest.fixture
def gateways(app, seeded, tmp_path):
    """Two gateway processes on the test database, each with its own alerts thread."""
    with app.app_context():  # with an admin present, neither process writes a set-up token (a start-up race)
        manage.create_user("test", "root", role="admin")
        db.session.commit()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTPROXY_DATABASE_URL": PG_URL,
           "PROMPTPROXY_SECRET_KEY": "test-secret-key-0123456789abcdefgh", "PROMPTPROXY_ENCRYPTION_KEY": ENC_KEY,
           "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1", "PROMPTPROXY_THREADS": "16", "PROMPTPROXY_CACHE_TTL": "0",
           "PROMPTPROXY_INSTANCE_PATH": str(tmp_path / "gw-instance")}
    env.pop("PROMPTPROXY_REDIS_URL", None)
    yield from serve_two(env, tmp_path)


def test_each_threshold_is_sent_once_by_two_processes(app, seeded, receiver, gateways):
    make_hook(app, receiver.url, events="budget")
    dollars_per_token(app)
    set_limits(app, budget=36.0, period="month")
    statuses = [chat(gateways[i % 2], seeded.key, max_tokens=7).status_code for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    # The second process saw 100 % and tried 50 % and 80 % too; the unique constraint kept one row each.
    assert wait_for(lambda: len(receiver.events("budget.threshold")) >= 3)
    assert wait_for(lambda: all(d.status == "delivered" for d in deliveries(app)))
    assert sorted(e["data"]["threshold_percent"] for e in receiver.events("budget.threshold")) == [50.0, 80.0, 100.0]
    assert len(deliveries(app)) == 3
