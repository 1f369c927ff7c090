"""Counters shared by the worker processes of one `serve --workers N` without Redis: a small SQLite file.

Every operation is one short `BEGIN IMMEDIATE` transaction, so a check-and-take is atomic across processes (SQLite
serialises writers on the file lock). The file lives in /dev/shm when there is one and is removed when the
supervisor exits; it holds only counters, never secrets or request data.
"""
from __future__ import annotations

import logging
import mmap
import os
import sqlite3
import struct
import threading
import time

from limits.errors import StorageError
from limits.storage import MovingWindowSupport, Storage

log = logging.getLogger("promptproxy.admin")

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entries_key_at ON entries (key, at);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_key ON leases (key, expires);
CREATE TABLE IF NOT EXISTS hashes (key TEXT NOT NULL, name TEXT NOT NULL, value, PRIMARY KEY (key, name));
CREATE TABLE IF NOT EXISTS expiring (key TEXT PRIMARY KEY, value REAL NOT NULL, expires REAL NOT NULL);
"""


def create(path: str) -> None:
    """Make the file with its schema in WAL mode, once, before any worker opens it.

    Switching a file to WAL takes its lock without waiting (no busy timeout), so workers that started at the same
    moment and each switched it failed with "database is locked" and died; they now find it switched already.
    """
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
    finally:
        conn.close()


class SharedFile:
    """One connection per thread to the shared SQLite file; `tx()` runs a function in a write transaction."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._conn().executescript(SCHEMA)  # idempotent; every worker runs it when it starts

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # the supervisor has set it (create)
                conn.execute("PRAGMA journal_mode=WAL")
            # The file is scratch state for the life of the supervisor: durability across a power cut is not needed.
            conn.execute("PRAGMA synchronous=OFF")
            self._local.conn = conn
        return conn

    def _generation_map(self) -> mmap.mmap:
        found = getattr(self, "_map", None)
        if found is None:
            fd = os.open(self.path + ".gen", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                found = self._map = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        return found

    def generation(self) -> int:
        """A number every worker sees change when one of them changes shared state (a read costs no syscall)."""
        return struct.unpack_from("Q", self._generation_map())[0]

    def bump(self) -> None:
        """Move the generation on; call inside tx() so two writers cannot lose a step."""
        struct.pack_into("Q", self._generation_map(), 0, self.generation() + 1)

    def tx(self) -> _Tx:
        """`with store.tx() as conn:` one IMMEDIATE transaction (committed, or rolled back on an exception)."""
        return _Tx(self._conn())


class _Tx:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if kind else "COMMIT")


