"""Client disconnects, many concurrent streams, and no database connection held while streams run."""
from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import openai

from promptproxy.extensions import db

from ..conftest import wait_for
from ..upstream import chunk
from .conftest import events, post, rows_when


def slow_stream(gap: float, count: int, started: threading.Event | None = None, release: threading.Event | None = None):
    """A handler sending `count` chunks `gap` apart; optionally pausing after the first until released."""
    def handler(req):
        model = req["body"]["model"]

        def parts():
            yield f"data: {json.dumps(chunk(model, 'tok'))}\n\n"
            if release is not None:
                started.set() if started is not None else None
                release.wait(10)
            for _ in range(count - 1):
                yield gap
                yield f"data: {json.dumps(chunk(model, 'tok'))}\n\n"
            yield "data: [DONE]\n\n"
        return 200, {"Content-Type": "text/event-stream"}, parts()
    return handler


def test_client_disconnect_closes_the_upstream_and_records_499(live, seeded, upstream, app):
    upstream.handler = slow_stream(0.05, 400)
    host, port = live.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                       "stream": True}).encode()
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + seeded.key.encode() + b"\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    sock.close()
    # The gateway notices, closes its upstream connection, and the upstream's next write fails.
    assert wait_for(lambda: upstream.disconnects == 1)
    [row] = rows_when(app, 1)
    assert (row.status, row.error_type, row.stream) == (499, "client_disconnected", True)
    assert row.usage_estimated is True and row.output_tokens >= 3 and row.cost is not None
    upstream.handler = upstream.default  # the gateway (and its upstream pool) carry on normally
    resp = post(live, seeded.key, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                   "stream": True})
    assert events(resp.content)[-1] == "[DONE]"


def test_fifty_concurrent_streams_complete_and_hold_no_database_connection(live, seeded, upstream, app):
    release = threading.Event()
    gates = []

    def handler(req):
        event = threading.Event()
        gates.append(event)
        return slow_stream(0.01, 5, event, release)(req)
    upstream.handler = handler
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)

    def one(i):
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                messages=[{"role": "user", "content": f"hi {i}"}])
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with app.app_context():
        engine = db.engine
    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(one, i) for i in range(50)]
        # All 50 streams are open (each upstream paused after its first chunk) ...
        assert wait_for(lambda: len(gates) == 50 and all(g.is_set() for g in gates), 15)
        # ... and none of them holds a pooled database connection while it runs.
        assert wait_for(lambda: engine.pool.checkedout() == 0, 2), engine.pool.status()
        release.set()
        results = [f.result(timeout=30) for f in futures]
    assert results == ["tok" * 5] * 50
    rows = rows_when(app, 50)
    assert len(rows) == 50
    assert {(r.status, r.stream, r.error_type) for r in rows} == {(200, True, None)}
    assert all(r.output_tokens > 0 for r in rows)
    assert len({r.request_id for r in rows}) == 50


def test_each_event_reaches_the_client_while_the_upstream_holds_the_rest(live, seeded, upstream):
    # Whole responses are buffered by waitress (send_bytes); a stream must still be flushed event by event.
    release, finished = threading.Event(), threading.Event()

    def handler(req):
        def parts():
            yield f"data: {json.dumps(chunk(req['body']['model'], 'first'))}\n\n"
            release.wait(20)
            yield f"data: {json.dumps(chunk(req['body']['model'], 'second'))}\n\n"
            yield "data: [DONE]\n\n"
            finished.set()
        return 200, {"Content-Type": "text/event-stream"}, parts()
    upstream.handler = handler
    try:
        resp = post(live, seeded.key, {"model": "gpt-4o-mini", "stream": True,
                                       "messages": [{"role": "user", "content": "hi"}]}, stream=True)
        lines = resp.iter_lines()
        first = next(line for line in lines if line)
        assert not finished.is_set()  # the first event arrived while the upstream still held the rest
        assert json.loads(first.removeprefix(b"data: "))["choices"][0]["delta"]["content"] == "first"
    finally:
        release.set()
    rest = [line for line in lines if line]
    assert json.loads(rest[0].removeprefix(b"data: "))["choices"][0]["delta"]["content"] == "second"
    assert rest[-1] == b"data: [DONE]"
