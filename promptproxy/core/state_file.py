"""The shared state of one `serve --workers N` without Redis: tables in the workers' SQLite file (sharedstore.py).

Every write is one short `BEGIN IMMEDIATE` transaction, so `take` is atomic across processes (SQLite serialises
writers on the file lock); a read is one statement, which sees one committed snapshot. Clocks are `time.time`: a
deadline written by one process is read by another.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time

from .sharedstore import SharedFile, SharedStorage

SWEEP_EVERY = 1000  # counter writes between deletions of every expired counter (keys of past windows pile up)


def _json(keys: list[str]) -> str:
    """Keys as one JSON array parameter (json_each), so a read is one statement with a fixed text."""
    return json.dumps(keys)


def _value(value) -> float | str:
    """A hash field as State returns it: numbers as float, the rest as str."""
    return float(value) if isinstance(value, int | float) else str(value)


class FileState:
    """State in the shared file: `hashes` (key, name, value) and `expiring` (key, value, expires) tables."""

    kind = "file"
    errors: tuple = (sqlite3.Error, OSError)

    def __init__(self, shared: SharedFile, clock=time.time):
        self.shared, self.clock = shared, clock
        self._writes = 0
        self._limits = None
        self._lock = threading.Lock()
        self._seen: dict[str, dict] = {}  # hashes as read at generation `_generation`
        self._generation = -1

    def read(self, keys: list[str]) -> list[dict]:
        """As State.read (from this process's copy while no process has written a hash since)."""
        generation = self.shared.generation()  # before the query: a write after it makes the copy stale at once
        with self._lock:
            if generation != self._generation:
                self._seen, self._generation = {}, generation
            known = [self._seen.get(k) for k in keys]
        if all(found is not None for found in known):
            return [dict(found) for found in known]
        found: dict[str, dict] = {k: {} for k in keys}
        for key, name, value in self.shared._conn().execute(
                "SELECT key, name, value FROM hashes WHERE key IN (SELECT value FROM json_each(?))", (_json(keys),)):
            found[key][name] = _value(value)
        with self._lock:
            if generation == self._generation and len(self._seen) < 10_000:
                self._seen.update(found)
        return [dict(found[k]) for k in keys]

    def add(self, key: str, name: str, amount: float = 1) -> float:
        """As State.add."""
        with self.shared.tx() as conn:
            row = conn.execute("INSERT INTO hashes (key, name, value) VALUES (?, ?, ?) ON CONFLICT (key, name) "
                               "DO UPDATE SET value = value + excluded.value RETURNING value",
                               (key, name, float(amount))).fetchone()
            self.shared.bump()
            return float(row[0])

    def put(self, key: str, values: dict) -> None:
        """As State.put."""
        with self.shared.tx() as conn:
            conn.executemany("INSERT INTO hashes (key, name, value) VALUES (?, ?, ?) ON CONFLICT (key, name) "
                             "DO UPDATE SET value = excluded.value",
                             [(key, str(name), _value(v)) for name, v in values.items()])
            self.shared.bump()

    def drop(self, key: str) -> None:
        """As State.drop."""
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM hashes WHERE key = ?", (key,))
            conn.execute("DELETE FROM expiring WHERE key = ?", (key,))
            self.shared.bump()

    def _sweep(self, conn: sqlite3.Connection, key: str, now: float) -> None:
        """Forget `key` when it has expired, and now and then every expired counter."""
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            conn.execute("DELETE FROM expiring WHERE expires <= ?", (now,))
        else:
            conn.execute("DELETE FROM expiring WHERE key = ? AND expires <= ?", (key, now))

    def count(self, key: str, amount: float, ttl: float) -> float:
        """As State.count."""
        now = self.clock()
        with self.shared.tx() as conn:
            self._sweep(conn, key, now)
            return conn.execute("INSERT INTO expiring (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) "
                                "DO UPDATE SET value = value + excluded.value RETURNING value",
                                (key, float(amount), now + ttl)).fetchone()[0]

    def counts(self, keys: list[str]) -> list[float]:
        """As State.counts."""
        found = dict(self.shared._conn().execute(
            "SELECT key, value FROM expiring WHERE key IN (SELECT value FROM json_each(?)) AND expires > ?",
            (_json(keys), self.clock())))
        return [float(found.get(k, 0.0)) for k in keys]

    def take(self, key: str, limit: float, amount: float, ttl: float) -> bool:
        """As State.take: the check and the add in one write transaction."""
        now = self.clock()
        with self.shared.tx() as conn:
            self._sweep(conn, key, now)
            row = conn.execute("SELECT value FROM expiring WHERE key = ?", (key,)).fetchone()
            if (row[0] if row else 0.0) + amount > limit:
                return False
            conn.execute("INSERT INTO expiring (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) "
                         "DO UPDATE SET value = value + excluded.value", (key, float(amount), now + ttl))
            return True

    def limits_storage(self) -> SharedStorage:
        """As State.limits_storage: the `limits` windows in the same file."""
        if self._limits is None:
            self._limits = SharedStorage(wrap_exceptions=True, shared=self.shared)
        return self._limits