class SharedStorage(Storage, MovingWindowSupport):
    """A `limits` storage on a SharedFile: fixed windows (TPM) and moving windows (RPM, login throttle)."""

    STORAGE_SCHEME = ["promptproxy-shared"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, *, shared: SharedFile | None = None,
                 **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.shared = shared or SharedFile(uri.split("://", 1)[1])

    @property
    def base_exceptions(self):
        """What a broken or locked file raises."""
        return sqlite3.Error

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add to a fixed-window counter; a counter past its expiry starts again at 0."""
        now = time.time()
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            conn.execute("INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value", (key, amount, now + expiry))
            return conn.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()[0]

    def get(self, key: str) -> int:
        """A counter's value (0 when absent or expired)."""
        row = self.shared._conn().execute("SELECT value FROM counters WHERE key = ? AND expires > ?",
                                          (key, time.time())).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        """When a counter expires (now when absent)."""
        now = time.time()
        row = self.shared._conn().execute("SELECT expires FROM counters WHERE key = ? AND expires > ?",
                                          (key, now)).fetchone()
        return row[0] if row else now

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Add `amount` entries to a moving window if it then holds at most `limit` (one transaction)."""
        if amount > limit:
            return False
        now = time.time()
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM entries WHERE key = ? AND at < ?", (key, now - expiry))
            held = conn.execute("SELECT count(*) FROM entries WHERE key = ?", (key,)).fetchone()[0]
            if held + amount > limit:
                return False
            conn.executemany("INSERT INTO entries (key, at) VALUES (?, ?)", [(key, now)] * amount)
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(oldest entry still in the window, number of entries in it)."""
        now = time.time()
        oldest, count = self.shared._conn().execute(
            "SELECT min(at), count(*) FROM entries WHERE key = ? AND at >= ?", (key, now - expiry)).fetchone()
        return (oldest, count) if count else (now, 0)

    def check(self) -> bool:
        """The file answers."""
        self.shared._conn().execute("SELECT 1").fetchone()
        return True

    def reset(self) -> int | None:
        """Forget every counter and window."""
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM entries")
            return conn.execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        """Forget one key."""
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM counters WHERE key = ?", (key,))
            conn.execute("DELETE FROM entries WHERE key = ?", (key,))


class SharedCounters:
    """Concurrent-request slots on a SharedFile (the cross-process twin of limits.MemoryCounters)."""

    def __init__(self, shared: SharedFile, prefix: str = "slots"):
        self.shared, self.prefix = shared, prefix

    def acquire(self, key: str, cap: int, ttl: int) -> bool:
        """Take a slot if fewer than `cap` are held; the TTL clears slots of a worker killed mid-request."""
        key, now = f"{self.prefix}:{key}", time.time()
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            row = conn.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
            if row and row[0] >= cap:
                return False
            conn.execute("INSERT INTO counters (key, value, expires) VALUES (?, 1, ?) ON CONFLICT (key) "
                         "DO UPDATE SET value = value + 1, expires = excluded.expires", (key, now + ttl))
            return True

    def release(self, key: str) -> None:
        """Give a slot back."""
        with self.shared.tx() as conn:
            conn.execute("UPDATE counters SET value = value - 1 WHERE key = ?", (f"{self.prefix}:{key}",))
            conn.execute("DELETE FROM counters WHERE key = ? AND value <= 0", (f"{self.prefix}:{key}",))


class SharedSemaphore:
    """At most `cap` holders among all workers, each hold a lease that expires (the login's password-check slots).

    Each hold is its own row with an expiry, so the slots of a worker killed while holding them come back after
    `lease` seconds (one shared counter would keep them for good, or, refreshed by every acquire, never expire under
    load). AUTOINCREMENT: a lease id is never reused, so a holder whose lease expired cannot release another's.
    """

    def __init__(self, shared: SharedFile, key: str, cap: int, lease: float, clock=time.time):
        self.shared, self.key, self.cap, self.lease, self.clock = shared, key, cap, lease, clock

    def acquire(self) -> int | None:
        """A lease id if fewer than `cap` unexpired leases are held; None otherwise (nothing taken)."""
        now = self.clock()
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM leases WHERE key = ? AND expires <= ?", (self.key, now))
            if conn.execute("SELECT count(*) FROM leases WHERE key = ?", (self.key,)).fetchone()[0] >= self.cap:
                return None
            return conn.execute("INSERT INTO leases (key, expires) VALUES (?, ?)",
                                (self.key, now + self.lease)).lastrowid

    def release(self, lease: int) -> None:
        """Give a lease back (nothing happens if it expired meanwhile)."""
        with self.shared.tx() as conn:
            conn.execute("DELETE FROM leases WHERE id = ?", (lease,))


_FILES: dict[str, SharedFile] = {}
_FILES_LOCK = threading.Lock()


def shared_file(path: str) -> SharedFile:
    """The process's SharedFile for a path (one per process, however many apps use it)."""
    with _FILES_LOCK:
        found = _FILES.get(path)
        if found is None:
            found = _FILES[path] = SharedFile(path)
        return found


class SharedThrottle:
    """The dashboard's login throttle (admin.auth.Throttle's interface) in a shared `limits` storage.

    `shared` is the workers' SharedFile or the gateway state's `limits_storage()` (the file or Redis). With a
    `fallback` throttle, a store error (one of `errors`) is logged and the fallback counts instead.
    """

    def __init__(self, shared, limit: int, window: float, errors: tuple = (), fallback=None):
        self.storage = SharedStorage(shared=shared) if isinstance(shared, SharedFile) else shared
        self.window, self.fallback = int(window), fallback
        self.errors = (*errors, StorageError) if fallback is not None else ()
        self.limit = limit

    @property
    def limit(self) -> int:
        """Failures allowed per window (a change reaches the fallback too)."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = value
        if self.fallback is not None:
            self.fallback.limit = value

    @staticmethod
    def _key(key: tuple) -> str:
        return "login:" + "\x1f".join(str(part) for part in key)

    def _run(self, name: str, key: tuple, shared):
        try:
            return shared()
        except self.errors as exc:
            log.warning("login throttle store unavailable (%s): counting in this process", type(exc).__name__)
            return getattr(self.fallback, name)(key)

    def blocked(self, key: tuple) -> bool:
        """True when the key has used up its failures."""
        return self._run("blocked", key, lambda: self.storage.get_moving_window(
            self._key(key), self.limit, self.window)[1] >= self.limit)

    def attempt(self, key: tuple) -> bool:
        """Count an attempt; False when the key has used up its attempts (nothing counted)."""
        return self._run("attempt", key, lambda: self.storage.acquire_entry(self._key(key), self.limit, self.window))

    def fail(self, key: tuple) -> None:
        """Count one failure (a full window stays full)."""
        self._run("fail", key, lambda: self.storage.acquire_entry(self._key(key), self.limit, self.window))

    def reset(self, key: tuple) -> None:
        """Forget a key after a success."""
        self._run("reset", key, lambda: self.storage.clear(self._key(key)))
