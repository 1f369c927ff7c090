"""Request-log rows written off the hot path, in batches, never dropped."""
from __future__ import annotations

import logging
import queue
import re
import threading
import time

import sqlalchemy as sa

from ..extensions import db
from ..models import ApiKey, RequestLog

log = logging.getLogger("promptproxy.logwriter")


# Our own client keys (`pp-` + 43 url-safe characters) wherever a client pasted one into a logged body.
CLIENT_KEY_RE = re.compile(r"pp-[A-Za-z0-9_-]{40,}")


def _storable(row: dict) -> dict:
    """Make a row safe to store: no client keys in logged text, no NUL characters (PostgreSQL text cannot hold
    them, and one unstorable row would otherwise fail its whole batch on every retry)."""
    for name, value in row.items():
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            value = row[name] = value.replace("\x00", "\ufffd")
        if "pp-" in value:
            row[name] = CLIENT_KEY_RE.sub("pp-[redacted]", value)
    return row


class LogWriter:
    """A daemon thread that inserts queued rows in batches; failed batches are retried, not lost."""

    def __init__(self, app, interval: float = 0.2, batch_size: int = 500):
        self.app = app
        self.interval = interval
        self.batch_size = batch_size
        self._queue: queue.Queue[dict] = queue.Queue()
        self._pending: list[dict] = []
        self._lock = threading.Lock()  # one writer at a time (thread or explicit flush)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list = []  # callables(rows) run after a batch commits (roll-ups, metrics)

    def submit(self, row: dict) -> None:
        """Queue one row; never blocks on the database."""
        self._queue.put(_storable(row))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="promptproxy-logwriter", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.interval)  # wakes at once on close(), so shutdown never waits an interval
            try:
                self.flush()
            except Exception:  # keep the thread alive; rows stay pending and are retried
                log.exception("request log flush failed; will retry")

    def flush(self) -> int:
        """Write every queued row now; returns how many were written."""
        written = 0
        with self._lock:
            while True:
                while len(self._pending) < self.batch_size:
                    try:
                        self._pending.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if not self._pending:
                    return written
                self._write(self._pending)
                written += len(self._pending)
                self._pending = []

    def _write(self, rows: list[dict]) -> None:
        with self.app.app_context():
            try:
                db.session.execute(sa.insert(RequestLog), rows)
                used = {}
                for row in rows:
                    if row.get("key_id"):
                        used[row["key_id"]] = row["created_at"]
                for key_id, when in used.items():
                    db.session.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
                db.session.commit()
            except Exception:
                db.session.rollback()
                raise
            finally:
                db.session.remove()
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:
                log.exception("request log listener failed")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (graceful shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.flush()
                return
            except Exception:
                log.exception("final request log flush failed; retrying")
                time.sleep(0.2)
