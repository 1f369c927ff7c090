"""Fixtures: a migrated database (SQLite, or PostgreSQL when asked), the app, a live gateway, a real upstream.

The suite runs in parallel (`pytest -n auto`, pytest-xdist): each worker has its own PostgreSQL database and Redis
key prefix, and shares its expensive servers (the fake upstreams per module, Chromium per session) between tests,
resetting them for each test.
"""
from __future__ import annotations

import asyncio
import gc
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

from . import needs, speedups
from .upstream import Upstream

speedups.install()  # before any app is made
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1... in an xdist worker; None in a plain run
ENC_KEY = "test-encryption-key-0123456789abcdef"


def worker_database_url(url: str | None, worker: str | None) -> str | None:
    """The worker's own PostgreSQL database, `<name>_<worker>` (the given one in a plain run)."""
    if not url or not worker:
        return url
    parsed = sa.engine.make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


PG_URL = worker_database_url(os.environ.get("PROMPTPROXY_TEST_DATABASE_URL"), WORKER)
REDIS_URL = os.environ.get("PROMPTPROXY_TEST_REDIS_URL")
# The prefix of the keys that an app or `serve` without a prefix of its own writes: this worker's alone.
REDIS_PREFIX = f"pp-test-{WORKER or 'main'}"
if WORKER and PG_URL:  # tests and the processes they start read the variable too: they see this worker's database
    os.environ["PROMPTPROXY_TEST_DATABASE_URL"] = PG_URL
if REDIS_URL:
    os.environ["PROMPTPROXY_REDIS_PREFIX"] = REDIS_PREFIX


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


def flush_prefix(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (never a whole Redis database: other workers and runs share it)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _worker_redis_keys():
    """Start from no keys under this worker's prefix (a run that ended early can leave some behind)."""
    if REDIS_URL:
        flush_prefix(REDIS_URL, REDIS_PREFIX)
    yield
    if REDIS_URL:
        flush_prefix(REDIS_URL, REDIS_PREFIX)


def create_database(url: str) -> None:
    """Create the database of `url` unless it exists, through the server's `postgres` database."""
    target = sa.engine.make_url(url)
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database})
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file to copy, made once per worker (also in a PostgreSQL run, for a test that wants one)."""
    instance = tmp_path_factory.mktemp("instance")
    path = instance / "template.db"
    migrate(f"sqlite:///{path}", instance)
    return path


@pytest.fixture(scope="session")
def template_db(request, tmp_path_factory):
    """Migrate once per worker: the template SQLite file, or the worker's PostgreSQL schema."""
    if not PG_URL:
        return request.getfixturevalue("sqlite_template")
    if WORKER:
        create_database(PG_URL)
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    migrate(PG_URL, tmp_path_factory.mktemp("instance"))
    return PG_URL


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


CHEAP_SCRYPT = "scrypt:1024:8:1"


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch):
    """Passwords hashed with scrypt at N=2^10 instead of production's 2^17 (manage.set_password).

    The same algorithm and code path, but each hash and each login check takes about a millisecond instead of a
    few hundred (admin/conftest.py's `people` does the same with `cheap_hash`). The cost is read from the stored
    hash, so logins check these at the same low cost, and so does the stand-in hash that a login with an unknown
    email is checked against (it costs what a real password costs, here as in production).
    """
    from werkzeug import security

    from promptproxy.admin import auth

    real = security.generate_password_hash

    def cheap(password: str, method: str = "scrypt", salt_length: int = 16) -> str:
        return real(password, CHEAP_SCRYPT if method.startswith("scrypt") else method, salt_length)

    monkeypatch.setattr(security, "generate_password_hash", cheap)
    monkeypatch.setattr(auth, "DUMMY_HASH", real("unknown-" + os.urandom(8).hex(), CHEAP_SCRYPT))


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


