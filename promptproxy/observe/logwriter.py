"""Request-log rows written off the hot path, in batches, never dropped."""
from __future__ import annotations

import logging
import math
import queue
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from functools import partial

import orjson
import sqlalchemy as sa

from .. import rollups
from ..extensions import db
from ..models import ApiKey, RequestLog, RequestTag, utcnow

log = logging.getLogger("promptproxy.logwriter")
LOG_TABLE = RequestLog.__table__
TAG_TABLE = RequestTag.__table__
PRUNE_EVERY = 3600.0  # seconds between retention passes in each process


# Our own client keys (`pp-` + 43 url-safe characters) wherever a client pasted one into a logged body.
CLIENT_KEY_RE = re.compile(r"pp-[A-Za-z0-9_-]{40,}")
INT32, INT64 = 2**31 - 1, 2**63 - 1
NOT_STORABLE = "row not storable"
# Kept when a row is written in its reduced form: who, when, what outcome; nothing a client or upstream chose.
REDUCED_FIELDS = ("request_id", "created_at", "user_id", "key_id", "model_id", "provider_id", "prompt_version",
                  "endpoint", "inbound_format", "stream", "status", "latency_ms")
# PostgreSQL SQLSTATE classes that mean "try again later" (connection, resources, shutdown, lock, rollback).
TRANSIENT_SQLSTATES = frozenset({"08", "40", "53", "55", "57", "58"})


def _short_text(value) -> str:
    """A non-string value as text: JSON for containers (an upstream `code` object), str() for the rest."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict | list | tuple):
        try:
            return orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            pass
    return str(value)


def _fit_text(length: int | None, value):
    if value is None:
        return None
    if not isinstance(value, str):
        value = _short_text(value)
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (from a JSON "\ud800" escape) cannot be encoded for storage
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if "pp-" in value:  # redact before truncating, so a cut never leaves most of a key behind
        value = CLIENT_KEY_RE.sub("pp-[redacted]", value)
    return value if length is None or len(value) <= length else value[:length]


def _fit_int(limit: int, value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if isinstance(value, int) and -limit - 1 <= value <= limit:
        return value
    return None


def _fit_float(value):
    if isinstance(value, int | float):
        try:
            value = float(value)
        except OverflowError:
            return None
        return value if math.isfinite(value) else None
    return None


def _fit_bool(value):
    return None if value is None else bool(value)


def _fit_datetime(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return None


def _fitter(column: sa.Column):
    kind = column.type
    if isinstance(kind, sa.String):  # Text too (no length)
        return partial(_fit_text, kind.length)
    if isinstance(kind, sa.Boolean):
        return _fit_bool
    if isinstance(kind, sa.Integer):
        return partial(_fit_int, INT64 if isinstance(kind, sa.BigInteger) else INT32)
    if isinstance(kind, sa.Float):
        return _fit_float
    if isinstance(kind, sa.DateTime):
        return _fit_datetime
    return lambda value: value


def _fallback(column: sa.Column):
    """What a NOT NULL column gets when the row has no usable value for it."""
    if column.name == "request_id":
        return lambda: "req_" + secrets.token_hex(12)
    default = column.default
    if default is not None and default.is_scalar:
        return lambda: default.arg
    python_type = column.type.python_type
    return {datetime: utcnow, bool: lambda: False, int: lambda: 0, float: lambda: 0.0}.get(python_type, str)


# Derived from the model, so a new column is covered without touching this file.
FIELDS = tuple((c.name, _fitter(c), None if c.nullable else _fallback(c)) for c in LOG_TABLE.c if not c.primary_key)


def fit_row(row: dict) -> dict:
    """Every column of the log table, each value fitted to its column: the one place rows are made storable.

    Strings are cut to their column's length (PostgreSQL refuses longer ones), non-strings in string columns
    become short text (an upstream error `code` that is an object or a number), numbers out of their column's
    range or not finite become NULL, NUL characters and lone surrogates are replaced, client keys are redacted.
    Keys that are not columns are dropped. Every row gets every column, so a batch is one executemany.
    """
    out = {}
    for name, fit, fallback in FIELDS:
        value = row.get(name)
        if value is not None:
            try:
                value = fit(value)
            except Exception:  # a value no fitter foresaw is dropped, never the row
                value = None
        if value is None and fallback is not None:
            value = fallback()
        out[name] = value
    return out


def reduced_row(row: dict) -> dict:
    """The form a refused row is stored in: ids, time, endpoint, status, and why the rest is missing."""
    kept = {name: row.get(name) for name in REDUCED_FIELDS}
    return fit_row({**kept, "error_type": "row_not_storable", "error_message": NOT_STORABLE})


def tag_rows(rows: list[dict]) -> list[dict]:
    """One request_tags row per tag of each log row (tags arrive checked, joined by commas)."""
    return [{"request_id": row["request_id"], "tag": tag, "created_at": row["created_at"]}
            for row in rows if row.get("tags") for tag in row["tags"].split(",")]


def transient(exc: BaseException) -> bool:
    """True when a write failed because the database is unavailable (retry the rows), not because of a row."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return sqlstate[:2] in TRANSIENT_SQLSTATES
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.DisconnectionError
                      | sa.exc.TimeoutError)


