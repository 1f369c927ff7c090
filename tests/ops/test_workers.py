"""`promptproxy serve --workers 2` as a real process: limits exact across workers, restarts, graceful stop."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from promptproxy import manage
from promptproxy.extensions import db

from ..cli_runner import cli_env, run_cli
from ..conftest import log_rows, rows_when, wait_for
from ..upstream import chunk
from .procs import Server, server_env

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def start(db_url, tmp_path, workers: int = 2, **env) -> Server:
    """A supervisor with `workers` workers, returned once every worker serves."""
    server = Server(server_env(db_url, tmp_path / "instance", **{"PROMPTPROXY_LOG_FLUSH_INTERVAL": "0.1", **env}),
                    tmp_path / "server.log", workers=workers)
    if not wait_for(lambda: server.output().count(" serving (pid ") >= workers, 30):
        server.stop()
        pytest.fail("workers did not start:\n" + server.output())
    return server


def pids(server: Server) -> dict[int, int]:
    """Worker number -> pid of the latest process started for it (from the supervisor's log)."""
    return {int(slot): int(pid) for slot, pid in STARTED.findall(server.output())}


def served_by(server: Server) -> list[int]:
    """The worker number of every access-log line so far."""
    out = []
    for line in server.output().splitlines():
        if line.startswith("{") and '"worker"' in line:
            out.append(json.loads(line)["worker"])
    return out


def refused(url: str) -> bool:
    """A new connection is refused (no worker listens any more)."""
    try:
        requests.get(url + "/healthz", timeout=2)
    except requests.ConnectionError:
        return True
    return False


def set_user_limits(app, **limits) -> None:
    with app.app_context():
        manage.update_user("test", manage.get_user("alice"), **limits)
        db.session.commit()


def chat(base: str, key: str, **extra) -> requests.Response:
    """One chat completion on a new connection (so the kernel may hand it to either worker)."""
    return requests.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                         json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra})


def on_both_workers(server: Server, key: str, rounds: int) -> list[int]:
    """Statuses of rounds of 12 parallel chats, until both workers have answered some (at most `rounds`)."""
    statuses = []
    for _ in range(rounds):
        with ThreadPoolExecutor(12) as pool:
            statuses += [r.status_code for r in pool.map(lambda i: chat(server.url, key), range(12))]
        if wait_for(lambda: set(served_by(server)) == {1, 2}, 2):
            break
    return statuses


@pytest.fixture
def pair(app, seeded, db_url, tmp_path):
    server = start(db_url, tmp_path)
    yield server
    server.stop()


@pytest.mark.slow
def test_rpm_is_exact_across_workers(app, seeded, upstream, pair):
    set_user_limits(app, rpm=9)
    statuses = on_both_workers(pair, seeded.key, 6)
    assert set(served_by(pair)) == {1, 2}, "all requests landed on one worker"
    assert statuses.count(200) == 9  # not 9 per worker
    assert statuses.count(429) == len(statuses) - 9
    assert sum(1 for r in upstream.requests if r["path"].endswith("/chat/completions")) == 9
    rows = rows_when(app, len(statuses))
    assert len(rows) == len(statuses)
    assert sorted(r.status for r in rows) == sorted(statuses)


@pytest.mark.slow
def test_concurrency_cap_is_exact_across_workers(app, seeded, upstream, pair):
    set_user_limits(app, max_concurrent=2)
    release, arrived = threading.Event(), threading.Semaphore(0)

    def slow(req):
        arrived.release()
        release.wait(20)
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"id": "x", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    upstream.handler = slow
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(chat, pair.url, seeded.key) for _ in range(8)]
        assert wait_for(lambda: sum(1 for f in futures if f.done()) == 6, 20)  # 6 refused while 2 are held
        refused = [f.result() for f in futures if f.done()]
        release.set()
        results = [f.result() for f in futures]
    assert [r.status_code for r in refused] == [429] * 6
    assert refused[0].json()["error"]["message"].startswith("Too many concurrent requests for your user")
    assert sorted(r.status_code for r in results) == [200, 200] + [429] * 6


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_gateway_keeps_serving(app, seeded, upstream, pair):
    before = pids(pair)
    os.kill(before[1], signal.SIGKILL)
    assert wait_for(lambda: pids(pair).get(1) not in (None, before[1]), 15), pair.output()
    assert f"worker 1 (pid {before[1]}) died" in pair.output()
    assert wait_for(lambda: pair.output().count(" serving (pid ") >= 3, 20)
    assert pids(pair)[2] == before[2]  # the other worker was left alone
    with ThreadPoolExecutor(8) as pool:
        statuses = [r.status_code for r in pool.map(lambda i: chat(pair.url, seeded.key), range(16))]
    assert statuses == [200] * 16
    assert len(rows_when(app, 16)) == 16


