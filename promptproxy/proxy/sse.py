"""Incremental server-sent-events parser: CRLF or LF, split UTF-8, comments, multi-line data."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    """One SSE event; `comment` holds a ':' line when that is all there was."""

    event: str | None = None
    data: str | None = None
    comment: str | None = None


class SSEParser:
    """Feed bytes as they arrive, get whole events back."""

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024):
        self._buf = b""
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[Event]:
        """Return the events completed by this chunk (one pass over the buffer, however many events)."""
        buf = self._buf + chunk
        hold = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # may be the first half of a CRLF split across reads
                buf, hold = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop() + hold
        if len(self._buf) > self.max_event_bytes:
            raise ValueError("server-sent event too large")
        events = []
        for raw in blocks:
            event = _parse_block(raw.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete event."""
        return self._buf


def _parse_block(block: str) -> Event | None:
    event = Event()
    data: list[str] = []
    for line in block.split("\n"):
        if not line:
            continue
        if line.startswith(":"):
            event.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event.event = value
    if data:
        event.data = "\n".join(data)
    if event.data is None and event.event is None and event.comment is None:
        return None
    return event
