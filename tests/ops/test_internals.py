"""The waitress/Flask internals the server relies on are all present in the pinned versions."""
from __future__ import annotations

from promptproxy import internals


def test_every_internal_the_server_relies_on_exists():
    assert internals.missing() == []


def test_a_removed_internal_is_reported(monkeypatch):
    monkeypatch.setitem(internals.REQUIRED, "waitress.task.ThreadedTaskDispatcher", ("queue", "gone_in_waitress_4"))
    monkeypatch.setattr(internals, "CREATE_SERVER_ARGS", ("_dispatcher", "_removed_shim"))
    assert internals.missing() == ["waitress.task.ThreadedTaskDispatcher.gone_in_waitress_4",
                                   "waitress.server.create_server(_removed_shim=)"]
