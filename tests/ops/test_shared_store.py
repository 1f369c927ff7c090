"""The workers' shared file: each `SharedFile` below has its own connections, as a separate worker process would."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from promptproxy.core.sharedstore import SharedCounters, SharedFile, SharedStorage, SharedThrottle
from promptproxy.workers import SHARED_STORE_ENV, Supervisor


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "shared.sqlite3")


def test_a_moving_window_is_exact_across_workers(path):
    workers = [SharedStorage(shared=SharedFile(path)) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda i: workers[i % 2].acquire_entry("rpm:user:1", 9, 60), range(40)))
    assert taken.count(True) == 9
    assert workers[0].get_moving_window("rpm:user:1", 9, 60)[1] == 9
    workers[1].clear("rpm:user:1")
    assert workers[0].get_moving_window("rpm:user:1", 9, 60)[1] == 0


def test_fixed_window_counts_add_up_across_workers(path):
    a, b = SharedStorage(shared=SharedFile(path)), SharedStorage(shared=SharedFile(path))
    assert a.incr("tpm", 60, 100) == 100
    assert b.incr("tpm", 60, 50) == 150
    assert a.get("tpm") == 150 and a.get_expiry("tpm") > 0


def test_concurrency_slots_are_exact_across_workers(path):
    workers = [SharedCounters(SharedFile(path)) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda i: workers[i % 2].acquire("user:1", 3, 60), range(20)))
    assert taken.count(True) == 3
    workers[1].release("user:1")  # given back by a different worker than took it
    assert workers[0].acquire("user:1", 3, 60) is True
    assert workers[1].acquire("user:1", 3, 60) is False


def test_the_login_throttle_counts_failures_of_all_workers(path):
    a, b = SharedThrottle(SharedFile(path), 3, 900), SharedThrottle(SharedFile(path), 3, 900)
    key = ("alice@example.com", "127.0.0.1")
    assert a.attempt(key) and b.attempt(key)
    a.fail(key)
    assert b.blocked(key) and not b.attempt(key)
    a.reset(key)
    assert not b.blocked(key)


def _open_store(path: str, barrier) -> None:
    """What a worker does first with the store: open it (exit 1 if that fails)."""
    barrier.wait(10)
    try:
        SharedFile(path)._conn().execute("SELECT count(*) FROM counters").fetchone()
    except sqlite3.Error:
        os._exit(1)
    os._exit(0)


def test_workers_starting_at_once_all_open_the_store(monkeypatch):
    """The supervisor makes the file (WAL, schema) before it forks; workers that switched it to WAL themselves at
    the same moment failed with "database is locked" and died (about 4 % of starts)."""
    ctx = multiprocessing.get_context("fork")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # run() installs handlers; not in the test process
    monkeypatch.setenv(SHARED_STORE_ENV, "")  # run() sets it; unset again after the test
    codes = []
    for _ in range(40):
        supervisor, started = Supervisor(sock=None, count=3, run_worker=None), []
        barrier = ctx.Barrier(3)

        def spawn(slot, supervisor=supervisor, started=started, barrier=barrier):  # a real process, no app
            started.append(ctx.Process(target=_open_store, args=(os.environ[SHARED_STORE_ENV], barrier)))
            started[-1].start()
            if slot == supervisor.count:
                for proc in started:
                    proc.join(20)
                    codes.append(proc.exitcode)

        monkeypatch.setattr(supervisor, "_spawn", spawn)
        assert supervisor.run() == 0
    assert codes == [0] * 120
