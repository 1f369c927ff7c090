"""Serve with waitress, tuned for many concurrent streams; flush the request log on shutdown."""
from __future__ import annotations

import _thread
import atexit
import logging
import os
import secrets
import sys
import warnings

import sqlalchemy as sa
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher

from .ops import configure_logging
from .shutdown import GracefulShutdown

log = logging.getLogger("promptproxy.server")


def serve(app, host: str | None = None, port: int | None = None, threads: int | None = None,
          workers=None) -> None:
    """Run waitress until SIGTERM/SIGINT, then flush what is queued; with workers > 1, under a supervisor."""
    from .workers import worker_count

    cfg = app.config
    host = host or cfg["HOST"]
    port = int(port or cfg["PORT"])
    threads = int(threads or cfg["THREADS"])
    count = worker_count(workers if workers is not None else cfg.get("WORKERS"))
    if count == 1:
        serve_one(app, threads, host=host, port=port)
        return
    supervise(app, host, port, threads, count)


def serve_one(app, threads: int, host: str | None = None, port: int | None = None, sock=None,
              announce: bool = True, label: str = "", banner: str = "") -> None:
    """One waitress process (the only one, or a worker on the supervisor's socket)."""
    gw = app.extensions["promptproxy"]
    server = make_server(app, host, port, threads, sock=sock)
    atexit.register(gw.close)

    # SIGTERM/SIGINT: stop accepting, let requests and streams finish (PROMPTPROXY_SHUTDOWN_GRACE), flush the log.
    shutdown = GracefulShutdown(server, gw, grace=float(app.config.get("SHUTDOWN_GRACE", 30.0)))
    shutdown.install(worker=sock is not None)
    configure_logging()
    gw.alerts.start()  # webhook deliveries, error-rate and key-expiry checks (docs/alerts.md)
    if announce:
        announce_setup(app)
        print(f"PromptProxy serving on http://{host}:{port} (threads={threads})", flush=True)
    else:
        log.info("%s serving (pid %d, threads=%d)", label, os.getpid(), threads)
        if banner:  # the first worker to listen, so "serving on" means it (scripts wait for the line)
            print(banner, flush=True)
    server.run()
    shutdown.finish()


def supervise(app, host: str, port: int, threads: int, count: int) -> None:
    """Bind once, announce the set-up token once, then fork `count` workers that each build their own app."""
    from .extensions import db
    from .workers import Supervisor, bind

    sock = bind(host, port)
    configure_supervisor_logging()
    announce_setup(app)
    with app.app_context():
        db.engine.dispose()  # no pooled database connection may be shared with a forked worker
    app.extensions["promptproxy"].close()

    banner = f"PromptProxy serving on http://{host}:{port} (workers={count}, threads={threads} each)"

    def run_worker(slot: int, sock, first: bool) -> None:
        from . import create_app, ops

        ops.WORKER = slot
        # A fresh app (its own engine, Redis client, log writer, pools) from the same settings file and
        # environment as the supervisor's: create_app(overrides) would skip the instance settings file.
        worker_app = create_app()
        worker_app.config["HOST"] = app.config["HOST"]
        serve_one(worker_app, threads, sock=sock, announce=False, label=f"worker {slot}",
                  banner=banner if slot == 1 and first else "")

    grace = float(app.config.get("SHUTDOWN_GRACE", 30.0))
    raise SystemExit(Supervisor(sock, count, run_worker, grace=grace).run())


