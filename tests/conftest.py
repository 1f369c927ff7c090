"""Fixtures: a migrated database (SQLite, or PostgreSQL when asked), the app, a live gateway, a real upstream."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from waitress import wasyncore

from promptproxy import create_app, manage
from promptproxy.extensions import db
from promptproxy.server import make_server

from .upstream import Upstream

PG_URL = os.environ.get("PROMPTPROXY_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("PROMPTPROXY_TEST_REDIS_URL")
ENC_KEY = "test-encryption-key-0123456789abcdef"


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers started in a subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_config(db_url: str, instance: Path) -> dict:
    """Test settings: real database, private upstreams allowed, fast caches."""
    return {"DATABASE_URL": db_url, "SECRET_KEY": "test-secret-key-0123456789abcdefgh", "ENCRYPTION_KEY": ENC_KEY,
            "ALLOW_PRIVATE_UPSTREAMS": True, "TESTING": True, "CACHE_TTL": 0.0, "THREADS": 64,
            "LOG_FLUSH_INTERVAL": 0.05, "BREAKER_THRESHOLD": 0}


def migrate(url: str, instance: Path) -> None:
    """Create the schema through the migrations, as production does."""
    from flask_migrate import upgrade

    app = create_app(base_config(url, instance))
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """Migrate once: a template SQLite file, or the PostgreSQL schema."""
    instance = tmp_path_factory.mktemp("instance")
    if PG_URL:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
        migrate(PG_URL, instance)
        return PG_URL
    path = instance / "template.db"
    migrate(f"sqlite:///{path}", instance)
    return path


@pytest.fixture
def db_url(template_db, tmp_path):
    """A fresh database per test: a copy of the template, or truncated PostgreSQL tables."""
    if PG_URL:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            tables = [t for t in sa.inspect(conn).get_table_names() if t != "alembic_version"]
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return PG_URL
    target = tmp_path / "pp.db"
    shutil.copy(template_db, target)
    return f"sqlite:///{target}"


@pytest.fixture
def app(db_url, tmp_path, monkeypatch):
    """The app on a fresh database."""
    monkeypatch.setenv("PROMPTPROXY_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(base_config(db_url, tmp_path))
    yield app
    app.extensions["promptproxy"].close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def upstream():
    """A real local OpenAI-compatible HTTP server."""
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def claude():
    """A real local HTTP server speaking Anthropic's Messages API (tests/anthropic_upstream.py)."""
    from .anthropic_upstream import AnthropicUpstream

    server = AnthropicUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def live(app):
    """The gateway served by waitress on a free port, as in production."""
    server = make_server(app, "127.0.0.1", 0, threads=64)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    # Close every channel (idle keep-alive ones too) from inside the loop, so it ends now, not at join's timeout.
    try:
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    except OSError:  # the loop's wake-up pipe is already gone (loop ended, or its fd number was reused)
        wasyncore.close_all(server._map, ignore_all=True)
    thread.join(5)
    server.task_dispatcher.shutdown(timeout=5)  # end the worker threads, or every test leaks 64 of them


class Seed:
    """What `seeded` created: the raw key and names to use in requests."""

    key: str
    other_key: str
    user_id: int


@pytest.fixture
def seeded(app, upstream) -> Seed:
    """Provider -> models -> prompt -> user with all access -> key, all through manage (as CLI and UI do)."""
    seed = Seed()
    with app.app_context():
        p = manage.create_provider("t", "local", "openai", upstream.url + "/v1", api_key="sk-upstream-secret-1234")
        manage.create_model("t", "gpt-4o-mini", p, "real-model-name:latest", input_price=1.0, output_price=2.0)
        manage.create_model("t", "text-davinci", p, "davinci-002", kind="completion")
        manage.create_model("t", "embed", p, "text-embedding-3-small", kind="embedding")
        manage.create_prompt("t", "translator", "Translate the user's words into French.")
        user = manage.create_user("t", "alice", email="alice@example.com", all_models=True, all_prompts=True)
        _, seed.key = manage.create_key("t", user)
        other = manage.create_user("t", "bob", allow_models=["gpt-4o-mini"])
        _, seed.other_key = manage.create_key("t", other)
        db.session.commit()
        seed.user_id = user.id
    return seed


def flush_logs(app):
    """Write queued request-log rows now."""
    app.extensions["promptproxy"].logs.flush()


def log_rows(app):
    """All request-log rows, oldest first."""
    from promptproxy.models import RequestLog

    flush_logs(app)
    with app.app_context():
        rows = db.session.scalars(sa.select(RequestLog).order_by(RequestLog.id)).all()
        db.session.expunge_all()
        return rows


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll a condition (no fixed sleeps): True as soon as it holds, else its value when the wait runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def rows_when(app, count: int, wait: float = 10.0):
    """All rows once `count` have been written (or the wait ran out).

    A streamed call's row is queued after its last event, and SDKs stop reading at [DONE], so a test can finish
    reading before the row exists.
    """
    deadline = time.monotonic() + wait
    while True:
        rows = log_rows(app)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
