"""Every waitress and Flask internal the server relies on, in one list, checked against the installed versions.

waitress has no public API for what server.py (thread pool that grows, a pre-bound socket per worker),
shutdown.py (drain, then stop) and wsgierrors.py (JSON errors, streams flushed per event) do, so they use these
attributes. tests/ops/test_internals.py fails when a pinned upgrade removes or renames one; change the code that
uses it (grep for the name) and this list together.
"""
from __future__ import annotations

import inspect
import socket

# object -> names it must have (instance attributes are checked on real instances, see `missing`)
REQUIRED = {
    "waitress.task.ThreadedTaskDispatcher": (  # server.GrowingDispatcher, shutdown.GracefulShutdown.busy
        "lock", "queue", "queue_cv", "threads", "stop_count", "active_count", "handler_thread", "set_thread_count",
        "queue_logger", "start_new_thread", "add_task", "shutdown"),
    "waitress.server.TcpWSGIServer": (  # shutdown: stop accepting, count busy channels, wake the loop
        "accepting", "active_channels", "task_dispatcher", "trigger", "pull_trigger", "channel_class", "run",
        "effective_port", "handle_accept", "_map"),  # server.accept_in_bursts: handle_accept, _map
    "waitress.channel.HTTPChannel": (  # shutdown.busy/_close_channels, wsgierrors.JsonErrorChannel
        "requests", "total_outbufs_len", "handle_close", "error_task_class", "task_class", "adj"),
    "waitress.task.WSGITask": ("write", "content_length", "channel"),  # wsgierrors.StreamingTask
    "waitress.task.ErrorTask": ("execute", "set_close_on_finish", "response_headers"),  # wsgierrors.JsonErrorTask
    "waitress.adjustments.Adjustments": ("send_bytes", "sockets"),  # one send per response; the worker's socket
    "waitress.wasyncore.dispatcher": ("close",),  # shutdown._stop_accepting
    "waitress.wasyncore": ("close_all",),
    "waitress.server": ("MultiSocketServer", "BaseWSGIServer"),  # wsgierrors.json_errors
    "werkzeug.local.LocalProxy": ("_get_current_object",),  # cli serve, ops.readyz: the app behind current_app
}
CREATE_SERVER_ARGS = ("_dispatcher", "_start")  # server.make_server passes our dispatcher


def _resolve(dotted: str):
    import importlib

    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return importlib.import_module(dotted)


def missing() -> list[str]:
    """The internals that the installed waitress/Flask no longer have (empty when all are there)."""
    from waitress.adjustments import Adjustments
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.server import create_server
    from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

    dispatcher = ThreadedTaskDispatcher()
    server = create_server(lambda environ, start_response: [], host="127.0.0.1", port=0, _dispatcher=dispatcher)
    left, right = socket.socketpair()
    try:
        channel = HTTPChannel(server, left, ("127.0.0.1", 0), Adjustments(), map={})
        request = HTTPRequestParser(Adjustments())
        instances = {"waitress.task.WSGITask": WSGITask(channel, request),
                     "waitress.task.ErrorTask": ErrorTask(channel, request),
                     "waitress.task.ThreadedTaskDispatcher": dispatcher, "waitress.server.TcpWSGIServer": server,
                     "waitress.channel.HTTPChannel": channel, "waitress.adjustments.Adjustments": Adjustments()}
        gone = []
        for dotted, names in REQUIRED.items():
            try:
                target = instances.get(dotted) or _resolve(dotted)
            except (ImportError, AttributeError):
                gone.append(dotted)
                continue
            gone += [f"{dotted}.{name}" for name in names if not hasattr(target, name)]
        params = inspect.signature(create_server).parameters
        gone += [f"waitress.server.create_server({arg}=)" for arg in CREATE_SERVER_ARGS if arg not in params]
        return gone
    finally:
        channel.close()
        right.close()
        server.close()
        server.trigger.close()