def use_fast_retries(request, **policy) -> None:
    """Real retry logic with millisecond backoff on the test's app, if it has one (no app is made for the others).

    For the autouse fixtures of folders whose tests make upstreams fail on purpose (api, routing, streaming).
    """
    if "app" in request.fixturenames:
        from promptproxy.routing.resilience import RetryPolicy

        gateway = request.getfixturevalue("app").extensions["promptproxy"]
        gateway.retry = RetryPolicy(**{"max_retries": 2, "backoff": 0.001, "backoff_max": 0.004, **policy})


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


class SharedServer:
    """One test server for a module's tests, reset for each: started on first use, again if a test stopped it."""

    def __init__(self, start):
        self.start = start
        self.started: list = []

    def take(self):
        """The server, as new for the test about to run."""
        if not self.started or not self.started[-1].running:
            self.started.append(self.start())
        return self.started[-1].reset()

    def stop(self) -> None:
        for server in self.started:
            if server.running:
                server.stop()


def shared_server(start):
    """A module-scoped fixture holding the SharedServer that `start()` makes; a test fixture takes it from there."""

    @pytest.fixture(scope="module")
    def fixture():
        servers = SharedServer(start)
        yield servers
        servers.stop()

    fixture.__doc__ = "The module's shared server (tests take it through the fixture named without `_servers`)."
    return fixture


def start_claude():
    from .anthropic_upstream import AnthropicUpstream

    return AnthropicUpstream().start()


upstream_servers = shared_server(lambda: Upstream().start())
claude_servers = shared_server(start_claude)


@pytest.fixture
def upstream(upstream_servers):
    """A real local OpenAI-compatible HTTP server, as new: nothing recorded, default answers, no delay."""
    return upstream_servers.take()


@pytest.fixture
def claude(claude_servers):
    """A real local HTTP server speaking Anthropic's Messages API (tests/anthropic_upstream.py), as new."""
    return claude_servers.take()


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


# -- a real browser (Debian's Chromium driven by Playwright; no browser download) ------------------------------
CHROMIUM = os.environ.get("PROMPTPROXY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Chromium:
    """One Chromium per worker, and the event loop Playwright's sync API runs it on."""

    def __init__(self):
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # The sync API leaves its loop set as the thread's running loop between calls, and asyncio.run() refuses
        # to start under a running loop: tests without the browser (the MCP and Agents SDK clients) run with it
        # unset, browser tests with it set again (enter/leave).
        self.loop = asyncio.get_running_loop()
        self.leave()

    def enter(self):
        """Make Playwright's loop the running one again, for a test that drives the browser."""
        asyncio._set_running_loop(self.loop)
        if not self.browser.is_connected():  # it crashed or was closed: a new one for the tests after
            self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        return self.browser

    def leave(self) -> None:
        """Close what the test opened (its contexts) and unset the loop."""
        for context in self.browser.contexts:
            context.close()
        asyncio._set_running_loop(None)

    def close(self) -> None:
        """Close Chromium and Playwright's driver at the end of the session."""
        asyncio._set_running_loop(self.loop)
        self.browser.close()
        self.playwright.stop()


@pytest.fixture(scope="session")
def _chromium():
    """Chromium launched once per session (per worker); tests take it through `browser`."""
    chromium = Chromium()
    yield chromium
    chromium.close()


@pytest.fixture
def browser(_chromium):
    """The shared Chromium; every context a test opens (a fresh one per test) is closed after it."""
    yield _chromium.enter()
    _chromium.leave()


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


# -- collection: markers from what each test needs ---------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by markers
def pytest_collection_modifyitems(config, items):
    """Mark each test `browser`, `agents`, `slow`, `postgres` from what it uses (tests/needs.py)."""
    reader = needs.Reader(needs.agent_binaries())
    for item in items:
        for name in sorted(needs.markers_for(item, reader)):
            item.add_marker(name)


def pytest_collection_finish(session):
    """Keep the garbage collector off what importing the suite built (a fifth of the run's time went to it).

    Every full collection walked the ~300,000 objects of the imported libraries and modules, which live as long as
    the process; frozen, collections only look at what the tests made. Fewer, larger young collections do the
    rest (each test allocates a whole app).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
