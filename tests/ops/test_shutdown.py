"""SIGTERM to a real `promptproxy serve` process: stop accepting, finish streams, flush every log row."""
from __future__ import annotations

import threading

import openai
import pytest
import requests

from ..conftest import log_rows
from ..upstream import chunk
from .procs import Server, server_env

pytestmark = pytest.mark.slow  # a real `promptproxy serve` process per test


@pytest.fixture
def gateway_proc(app, seeded, db_url, tmp_path):
    """A gateway subprocess on the test database with a slow log flush (rows wait in the queue)."""
    env = server_env(db_url, tmp_path / "instance", PROMPTPROXY_LOG_FLUSH_INTERVAL="3600",
                     PROMPTPROXY_SHUTDOWN_GRACE="20")
    server = Server(env, tmp_path / "server.log")
    yield server
    server.stop()


def test_sigterm_lets_a_stream_finish_and_flushes_every_row(app, seeded, upstream, gateway_proc):
    client = openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key=seeded.key, max_retries=0)
    for _ in range(25):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert log_rows(app) == []  # queued in the server process, not yet written (flush interval is an hour)

    release = threading.Event()
    started = threading.Event()

    def slow_stream(req):
        model = req["body"]["model"]

        def gen():
            yield "data: " + __import__("json").dumps(chunk(model, "Bon", role=True)) + "\n\n"
            started.set()
            release.wait(15)
            yield "data: " + __import__("json").dumps(chunk(model, "jour", finish="stop")) + "\n\n"
            yield "data: [DONE]\n\n"
        return 200, {"Content-Type": "text/event-stream"}, gen()

    upstream.handler = slow_stream
    pieces: list[str] = []

    def consume():
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
        for event in stream:
            pieces.extend(c.delta.content or "" for c in event.choices)

    reader = threading.Thread(target=consume)
    reader.start()
    assert started.wait(15)
    gateway_proc.proc.terminate()  # SIGTERM mid-stream
    # the listener closes: new connections are refused while the stream is still running
    for _ in range(200):
        try:
            requests.get(gateway_proc.url + "/healthz", timeout=1)
        except requests.ConnectionError:
            break
        threading.Event().wait(0.02)
    else:
        pytest.fail("the gateway kept accepting connections after SIGTERM")
    assert gateway_proc.proc.poll() is None  # still draining the stream
    release.set()
    reader.join(15)
    assert "".join(pieces) == "Bonjour"
    assert gateway_proc.proc.wait(30) == 0
    rows = log_rows(app)
    assert len(rows) == 26
    assert len({r.request_id for r in rows}) == 26
    assert rows[-1].stream and rows[-1].status == 200
    assert "request log flushed" in gateway_proc.output()


def test_grace_period_ends_a_stuck_stream_and_still_logs_it(app, seeded, upstream, db_url, tmp_path):
    env = server_env(db_url, tmp_path / "instance", PROMPTPROXY_LOG_FLUSH_INTERVAL="3600",
                     PROMPTPROXY_SHUTDOWN_GRACE="0.5")
    server = Server(env, tmp_path / "server.log")
    release = threading.Event()
    started = threading.Event()

    def stuck(req):
        def gen():
            yield "data: " + __import__("json").dumps(chunk("m", "Bon", role=True)) + "\n\n"
            started.set()
            while not release.wait(0.1):
                yield ": ping\n\n"
            yield "data: [DONE]\n\n"
        return 200, {"Content-Type": "text/event-stream"}, gen()

    upstream.handler = stuck
    try:
        resp = requests.post(server.url + "/v1/chat/completions", stream=True, timeout=30,
                             headers={"Authorization": f"Bearer {seeded.key}"},
                             json={"model": "gpt-4o-mini", "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200
        assert started.wait(15)
        server.proc.terminate()
        assert server.proc.wait(30) == 0
    finally:
        release.set()
        server.stop()
    rows = log_rows(app)
    assert len(rows) == 1 and rows[0].stream
    assert "grace period over" in server.output()