def _reason(exc: BaseException) -> str:
    """The database's complaint, short and without the statement's parameters (they may hold bodies)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:200]}"


class LogWriter:
    """A daemon thread that inserts queued rows in batches; it never stops and no row can stop it.

    The queue is bounded: when the database falls behind (or is down) and `max_queue` rows wait, `submit`
    blocks the calling request thread until there is room again. That is backpressure, never a dropped row.
    Each batch inserts the rows, updates the roll-ups and the keys' last-used times in one transaction.
    A batch the database is unavailable for is kept and retried. A batch the database refuses for its content
    is written row by row; a row still refused is written in its reduced form (`reduced_row`), and only a row
    whose reduced form is refused too (its request id already stored) is dropped; both are logged and counted.
    """

    def __init__(self, app, interval: float = 0.2, batch_size: int = 500, max_queue: int = 50_000,
                 retention_days: int = 0):
        self.app = app
        self.interval = interval
        self.batch_size = batch_size
        self.retention_days = retention_days
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=max_queue)
        self._pending: list[dict] = []
        self._lock = threading.Lock()  # one writer at a time (thread or explicit flush)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at: float | None = None
        self.written = 0  # rows committed by this process (metrics, tests)
        self.blocked = 0  # submits that had to wait for room (backpressure events)
        self.unstorable = 0  # rows refused by the database and written in their reduced form
        self.dropped = 0  # rows whose reduced form was refused too (metrics, tests)
        self.listeners: list = []  # callables(rows) run after a batch commits (roll-ups, metrics)

    def submit(self, row: dict) -> None:
        """Queue one row; waits only when the bounded queue is full (the database is behind)."""
        if self._thread is None and not self._stop.is_set():
            self._start()
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.blocked += 1
            if self.blocked == 1 or self.blocked % 1000 == 0:
                log.warning("request log queue full (%d rows): requests wait for the database",
                            self._queue.maxsize)
            self._wake.set()
            while True:
                if self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
                    self.flush()  # closing: no thread drains the queue any more, so write it here
                try:
                    self._queue.put(row, timeout=0.5)
                    break
                except queue.Full:
                    continue
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()
        if self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
            self.flush()  # a late row (a stream finishing after close): written at once

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        return self._queue.qsize() + len(self._pending)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="promptproxy-logwriter", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)  # close() and a full batch set it, so neither waits an interval
            self._wake.clear()
            try:
                self.flush()
                self._maybe_prune()
            except Exception:  # keep the thread alive; rows stay pending and are retried
                log.exception("request log flush failed; will retry")
                self._stop.wait(min(5.0, max(self.interval, 0.5)))

    def flush(self) -> int:
        """Write every queued row now; returns how many were written."""
        before = self.written
        with self._lock:
            while True:
                while len(self._pending) < self.batch_size:
                    try:
                        self._pending.append(fit_row(self._queue.get_nowait()))
                    except queue.Empty:
                        break
                if not self._pending:
                    return self.written - before
                self._write(self._pending)
                self._pending = []

    def _write(self, rows: list[dict]) -> None:
        """Write a batch; raises (rows kept pending) only while the database is unavailable."""
        try:
            self._insert(rows)
        except Exception as exc:
            if transient(exc):
                raise
            log.warning("request log batch of %d rows refused (%s); writing it row by row", len(rows), _reason(exc))
            self._write_each(rows)
        else:
            self.written += len(rows)

    def _write_each(self, rows: list[dict]) -> None:
        """One transaction per row, so one refused row costs only itself."""
        for i, row in enumerate(rows):
            try:
                self._write_one(row)
            except Exception:
                self._pending = rows[i:]  # the database went away: the rows before this one are stored
                raise

    def _write_one(self, row: dict) -> int:
        """Store a row, else its reduced form (1), else drop it (0); raises while the database is unavailable."""
        try:
            self._insert([row])
        except Exception as exc:
            if transient(exc):
                raise
            log.error("request log row %s not storable (%s); writing it in reduced form", row.get("request_id"),
                      _reason(exc))
        else:
            self.written += 1
            return 1
        try:
            self._insert([reduced_row(row)])
        except Exception as exc:
            if transient(exc):
                raise
            self.dropped += 1
            log.error("request log row %s dropped: its reduced form was refused too (%s)", row.get("request_id"),
                      _reason(exc))
            return 0
        self.unstorable += 1
        self.written += 1
        return 1

    def _insert(self, rows: list[dict]) -> None:
        """Insert rows, their roll-ups and the keys' last-used times in one transaction; then run listeners."""
        with self.app.app_context():
            try:
                # Core executemany on the table: a fraction of the ORM bulk path's CPU.
                db.session.execute(sa.insert(LOG_TABLE), rows)
                tagged = tag_rows(rows)
                if tagged:
                    db.session.execute(sa.insert(TAG_TABLE), tagged)
                rollups.upsert(db.session, rollups.aggregate(rows))
                used = {}
                for row in rows:
                    if row.get("key_id"):
                        used[row["key_id"]] = row["created_at"]
                if used:
                    db.session.execute(sa.update(ApiKey.__table__).where(ApiKey.__table__.c.id == sa.bindparam("kid"))
                                       .values(last_used_at=sa.bindparam("when")),
                                       [{"kid": k, "when": w} for k, w in used.items()])
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

    def _maybe_prune(self) -> None:
        """Apply the retention setting at most once an hour per process (deletes are idempotent)."""
        if self.retention_days <= 0 or (self._pruned_at is not None
                                        and time.monotonic() - self._pruned_at < PRUNE_EVERY):
            return
        self._pruned_at = time.monotonic()
        with self.app.app_context():
            try:
                rollups.prune(db.session, self.retention_days)
            finally:
                db.session.remove()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (graceful shutdown)."""
        self._stop.set()
        self._wake.set()
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
        if self.queued:
            log.error("%d request-log rows could not be written before shutdown (the database is unavailable)",
                      self.queued)
