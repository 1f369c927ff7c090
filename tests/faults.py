"""Loopback fault injection: a port nobody listens on, and a listener whose accept queue is full."""
from __future__ import annotations

import contextlib
import socket


def refused_url() -> str:
    """A base URL whose port refuses connections (bound, then closed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def blackhole():
    """A base URL whose connects hang: backlog 0 and one never-accepted connection fill the accept queue.

    Linux then drops further SYNs (tcp_abort_on_overflow=0), which looks like a blackholed address on loopback.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        filler.close()
        listener.close()