@pytest.mark.slow
def test_sigterm_to_the_group_drains_a_stream_and_every_worker_flushes_rows(app, seeded, upstream, db_url, tmp_path):
    server = start(db_url, tmp_path, PROMPTPROXY_LOG_FLUSH_INTERVAL="3600", PROMPTPROXY_SHUTDOWN_GRACE="20")
    try:
        with ThreadPoolExecutor(8) as pool:
            assert [r.status_code for r in pool.map(lambda i: chat(server.url, seeded.key), range(24))] == [200] * 24
        assert log_rows(app) == []  # queued in the workers (flush interval an hour)
        release, started = threading.Event(), threading.Event()

        def slow_stream(req):
            def gen():
                yield "data: " + json.dumps(chunk("m", "Bon", role=True)) + "\n\n"
                started.set()
                release.wait(15)
                yield "data: " + json.dumps(chunk("m", "jour", finish="stop")) + "\n\n"
                yield "data: [DONE]\n\n"
            return 200, {"Content-Type": "text/event-stream"}, gen()

        upstream.handler = slow_stream
        resp = requests.post(server.url + "/v1/chat/completions", stream=True, timeout=30,
                             headers={"Authorization": f"Bearer {seeded.key}"},
                             json={"model": "gpt-4o-mini", "stream": True,
                                   "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200
        assert started.wait(15)
        server.proc.terminate()
        for pid in pids(server).values():  # a service manager signalling the whole group, as systemd does
            os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: "stopping 2 workers" in server.output(), 10)
        assert wait_for(lambda: refused(server.url), 10)  # soon nobody accepts any more, on any worker
        # A worker that took the second SIGTERM as "stop now" would leave its loop at once, wait up to waitress's
        # 5 s for its threads, flush and exit, cutting the stream: watch for that (both workers gone) past those 5 s.
        # The wait is the point (nothing shows earlier that it will not happen); it ends at once if it does.
        assert not wait_for(lambda: server.output().count("request log flushed") >= 2 or server.proc.poll() is not None,
                            6), server.output()
        assert server.proc.poll() is None  # still draining the stream
        release.set()
        assert "jour" in resp.text
        assert server.proc.wait(30) == 0
    finally:
        release.set()
        server.stop()
    rows = log_rows(app)
    assert len(rows) == 25 and len({r.request_id for r in rows}) == 25
    assert sum(1 for r in rows if r.stream and r.status == 200) == 1
    assert server.output().count("request log flushed") == 2
    assert "worker 1 (pid" in server.output() and "died" not in server.output()


def setup_attempt(base: str, token: str) -> requests.Response:
    """Post the first-run form on new connections (so the GET and the POST may reach different workers)."""
    session = requests.Session()
    session.headers["Connection"] = "close"
    page = session.get(base + "/admin/setup", timeout=10)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)
    return session.post(base + "/admin/setup", allow_redirects=False, timeout=30, data={
        "csrf_token": csrf, "token": token, "name": "root", "email": "root@example.com", "password": "pw-long-enough"})


@pytest.mark.slow
def test_the_setup_token_is_announced_once_and_accepted_by_any_worker(app, upstream, db_url, tmp_path):
    server = start(db_url, tmp_path)
    try:
        tokens = re.findall(r"one-time token: (\S+)", server.output())
        assert len(tokens) == 1  # by the supervisor, not once per worker (each would replace the last)
        assert setup_attempt(server.url, tokens[0]).status_code == 303
        assert requests.get(server.url + "/admin/setup", timeout=10).status_code == 404  # done, on every worker
    finally:
        server.stop()


@pytest.mark.slow
def test_the_setup_throttle_counts_failures_of_all_workers(app, upstream, db_url, tmp_path):
    server = start(db_url, tmp_path, PROMPTPROXY_LOGIN_MAX_FAILURES="4")
    try:
        token = re.search(r"one-time token: (\S+)", server.output()).group(1)
        assert [setup_attempt(server.url, "wrong").status_code for _ in range(4)] == [403] * 4
        refused = setup_attempt(server.url, token)  # the right token, but 4 failures were counted (not 4 per worker)
        assert refused.status_code == 403
        with app.app_context():
            from promptproxy.models import User

            assert db.session.scalar(db.select(db.func.count()).select_from(User).where(User.role == "admin")) == 0
    finally:
        server.stop()


def test_workers_must_be_a_positive_number_or_auto(db_url, tmp_path):
    env = cli_env(db_url, tmp_path / "instance")  # refused before serving, so in-process (tests/cli_runner.py)
    out = run_cli("serve", "--workers", "0", env=env, ok=False)
    assert out.exit_code == 2
    assert "workers must be a positive number or 'auto', not '0'" in out.stderr
    assert "Traceback" not in out.stderr
    env["PROMPTPROXY_WORKERS"] = "many"
    out = run_cli("serve", env=env, ok=False)
    assert out.exit_code == 2 and "not 'many'" in out.stderr


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_workers_stop_when_their_supervisor_is_killed(app, seeded, upstream, db_url, tmp_path):
    server = start(db_url, tmp_path)
    try:
        workers = list(pids(server).values())
        assert all(running(pid) for pid in workers)
        server.proc.kill()  # SIGKILL: no chance to stop its workers
        assert wait_for(lambda: not any(running(pid) for pid in workers), 20)
        assert "supervisor (pid" in server.output() and "is gone; stopping" in server.output()
    finally:
        server.stop()
