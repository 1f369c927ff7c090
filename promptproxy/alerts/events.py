"""What the request path hands the alerts worker: small events in a bounded in-memory queue (no I/O, no database)."""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger("promptproxy.alerts")
CATEGORIES = ("budget", "errors", "provider", "key_expiry")
MAX_QUEUED = 10_000  # events not yet turned into outbox rows; the oldest are dropped beyond it


@dataclass(frozen=True, slots=True)
class BudgetSettled:
    """A call's cost was added to a subject's budget period: the worker compares spend with the thresholds."""

    subject: str  # "user:1", "key:7" or "group:3"
    period: str
    period_start: datetime
    limit: float


@dataclass(frozen=True, slots=True)
class CircuitChanged:
    """A provider's circuit breaker opened or closed (sent by the worker that changed it)."""

    provider_id: int
    provider: str
    state: str  # "open" or "closed"
    at: float  # wall-clock seconds
    reason: str | None = None


class EventQueue:
    """Append-only from request threads (a deque append and a wake-up); drained by the worker thread."""

    def __init__(self, wake=None, maxlen: int = MAX_QUEUED):
        self._items: collections.deque = collections.deque(maxlen=maxlen)
        self.wake = wake  # called after each put: starts the worker if needed (it picks events up on its next poll)
        self.dropped = 0

    def put(self, event) -> None:
        """Queue an event for the worker; never blocks, never touches the database."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("alert event queue full (%d dropped so far); is the database reachable?", self.dropped)
        self._items.append(event)
        if self.wake is not None:
            self.wake()

    def requeue(self, events: list) -> None:
        """Put drained events back at the front (a pass that failed), oldest first, without waking anyone."""
        self._items.extendleft(reversed(events))

    def drain(self) -> list:
        """Every queued event, oldest first."""
        out, popleft = [], self._items.popleft
        while True:
            try:
                out.append(popleft())
            except IndexError:
                return out
