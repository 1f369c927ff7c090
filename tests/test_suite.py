"""The suite's own machinery: markers read from what a test uses, a shared upstream's reset, per-worker databases."""
from __future__ import annotations

import subprocess
import threading

import pytest
import requests

from . import needs
from .conftest import SharedServer, wait_for, worker_database_url
from .e2e import clients
from .upstream import Upstream

MARKERS = ("browser", "agents", "slow", "postgres")


class Serve:
    """Like tests/ops/procs.py's Server: a `serve` process, started in __init__."""

    def __init__(self):
        self.proc = subprocess.Popen(["python", "-m", "promptproxy.cli", "serve"])


def starts_serve():
    return Serve()


def runs_the_cli():
    return subprocess.run(["true"], check=False)


def local_import():
    import subprocess as sp

    return sp.Popen


def drives_claude_code():
    return clients.run_claude("http://127.0.0.1:1", "k", "m", "hi", None)


def opens_a_browser():
    from playwright.sync_api import sync_playwright

    return sync_playwright


def calls_a_helper_that_spawns():
    return runs_the_cli()


def plain():
    return requests.codes.ok


@pytest.mark.parametrize(("func", "marks"), [
    (starts_serve, {"slow"}), (runs_the_cli, {"slow"}), (local_import, {"slow"}), (opens_a_browser, {"browser"}),
    (drives_claude_code, {"agents", "slow"}), (calls_a_helper_that_spawns, {"slow"}), (plain, set()),
])
def test_markers_come_from_what_the_code_and_its_helpers_use(func, marks):
    assert needs.Reader(needs.agent_binaries()).needs(func) == marks


def test_this_files_tests_start_nothing_so_carry_no_marker(request):
    """Reading the reader (tests/needs.py) or naming helpers in a decorator marks nothing."""
    here = [item for item in request.session.items if item.path == request.node.path]
    assert here and all(not {m.name for m in item.iter_markers()} & set(MARKERS) for item in here)


def test_a_reset_upstream_forgets_what_the_last_test_left_and_drops_its_late_request(upstream):
    upstream.delay = 0.5
    upstream.handler = lambda req: (500, {}, b"scripted")
    upstream.tag = "set by a test"
    outcome = []

    def late_request():
        try:
            outcome.append(requests.post(upstream.url + "/v1/chat/completions", json={}, timeout=5).status_code)
        except requests.ConnectionError:
            outcome.append("dropped")

    late = threading.Thread(target=late_request)
    late.start()
    assert wait_for(lambda: len(upstream.requests) == 1)
    upstream.reset()  # what the `upstream` fixture does before the next test
    late.join(5)
    assert outcome == ["dropped"]  # the next test's handler never answered it
    assert upstream.requests == [] and upstream.disconnects == 0 and not hasattr(upstream, "tag")
    assert upstream.handler == upstream.default and upstream.delay == 0.0
    resp = requests.post(upstream.url + "/v1/chat/completions", json={"model": "m"}, timeout=5)
    assert resp.status_code == 200 and len(upstream.requests) == 1


def test_a_shared_server_that_a_test_stopped_is_started_anew_for_the_next():
    servers = SharedServer(lambda: Upstream().start())
    first = servers.take()
    assert servers.take() is first  # shared while it runs
    first.stop()  # as a test that takes the upstream down would
    second = servers.take()
    try:
        assert second is not first and second.running
        assert requests.get(second.url + "/v1/models", timeout=5).status_code == 200
    finally:
        servers.stop()
    assert not second.running


def test_each_worker_has_its_own_postgresql_database():
    url = "postgresql+psycopg://postgres:pw@127.0.0.1:5432/promptproxy_ci"
    assert worker_database_url(url, "gw1") == "postgresql+psycopg://postgres:pw@127.0.0.1:5432/promptproxy_ci_gw1"
    assert worker_database_url(url, None) == url
    assert worker_database_url(None, "gw0") is None
