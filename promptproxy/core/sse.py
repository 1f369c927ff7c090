"""Incremental server-sent-events parser: CRLF or LF, split UTF-8, comments, multi-line data."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ErrorCode, GatewayError

MAX_EVENT_BYTES = 8 * 1024 * 1024  # one upstream event; real ones are kilobytes, a stuck line could grow forever


@dataclass(slots=True)
class Event:
    """One SSE event; `comment` holds a ':' line when that is all there was."""

    event: str | None = None
    data: str | None = None
    comment: str | None = None


class EventTooLarge(GatewayError):
    """An upstream event over the size limit: the call fails with a 502 that says so."""

    def __init__(self, limit: int):
        size = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"
        super().__init__(502, f"The upstream sent a server-sent event larger than the gateway's limit of {size}.",
                         code=ErrorCode.BAD_UPSTREAM_RESPONSE, type="server_error")


class SSEParser:
    """Feed bytes as they arrive, get whole events back; each byte is scanned a fixed number of times.

    Only the new chunk is searched for the end of an event; an incomplete event waits as a list of chunks and is
    joined once, when it ends. So a giant line costs linear time, and it is refused (EventTooLarge) as soon as
    it passes `max_event_bytes`, not when it ends.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES):
        self.max_event_bytes = max_event_bytes
        self._parts: list[bytes] = []  # the incomplete event, line endings already normalised to LF
        self._size = 0
        self._cr = False  # the last chunk ended in CR: maybe the first half of a CRLF split across reads

    def feed(self, chunk: bytes) -> list[Event]:
        """Return the events completed by this chunk."""
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return []
        end = chunk.rfind(b"\n\n")
        if end >= 0:
            done, rest = self._take(chunk[:end]), chunk[end + 2:]
        elif chunk[0] == 10 and self._parts and self._parts[-1].endswith(b"\n"):  # "\n" + "\n" across reads
            done, rest = self._take(b""), chunk[1:]
        else:
            self._parts.append(chunk)
            self._size += len(chunk)
            self._check(self._size)
            return []
        if rest:
            self._parts, self._size = [rest], len(rest)
            self._check(self._size)
        events = []
        for raw in done.split(b"\n\n"):
            self._check(len(raw))
            event = _parse_block(raw.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def _take(self, tail: bytes) -> bytes:
        """The pending bytes plus `tail`, joined once; the pending list is emptied."""
        parts, self._parts, self._size = self._parts, [], 0
        if not parts:
            return tail
        parts.append(tail)
        return b"".join(parts)

    def _check(self, size: int) -> None:
        if size > self.max_event_bytes:
            self._parts, self._size = [], 0  # let go of what was held: the stream ends here
            raise EventTooLarge(self.max_event_bytes)

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete event."""
        return b"".join(self._parts) + (b"\r" if self._cr else b"")


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
