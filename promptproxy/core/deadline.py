"""A total deadline on reading an HTTP answer: every socket read waits at most until it (/v1 and /mcp share this)."""
from __future__ import annotations

import time

from urllib3.exceptions import ReadTimeoutError


def set_idle_timeout(resp, seconds: float) -> None:
    """After the headers, later reads wait at most `seconds` (resp.raw is a urllib3 response, as requests' is)."""
    conn = getattr(resp.raw, "_connection", None) or getattr(resp.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def chunks_until(resp, deadline: float, size: int = 65536):
    """Yield the body as reads give it, none waiting past `deadline` (perf_counter time).

    Raises TimeoutError at the deadline, so a server that keeps a connection alive with a byte or a comment now
    and then cannot hold the caller longer than its total time limit.
    """
    raw = resp.raw
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("total time limit reached")
        set_idle_timeout(resp, left)
        try:
            chunk = raw.read1(size, decode_content=True) if hasattr(raw, "read1") else raw.read(size)
        except ReadTimeoutError:  # the read's wait was cut to what was left
            raise TimeoutError("total time limit reached") from None
        if not chunk:
            return
        yield chunk