def configure_supervisor_logging() -> None:
    """Plain lines for promptproxy.* (no writer thread: the supervisor forks, and threads do not survive it)."""
    root = logging.getLogger("promptproxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def make_server(app, host: str | None, port: int | None, threads: int, sock=None):
    """A waitress server with our options and channel (JSON errors, streams flushed per event)."""
    from .wsgierrors import json_errors, listeners

    where = {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
    with warnings.catch_warnings():
        # send_bytes is deprecated in waitress 3 but still the only switch for one send per whole response.
        warnings.filterwarnings("ignore", "send_bytes", DeprecationWarning)
        server = create_server(app, _dispatcher=GrowingDispatcher(threads), **where,
                               **waitress_options(app.config, threads))
    json_errors(server)  # waitress's own 413/431/400 answers become JSON on /v1
    for listener in listeners(server):
        accept_in_bursts(listener)
    return server


ACCEPT_BURST = 64


def accept_in_bursts(listener, burst: int = ACCEPT_BURST) -> None:
    """Accept every waiting connection (up to `burst` and the connection limit) per wake-up, not one.

    waitress accepts one connection per event-loop pass, and under a burst of streams each pass waits its turn
    for the GIL behind hundreds of busy worker threads: in bench S4 a hundred or more connections sat in the
    kernel's accept queue for seconds while their streams could have started.
    """
    accept_one = listener.handle_accept

    def accept_many() -> None:
        for _ in range(burst):
            before = len(listener._map)
            if before >= listener.adj.connection_limit:
                return  # waitress stops polling the socket at its limit; so does this loop
            accept_one()
            if len(listener._map) == before:
                return  # nothing was waiting (or accept failed)

    listener.handle_accept = accept_many


class GrowingDispatcher(ThreadedTaskDispatcher):
    """Waitress's thread pool, but threads start when tasks need them (up to `limit`) rather than all at once.

    Each live stream holds a worker thread, so the limit is high (hundreds); starting them all costs ~15 KB of
    memory each while idle. Threads that have started stay for the life of the process.
    """

    def __init__(self, limit: int, start: int = 8):
        super().__init__()
        self.limit = max(int(limit), 1)
        self.set_thread_count(min(start, self.limit))

    def start_new_thread(self, target, thread_no) -> None:
        """Start a worker without waiting for it to run: threading.Thread.start() would block the event loop
        (which calls add_task) until the new thread gets the GIL, serialising a burst of new streams."""
        _thread.start_new_thread(target, (thread_no,))

    def add_task(self, task) -> None:
        """Queue a task; start a thread when none is idle and the limit allows, else warn as waitress does."""
        with self.lock:
            self.queue.append(task)
            self.queue_cv.notify()
            running = len(self.threads) - self.stop_count
            idle = running - self.active_count
            if len(self.queue) <= idle:
                return
            if running < self.limit and not self.stop_count:
                number = next(n for n in range(len(self.threads) + 1) if n not in self.threads)
                self.threads.add(number)
                self.active_count += 1  # counted busy until it first waits, as set_thread_count does
                self.start_new_thread(self.handler_thread, number)
            else:
                self.queue_logger.warning("Task queue depth is %d", len(self.queue) - idle)


def waitress_options(cfg, threads: int) -> dict:
    """Waitress settings for many long-lived streams (each live stream holds one worker thread)."""
    return {
        "threads": threads,
        # Streams queue for a thread beyond `threads`; accept enough connections for them plus keep-alive idlers.
        "connection_limit": int(cfg.get("CONNECTION_LIMIT") or max(2 * threads, 100)),
        "backlog": 2048,
        "asyncore_use_poll": True,  # select() breaks past 1024 file descriptors
        "channel_request_lookahead": 1,  # lets waitress notice a client that went away mid-stream
        # waitress refuses a body of exactly its limit (>=) and counts chunk framing; +1 makes MAX_BODY_BYTES
        # itself allowed. Over it waitress answers 413 (JSON via json_errors) before the app: no row.
        "max_request_body_size": cfg["MAX_BODY_BYTES"] + 1,
        "max_request_header_size": 64 * 1024,
        "channel_timeout": int(cfg.get("CHANNEL_TIMEOUT", 120)), "cleanup_interval": 10,
        # A slow reader blocks its own stream (bounded memory) instead of buffering the upstream without limit.
        "outbuf_high_watermark": int(cfg.get("OUTBUF_HIGH_WATERMARK", 1024 * 1024)),
        # Whole responses leave in one send; a stream switches its connection to send_bytes=1 (wsgierrors.py).
        "send_bytes": 18000,
        "expose_tracebacks": False, "ident": "promptproxy",
    }


def announce_setup(app) -> None:
    """With no admin yet, print a one-time set-up token for the dashboard's first-run page."""
    from .extensions import db
    from .models import Setting, User

    with app.app_context():
        try:
            has_admin = db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.role == "admin"))
        except sa.exc.SQLAlchemyError:
            print("The database is not set up: run `promptproxy db upgrade` first.", flush=True)
            return
        if has_admin:
            return
        token = secrets.token_urlsafe(24)
        from .crypto import hash_key

        try:
            found = db.session.get(Setting, "setup_token")
            if found is None:
                db.session.add(Setting(key="setup_token", value=hash_key(token)))
            else:
                found.value = hash_key(token)
            db.session.commit()
        except sa.exc.IntegrityError:  # another instance starting at the same moment wrote one first
            db.session.rollback()
            db.session.execute(sa.update(Setting).where(Setting.key == "setup_token").values(value=hash_key(token)))
            db.session.commit()
        print(f"No admin yet. Open /admin/setup and use this one-time token: {token}", flush=True)
        print("(or run: promptproxy create-admin --email E --password P)", flush=True)
