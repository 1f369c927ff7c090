"""`promptproxy serve` under many concurrent streams, and its waitress settings."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from promptproxy.config import DEFAULTS
from promptproxy.server import make_server, waitress_options

from ..conftest import ENC_KEY, free_port
from ..upstream import chunk
from .conftest import rows_when

ROOT = Path(__file__).resolve().parents[2]


def test_default_waitress_options_fit_200_streams():
    opts = waitress_options(DEFAULTS, DEFAULTS["THREADS"])
    assert opts["threads"] >= 200 and opts["connection_limit"] >= 2 * 200
    assert opts["channel_request_lookahead"] == 1 and opts["send_bytes"] == 18000  # streams: StreamingTask
    assert opts["asyncore_use_poll"] is True and opts["outbuf_high_watermark"] == 1024 * 1024
    assert waitress_options({**DEFAULTS, "CONNECTION_LIMIT": 50}, 8)["connection_limit"] == 50
    assert waitress_options(DEFAULTS, 8)["connection_limit"] == 100


def _queued(count: int, port: int) -> list:
    """`count` client connections the kernel has completed but the server has not accepted yet."""
    import socket

    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    time.sleep(0.05)
    return clients


@pytest.mark.parametrize("limit", [0, 6])
def test_a_wake_up_accepts_every_waiting_connection_up_to_the_limit(app, limit):
    """A burst is accepted in one pass of the event loop (waitress alone takes one connection per pass)."""
    app.config["CONNECTION_LIMIT"] = limit
    server = make_server(app, "127.0.0.1", 0, 8)
    clients = _queued(20, server.effective_port)
    try:
        open_before = len(server._map)
        server.handle_accept()  # what the loop calls when the listening socket is readable
        accepted = len(server._map) - open_before
        assert accepted == (20 if not limit else limit - open_before)
        server.handle_accept()  # nothing left, or still at the limit: no error, nothing more
        assert len(server._map) - open_before == accepted
    finally:
        for client in clients:
            client.close()
        server.close()
        server.task_dispatcher.shutdown(timeout=1)


@pytest.fixture
def served(app, seeded, db_url, tmp_path):
    """`python -m promptproxy.cli serve` in a subprocess on the test database; yields (url, threads line)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTPROXY_DATABASE_URL": str(db_url),
           "PROMPTPROXY_ENCRYPTION_KEY": ENC_KEY, "PROMPTPROXY_SECRET_KEY": "test-secret-key-0123456789abcdefgh",
           "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "true", "PROMPTPROXY_PORT": str(port),
           "PROMPTPROXY_INSTANCE_PATH": str(tmp_path / "served"), "PROMPTPROXY_THREADS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "promptproxy.cli", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner = ""
    try:
        while "serving on" not in banner:
            line = proc.stdout.readline()
            assert line, f"server exited: {banner}"
            banner += line
        yield f"http://127.0.0.1:{port}", banner
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.slow
def test_serve_streams_200_at_once(served, seeded, upstream, app):
    url, banner = served
    assert "threads=512" in banner
    entered, release = [], threading.Event()

    def handler(req):
        model = req["body"]["model"]
        entered.append(1)

        def parts():
            yield f"data: {json.dumps(chunk(model, 'a'))}\n\n"
            release.wait(20)  # hold every stream open until all 200 are in flight at once
            for _ in range(5):
                yield 0.1
                yield f"data: {json.dumps(chunk(model, 'b'))}\n\n"
            yield "data: [DONE]\n\n"
        return 200, {"Content-Type": "text/event-stream"}, parts()
    upstream.handler = handler

    def one(i):
        resp = requests.post(url + "/v1/chat/completions", timeout=60,
                             headers={"Authorization": f"Bearer {seeded.key}"},
                             json={"model": "gpt-4o-mini", "stream": True,
                                   "messages": [{"role": "user", "content": str(i)}]})
        return resp.status_code, resp.content.endswith(b"data: [DONE]\n\n"), resp.content.count(b'"content":"b"')

    with ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(one, i) for i in range(200)]
        deadline = time.monotonic() + 30
        while len(entered) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        in_flight = len(entered)
        release.set()
        results = [f.result() for f in futures]
    assert in_flight == 200  # the server had all 200 streams open at the same time
    assert results == [(200, True, 5)] * 200
    rows = rows_when(app, 200, wait=15)
    assert len(rows) == 200 and {r.status for r in rows} == {200}


def test_serve_threads_option_and_env(app):
    from promptproxy.cli import cli
    from promptproxy.config import from_env

    out = app.test_cli_runner().invoke(cli, ["serve", "--help"])
    assert "--threads" in out.output and "PROMPTPROXY_THREADS" in out.output
    assert from_env({"PROMPTPROXY_THREADS": "300"})["THREADS"] == 300
    assert from_env({"PROMPTPROXY_CONNECTION_LIMIT": "1000"})["CONNECTION_LIMIT"] == 1000


def test_worker_threads_start_on_demand_up_to_the_limit():
    from promptproxy.server import GrowingDispatcher

    release, started, done = threading.Event(), [], []

    class Task:
        def service(self):
            started.append(1)
            release.wait(10)
            done.append(1)

    pool = GrowingDispatcher(limit=20, start=2)
    try:
        assert len(pool.threads) == 2  # idle: two threads, not twenty
        for _ in range(30):
            pool.add_task(Task())
        deadline = time.monotonic() + 10
        while len(started) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert len(started) == 20 and len(pool.threads) == 20 and len(pool.queue) == 10  # capped at the limit
        release.set()
        deadline = time.monotonic() + 10
        while len(done) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(done) == 30 and len(pool.threads) == 20
    finally:
        release.set()
        pool.shutdown(timeout=5)
    assert not pool.threads
