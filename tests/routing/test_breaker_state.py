"""Breakers on one shared state act as one breaker for every worker that uses it."""
from __future__ import annotations

from types import SimpleNamespace

from promptproxy.core.errors import Fault, UpstreamError
from promptproxy.core.state import MemoryState
from promptproxy.routing.breakers import Breakers

PROVIDER = SimpleNamespace(id=7, name="local")
REFUSED = UpstreamError(502, "refused", fault=Fault.CONNECT)
BOOM = UpstreamError(500, "internal", fault=Fault.STATUS, upstream_status=500)


def workers(clock: list, n: int = 2, **options) -> list[Breakers]:
    """`n` workers' breakers on one store (what the file or Redis state gives `serve --workers N`)."""
    state = MemoryState()
    return [Breakers(4, 10.0, lambda: clock[0], state=state, window=30.0, **options) for _ in range(n)]


def test_failures_on_two_workers_open_one_breaker_for_both():
    clock = [1000.0]
    one, two = workers(clock)
    one.failure(PROVIDER, REFUSED)
    two.failure(PROVIDER, REFUSED)
    one.failure(PROVIDER, REFUSED)
    assert one.allow(PROVIDER) and two.allow(PROVIDER)  # 3 requests: below the volume of 4
    two.failure(PROVIDER, REFUSED)
    assert not one.allow(PROVIDER) and not two.allow(PROVIDER)
    assert one.states()[7]["state"] == "open" and one.states()[7]["last_error"] == "server_error"
    clock[0] += 10.0  # cool-down over: exactly one probe among all workers
    assert [one.allow(PROVIDER), two.allow(PROVIDER), one.allow(PROVIDER)] == [True, False, False]
    assert two.states()[7]["state"] == "half_open"
    two.success(PROVIDER)  # the probe's answer, reported by another worker than sent it
    assert one.allow(PROVIDER) and two.allow(PROVIDER)
    assert one.states()[7] == {"name": "local", "state": "closed", "failures": 0, "retry_in": 0.0,
                               "last_error": "server_error"}


def test_successes_on_another_worker_keep_it_closed():
    clock = [1000.0]
    one, two = workers(clock)
    for _ in range(6):
        two.success(PROVIDER)
    clock[0] += 1.0
    two.success(PROVIDER)  # a second later: this worker's successes reach the store (they are written once a second)
    for _ in range(5):
        one.failure(PROVIDER, REFUSED)
    assert one.allow(PROVIDER)  # 5 failures of 12 requests: under the 50 % rate
    for _ in range(2):
        one.failure(PROVIDER, REFUSED)
    assert not two.allow(PROVIDER)  # 7 of 14


def test_5xx_from_one_key_never_open_it_two_keys_do():
    clock = [1000.0]
    one, two = workers(clock)
    for _ in range(20):
        one.failure(PROVIDER, BOOM, key=1)
    assert one.allow(PROVIDER) and one.states()[7]["failures"] == 20
    two.failure(PROVIDER, BOOM, key=2)  # a second caller sees the same: the upstream is at fault
    assert not one.allow(PROVIDER)


def test_the_keys_of_an_old_failure_leave_the_window():
    clock = [1000.0]
    [breakers] = workers(clock, n=1)
    breakers.failure(PROVIDER, BOOM, key=2)
    clock[0] += 31  # key 2's failure is out of the window now
    for _ in range(4):
        breakers.failure(PROVIDER, BOOM, key=1)
    assert breakers.allow(PROVIDER)


def test_a_failure_mid_stream_replaces_the_success_counted_when_it_began():
    clock = [1000.0]
    [breakers] = workers(clock, n=1)
    for key in (1, 2, 1, 2):
        breakers.success(PROVIDER)
        breakers.failure(PROVIDER, BOOM, key=key, after_success=True)
    assert not breakers.allow(PROVIDER)  # 4 requests, 4 failures (not 8 requests, 4 failures)


def test_min_keys_one_restores_the_plain_rate_rule():
    clock = [1000.0]
    [breakers] = workers(clock, n=1, min_keys=1)
    for _ in range(4):
        breakers.failure(PROVIDER, BOOM, key=1)
    assert not breakers.allow(PROVIDER)


def test_off_with_min_requests_zero_and_from_config():
    off = Breakers.from_config({"BREAKER_MIN_REQUESTS": 0})
    for _ in range(10):
        off.failure(PROVIDER, REFUSED)
    assert off.allow(PROVIDER) and off.states() == {}
    assert Breakers.from_config({"BREAKER_MIN_KEYS": 3}).min_keys == 3
