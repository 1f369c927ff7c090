"""Issue 25 item 12: `LOGIN_HASH_CONCURRENCY` bounds the password checks of the whole instance, not of each worker.

Two apps on one database and one shared store file stand for two workers of `serve --workers 2` (each with its own
connections to the file, as separate processes have); the lease expiry is checked with a real process that dies
holding its slots.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from promptproxy import create_app
from promptproxy.admin import auth
from promptproxy.core import sharedstore
from promptproxy.extensions import db

from ..admin.conftest import login
from ..conftest import base_config

CAP = 2


@pytest.fixture
def store(tmp_path) -> str:
    """The workers' shared file, made as the supervisor makes it before forking."""
    path = str(tmp_path / "shared.sqlite3")
    sharedstore.create(path)
    return path


@pytest.fixture
def workers(db_url, tmp_path, store, monkeypatch):
    """Two apps sharing the database and the store file, as two workers do."""
    monkeypatch.setenv("PROMPTPROXY_INSTANCE_PATH", str(tmp_path / "instance"))
    cfg = {**base_config(db_url, tmp_path), "SHARED_STORE": store, "LOGIN_HASH_CONCURRENCY": CAP}
    apps = []
    for _ in range(2):
        monkeypatch.setattr(sharedstore, "_FILES", {})  # a worker of its own: its own connections to the file
        apps.append(create_app(dict(cfg)))
    yield apps
    for app in apps:
        app.extensions["promptproxy"].close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


class Hashes:
    """Stands in for scrypt: every check blocks until released, and the most running at once is recorded."""

    def __init__(self):
        self.lock = threading.Condition()
        self.running = self.most = self.entered = 0
        self.open = threading.Event()

    def __call__(self, stored: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.entered += 1
            self.most = max(self.most, self.running)
            self.lock.notify_all()
        self.open.wait(30)
        with self.lock:
            self.running -= 1
        return False


@pytest.fixture
def hashes(monkeypatch) -> Hashes:
    found = Hashes()
    monkeypatch.setattr(auth, "check_password_hash", found)
    return found


def attempts(apps_and_emails, statuses: list, lock: threading.Condition) -> list[threading.Thread]:
    """One login thread per (app, email), each adding its status code to `statuses`."""
    def attempt(app, email):
        status = login(app.test_client(), email, "wrong-password-1").status_code
        with lock:
            statuses.append(status)
            lock.notify_all()

    threads = [threading.Thread(target=attempt, args=pair) for pair in apps_and_emails]
    for thread in threads:
        thread.start()
    return threads


def test_two_workers_together_never_hash_more_than_the_cap(workers, hashes):
    for app in workers:
        app.config["LOGIN_HASH_WAIT"] = 0  # beyond the cap: 429 at once rather than waiting
    statuses: list[int] = []
    tries = [(workers[i % 2], f"user{i}@example.com") for i in range(6)]
    threads = attempts(tries, statuses, hashes.lock)
    with hashes.lock:  # every attempt is either hashing now or already answered
        assert hashes.lock.wait_for(lambda: hashes.running + len(statuses) == len(tries), timeout=30)
        assert hashes.running == CAP  # per worker it would be 2 x CAP (the ~390 MB of the issue)
    hashes.open.set()
    for thread in threads:
        thread.join(30)
    assert hashes.most == CAP
    assert sorted(statuses) == [401] * CAP + [429] * (len(tries) - CAP)


def test_a_login_waits_for_the_slot_another_worker_frees(workers, hashes, monkeypatch):
    refused = []
    take = sharedstore.SharedSemaphore.acquire

    def counting(self):
        lease = take(self)
        if lease is None:
            with hashes.lock:
                refused.append(1)
                hashes.lock.notify_all()
        return lease

    monkeypatch.setattr(sharedstore.SharedSemaphore, "acquire", counting)
    statuses: list[int] = []
    first = attempts([(workers[0], "a@example.com"), (workers[0], "b@example.com")], statuses, hashes.lock)
    with hashes.lock:
        assert hashes.lock.wait_for(lambda: hashes.running == CAP, timeout=30)
    late = attempts([(workers[1], "c@example.com")], statuses, hashes.lock)
    with hashes.lock:  # the other worker's login has looked for a slot and found none (or hashed: the bug)
        assert hashes.lock.wait_for(lambda: refused or hashes.entered > CAP, timeout=30)
        assert hashes.entered == CAP
    hashes.open.set()
    for thread in first + late:
        thread.join(30)
    assert statuses == [401] * 3  # it waited (LOGIN_HASH_WAIT, 10 s) instead of a 429
    assert hashes.most == CAP and hashes.entered == 3


def _die_holding(path: str, cap: int) -> None:
    """A worker killed in the middle of its checks: it takes every slot and never gives one back."""
    sem = sharedstore.SharedSemaphore(sharedstore.SharedFile(path), "login-hash", cap, 60.0)
    code = 0 if all(sem.acquire() is not None for _ in range(cap)) else 1
    os._exit(code)


def test_the_slots_of_a_killed_worker_come_back_when_their_leases_end(store):
    dead = multiprocessing.get_context("fork").Process(target=_die_holding, args=(store, CAP))
    dead.start()
    dead.join(30)
    assert dead.exitcode == 0
    now = sharedstore.SharedSemaphore(sharedstore.SharedFile(store), "login-hash", CAP, 60.0)
    assert now.acquire() is None  # still within the dead worker's leases
    later = sharedstore.SharedSemaphore(sharedstore.SharedFile(store), "login-hash", CAP, 60.0,
                                        clock=lambda: time.time() + 60.0)
    assert [later.acquire() is not None for _ in range(CAP + 1)] == [True] * CAP + [False]


def test_a_late_release_never_frees_another_workers_slot(store):
    clock = [1000.0]
    one, two = (sharedstore.SharedSemaphore(sharedstore.SharedFile(store), "login-hash", 1, 60.0,
                                            clock=lambda: clock[0]) for _ in range(2))
    slow = one.acquire()
    clock[0] += 60.0  # the slow check outlived its lease: the slot is another worker's now
    assert two.acquire() is not None
    one.release(slow)  # the slow check ends and gives back its (expired) lease
    assert one.acquire() is None  # the other worker's lease still counts
