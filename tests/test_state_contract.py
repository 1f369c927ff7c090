"""The shared-state contract (core/state.py), run against every store: this process, the workers' file, Redis."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from promptproxy.core import sharedstore
from promptproxy.core.sharedstore import SharedFile
from promptproxy.core.state import MemoryState, make_state
from promptproxy.core.state_file import FileState

from .conftest import REDIS_URL, flush_prefix, wait_for
from .limits.conftest import closed_port

NO_REDIS = "PROMPTPROXY_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/5)"
SHORT = 0.05  # seconds: a TTL the test waits out by polling


def open_state(kind: str, where: str):
    """A store of `kind` at `where` (a file path or a Redis key prefix), with connections of its own."""
    if kind == "memory":
        return MemoryState()
    if kind == "file":
        return FileState(SharedFile(where))
    from promptproxy.core.state_redis import RedisState

    return RedisState(REDIS_URL, where)


@pytest.fixture(params=["memory", "file", "redis"])
def spec(request, tmp_path):
    """(kind, where) of a fresh store; Redis is skipped without PROMPTPROXY_TEST_REDIS_URL."""
    kind = request.param
    if kind == "redis":
        if not REDIS_URL:
            pytest.skip(NO_REDIS)
        prefix = f"pp-state-{uuid.uuid4().hex[:12]}"
        yield kind, prefix
        flush_prefix(REDIS_URL, prefix)
        return
    where = str(tmp_path / "shared.sqlite3")
    if kind == "file":
        sharedstore.create(where)
    yield kind, where


@pytest.fixture
def state(spec):
    return open_state(*spec)


# -- hashes ------------------------------------------------------------------------------------------
def test_a_missing_hash_reads_empty(state):
    assert state.read(["nothing"]) == [{}]
    assert state.read([]) == []


def test_put_then_read_keeps_numbers_as_float_and_strings_as_str(state):
    state.put("deploy:1", {"failures": 3, "weight": 0.5, "state": "open", "code": "12", "ok": True})
    [found] = state.read(["deploy:1"])
    assert found == {"failures": 3.0, "weight": 0.5, "state": "open", "code": "12", "ok": 1.0}
    assert isinstance(found["failures"], float) and isinstance(found["code"], str)


def test_put_overwrites_named_fields_and_keeps_the_others(state):
    state.put("k", {"a": 1, "b": "x"})
    state.put("k", {"b": "y", "c": 2})
    state.put("k", {})
    assert state.read(["k"]) == [{"a": 1.0, "b": "y", "c": 2.0}]


def test_read_answers_in_the_order_asked_with_repeats(state):
    state.put("a", {"n": 1})
    state.put("b", {"n": 2})
    assert state.read(["b", "missing", "a", "b"]) == [{"n": 2.0}, {}, {"n": 1.0}, {"n": 2.0}]


def test_add_starts_at_zero_and_returns_the_new_value(state):
    assert state.add("k", "hits") == 1.0
    assert state.add("k", "hits", 2.5) == 3.5
    assert state.add("k", "hits", -1) == 2.5
    assert state.read(["k"]) == [{"hits": 2.5}]


def test_adds_from_many_threads_are_all_counted(state):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: state.add("k", "n"), range(200)))
    assert state.read(["k"]) == [{"n": 200.0}]


def test_drop_forgets_the_hash_and_the_counter_of_a_key(state):
    state.put("k", {"a": 1})
    state.count("k", 5, 60)
    state.put("other", {"a": 1})
    state.drop("k")
    state.drop("never-there")
    assert state.read(["k", "other"]) == [{}, {"a": 1.0}]
    assert state.counts(["k"]) == [0.0]


def test_a_key_holds_a_hash_and_a_counter_apart(state):
    state.put("k", {"a": "text"})
    assert state.count("k", 2, 60) == 2.0
    assert state.read(["k"]) == [{"a": "text"}]


# -- expiring counters ---------------------------------------------------------------------------------
def test_count_adds_and_counts_reads(state):
    assert state.count("c", 1, 60) == 1.0
    assert state.count("c", 2.5, 60) == 3.5
    assert state.counts(["c", "missing", "c"]) == [3.5, 0.0, 3.5]
    assert state.counts([]) == []


def test_a_counter_starts_again_at_zero_after_its_ttl(state):
    state.count("c", 4, SHORT)
    state.count("long", 1, 60)
    assert wait_for(lambda: state.counts(["c"]) == [0.0])
    assert state.count("c", 1, 60) == 1.0  # a new counter, not 5
    assert state.counts(["long"]) == [1.0]


def test_the_ttl_runs_from_creation_not_from_the_last_count(state):
    state.count("c", 1, SHORT)
    state.count("c", 1, 60)  # a later count with a longer TTL does not extend the window
    assert wait_for(lambda: state.counts(["c"]) == [0.0])


# -- take ---------------------------------------------------------------------------------------------
def test_take_stays_within_the_limit(state):
    assert [state.take("t", 3, 1, 60) for _ in range(4)] == [True, True, True, False]
    assert state.counts(["t"]) == [3.0]


def test_a_refused_take_counts_nothing(state):
    assert state.take("t", 5, 4, 60)
    assert not state.take("t", 5, 2, 60)
    assert state.take("t", 5, 1, 60)
    assert state.counts(["t"]) == [5.0]


def test_take_more_than_the_limit_on_an_empty_counter_is_refused(state):
    assert not state.take("t", 2, 3, 60)
    assert state.counts(["t"]) == [0.0]


def test_take_fractions_and_an_infinite_limit(state):
    assert state.take("t", 1.0, 0.25, 60) and state.take("t", 1.0, 0.75, 60)
    assert not state.take("t", 1.0, 0.25, 60)
    assert state.take("u", float("inf"), 10, 60)


def test_take_is_free_again_once_the_counter_expired(state):
    assert state.take("t", 1, 1, SHORT)
    assert not state.take("t", 1, 1, 60)
    assert wait_for(lambda: state.take("t", 1, 1, 60))


def test_take_and_count_share_one_counter(state):
    state.count("t", 2, 60)
    assert not state.take("t", 2, 1, 60)
    state.count("t", -1, 60)  # a release
    assert state.take("t", 2, 1, 60)


def test_take_is_exact_under_threads(state):
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda i: state.take("t", 25, 1, 60), range(80)))
    assert taken.count(True) == 25
    assert state.counts(["t"]) == [25.0]


def _takes(kind: str, where: str, barrier) -> None:
    """One worker process: open the store itself, take 20 times, exit with how many succeeded (100+ on error)."""
    try:
        state = open_state(kind, where)
        barrier.wait(20)
        os._exit(sum(state.take("t", 25, 1, 60) for _ in range(20)))
    except BaseException:  # noqa: BLE001 - any failure must end the child with a code the test sees
        os._exit(100)


def test_take_is_exact_across_processes(spec):
    kind, where = spec
    if kind == "memory":
        pytest.skip("the in-process store is one process's by definition")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_takes, args=(kind, where, barrier)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    codes = [proc.exitcode for proc in procs]
    assert all(code is not None and code < 100 for code in codes), codes
    assert sum(codes) == 25
    assert open_state(kind, where).counts(["t"]) == [25.0]


# -- the `limits` storage ------------------------------------------------------------------------------
def test_the_limits_storage_is_made_once_and_counts_windows(state):
    storage = state.limits_storage()
    assert state.limits_storage() is storage
    key = f"rpm:{uuid.uuid4().hex}"
    assert [storage.acquire_entry(key, 2, 60) for _ in range(3)] == [True, True, False]
    assert storage.get_moving_window(key, 2, 60)[1] == 2
    assert storage.incr(key + ":tpm", 60, 100) == 100 and storage.get(key + ":tpm") == 100


# -- broken stores -------------------------------------------------------------------------------------
CALLS = [("read", (["k"],)), ("add", ("k", "n")), ("put", ("k", {"a": 1})), ("drop", ("k",)),
         ("count", ("k", 1, 60)), ("counts", (["k"],)), ("take", ("k", 1, 1, 60))]


@pytest.mark.parametrize(("method", "args"), CALLS, ids=[name for name, _ in CALLS])
def test_redis_that_cannot_be_reached_raises_one_of_its_errors(method, args):
    from promptproxy.core.state_redis import RedisState

    state = RedisState(f"redis://127.0.0.1:{closed_port()}/0", "broken")
    with pytest.raises(state.errors):
        getattr(state, method)(*args)


@pytest.mark.parametrize(("method", "args"), CALLS, ids=[name for name, _ in CALLS])
def test_a_file_whose_directory_is_gone_raises_one_of_its_errors(tmp_path, method, args):
    """The supervisor removes the store's directory when it exits; a worker thread still at work then fails."""
    path = str(tmp_path / "store" / "shared.sqlite3")
    os.mkdir(tmp_path / "store")
    sharedstore.create(path)
    state = FileState(SharedFile(path))
    shutil.rmtree(tmp_path / "store")
    with ThreadPoolExecutor(1) as pool, pytest.raises(state.errors):  # a new thread opens its own connection
        pool.submit(getattr(state, method), *args).result()


# -- the choice --------------------------------------------------------------------------------------------
def test_the_store_is_chosen_by_the_settings(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    sharedstore.create(path)
    assert make_state({}).kind == "memory"
    assert make_state({"SHARED_STORE": path}).kind == "file"
    if REDIS_URL:
        assert make_state({"SHARED_STORE": path, "REDIS_URL": REDIS_URL}).kind == "redis"
