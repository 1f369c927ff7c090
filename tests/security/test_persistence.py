"""Persistence under load: no "database is locked", one row per request, kill -9 safe, SIGTERM flushes."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa

from promptproxy.extensions import db
from promptproxy.models import RequestLog

from ..conftest import free_port, log_rows, wait_for
from .helpers import ROOT, cli_env

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_sqlite_connections_use_wal_and_a_busy_timeout(app):
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("SQLite pragmas")
    with app.app_context(), db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_200_concurrent_requests_give_one_row_each_and_no_lock_errors(live, app, seeded, upstream, caplog):
    caplog.set_level(logging.WARNING)
    auth = {"Authorization": f"Bearer {seeded.key}"}
    local = threading.local()

    def one(i: int) -> tuple[int, str]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        kind = i % 4
        if kind == 0:
            resp = session.post(live + "/v1/chat/completions", json=CHAT, headers=auth, timeout=30)
        elif kind == 1:
            resp = session.post(live + "/v1/embeddings", json={"model": "embed", "input": "x"}, headers=auth,
                                timeout=30)
        elif kind == 2:
            resp = session.post(live + "/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=auth,
                                timeout=30)
        else:
            resp = session.post(live + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth,
                                timeout=30)
            assert resp.text.endswith("data: [DONE]\n\n")
        return resp.status_code, resp.headers["x-request-id"]

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(200)))
    assert sorted({status for status, _ in results}) == [200, 404]
    rows = log_rows(app)
    assert len(rows) == 200
    assert {r.request_id for r in rows} == {rid for _, rid in results}
    assert sum(r.status == 404 for r in rows) == 50
    assert "database is locked" not in caplog.text.lower()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- a real server process ---------------------------------------------------------------------------
class Server:
    """`python -m promptproxy.cli serve` in a subprocess on the test database."""

    def __init__(self, app, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            # One process: kill -9 here is a crash of the gateway itself (with --workers N it would only kill the
            # supervisor, whose workers then drain and flush; tests/ops/test_workers.py covers that).
            [sys.executable, "-m", "promptproxy.cli", "serve", "--port", str(self.port), "--threads", "16",
             "--workers", "1"],
            cwd=ROOT, env=cli_env(app, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode()) from None
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        code = self.proc.wait(30)
        self.proc.stderr.close()
        return code


def count_rows(app) -> int:
    with app.app_context():
        db.session.remove()
        return db.session.scalar(sa.select(sa.func.count()).select_from(RequestLog))


def load(url: str, key: str, stop: threading.Event, sent: list) -> None:
    session = requests.Session()
    while not stop.is_set():
        try:
            resp = session.post(url + "/v1/chat/completions", json=CHAT, timeout=5,
                                headers={"Authorization": f"Bearer {key}"})
            sent.append(resp.status_code)
        except requests.RequestException:
            sent.append(None)
            return


@pytest.mark.slow
def test_kill_9_under_load_keeps_the_database_intact(app, seeded, upstream):
    server = Server(app)
    stop, sent = threading.Event(), []
    threads = [threading.Thread(target=load, args=(server.url, seeded.key, stop, sent)) for _ in range(8)]
    for t in threads:
        t.start()
    # Some rows must have reached the database before the crash (the batch writer flushes on its own clock).
    assert wait_for(lambda: len(sent) >= 150 and count_rows(app) > 0, 60)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    answered = sum(1 for s in sent if s == 200)
    written = count_rows(app)
    assert 0 < written <= answered  # the loss is bounded by what the batch writer still held
    if app.config["DATABASE_URL"].startswith("sqlite"):
        with app.app_context(), db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    # A restart works on the same database and keeps writing one row per request.
    server = Server(app)
    for _ in range(5):
        assert requests.post(server.url + "/v1/chat/completions", json=CHAT, timeout=10,
                             headers={"Authorization": f"Bearer {seeded.key}"}).status_code == 200
    assert server.stop() == 0
    assert count_rows(app) == written + 5
    with app.app_context():
        ids = db.session.scalars(sa.select(RequestLog.request_id)).all()
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_sigterm_flushes_every_queued_row(app, seeded, upstream):
    # A long flush interval: every row is still queued when SIGTERM arrives.
    server = Server(app, PROMPTPROXY_LOG_FLUSH_INTERVAL="30")
    session = requests.Session()
    for _ in range(25):
        resp = session.post(server.url + "/v1/chat/completions", json=CHAT, timeout=10,
                            headers={"Authorization": f"Bearer {seeded.key}"})
        assert resp.status_code == 200
    session.close()
    assert count_rows(app) == 0
    assert server.stop(signal.SIGTERM) == 0
    assert count_rows(app) == 25
