"""`serve --workers N`: one supervisor binds the socket, N forked waitress processes serve on it."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from .core import sharedstore

log = logging.getLogger("promptproxy.workers")

QUICK_DEATH = 2.0  # a worker that dies sooner than this after starting is restarted after a pause (no busy loop)
SHARED_STORE_ENV = "PROMPTPROXY_SHARED_STORE"
# mkdtemp makes a private (0700) folder in shared memory, so the well-known path is safe here.
SHM = "/dev/shm"  # noqa: S108  # nosec B108


def worker_count(value) -> int:
    """`auto` (or empty) = the CPUs this process may run on; otherwise a positive integer."""
    if value in (None, "", "auto"):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"workers must be a positive number or 'auto', not {value!r}") from None
    if count < 1:
        raise ValueError(f"workers must be a positive number or 'auto', not {value!r}")
    return count


def bind(host: str, port: int) -> socket.socket:
    """The socket every worker accepts on, bound once (so no worker races another for the port).

    It is not listening yet: the first worker's waitress calls listen(), so until a worker serves, a client is
    refused at once (as with one process) instead of waiting in a backlog nobody reads.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


class Supervisor:
    """Forks `count` workers running `run_worker(slot, sock, first)`, restarts any that dies, stops all on a signal.

    SIGTERM or SIGINT: the listening socket is closed here, every worker gets SIGTERM and drains as a single
    process does (streams finish, its request log is flushed); the supervisor exits when all have. A second
    signal sends SIGQUIT, which makes the workers stop at once (their logs are still flushed).
    """

    def __init__(self, sock: socket.socket, count: int, run_worker, grace: float = 30.0):
        self.sock, self.count, self.run_worker, self.grace = sock, count, run_worker, grace
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (slot, started at)
        self.started: set[int] = set()  # slots started at least once (a restart is not announced again)
        self.stopping = 0
        self.store_dir = tempfile.mkdtemp(prefix="promptproxy-shared-", dir=_fast_tmp())

    def run(self) -> int:
        """Start the workers and watch them until a signal stops everything; the exit code."""
        os.environ[SHARED_STORE_ENV] = os.path.join(self.store_dir, "shared.sqlite3")
        sharedstore.create(os.environ[SHARED_STORE_ENV])  # before the fork: workers starting together must not race
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        try:
            for slot in range(1, self.count + 1):
                self._spawn(slot)
            while self.children:
                self._reap()
                if self.stopping and time.monotonic() > self.deadline:
                    self._send(signal.SIGKILL)
                time.sleep(0.1)
        finally:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        log.info("all workers stopped; bye")
        return 0

    def _spawn(self, slot: int) -> None:
        if threading.active_count() > 1:  # a thread would not survive the fork and could hold a lock
            log.warning("forking with %d threads running", threading.active_count())
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # a signal now must not run our handler in the child
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's loop
            code = 1
            try:
                self.children.clear()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the worker installs its own handlers
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which passes it on
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
                watch_parent(os.getppid())
                self.run_worker(slot, self.sock, slot not in self.started)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = (slot, time.monotonic())
        self.started.add(slot)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        log.info("worker %d started (pid %d)", slot, pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot, started = self.children.pop(pid, (None, 0.0))
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d (pid %d) stopped (exit %s)", slot, pid, code)
                continue
            log.warning("worker %d (pid %d) died (exit %s); starting a new one", slot, pid, code)
            if time.monotonic() - started < QUICK_DEATH:
                time.sleep(1.0)
            self._spawn(slot)

    def _signal(self, signum, frame) -> None:
        if not self.stopping:
            log.info("signal %s: stopping %d workers (grace %g s)", signum, len(self.children), self.grace)
            self.sock.close()  # the workers close their copies as they start draining
            self.deadline = time.monotonic() + self.grace + 15.0
        self.stopping += 1
        self._send(signal.SIGTERM if self.stopping == 1 else signal.SIGQUIT)  # a second signal: stop now

    def _send(self, signum) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def watch_parent(parent: int, every: float = 1.0) -> None:
    """A worker whose supervisor was killed (SIGKILL, OOM) drains and exits instead of serving on unsupervised."""
    def run() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        log.warning("supervisor (pid %d) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=run, name="promptproxy-parent-watch", daemon=True).start()


def _fast_tmp() -> str | None:
    """Shared memory (SHM) when there is one (the store is small and hot), else the default temp folder."""
    return SHM if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else None
