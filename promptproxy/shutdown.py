"""Graceful shutdown for the waitress server: stop accepting, let requests and streams finish, flush the log."""
from __future__ import annotations

import _thread
import logging
import signal
import threading
import time

from waitress import wasyncore

log = logging.getLogger("promptproxy.server")


class GracefulShutdown:
    """SIGTERM/SIGINT handler: close the listener, drain in-flight work up to `grace` seconds, then stop.

    A second signal stops at once. Connections still busy when the grace period ends are closed, which ends
    their streams (their log rows are still written: the stream's cleanup records them as client disconnects).
    """

    def __init__(self, server, gateway, grace: float = 30.0, poll: float = 0.05):
        self.server = server
        self.gateway = gateway
        self.grace = grace
        self.poll = poll
        self.begun = False
        self.done = False
        self.leaving = False

    def install(self, worker: bool = False) -> None:
        """Handle SIGTERM and SIGINT; a worker of `serve --workers N` drains on SIGTERM and stops on SIGQUIT.

        A worker may get SIGTERM twice (from the supervisor and from a service manager signalling the whole
        group, as systemd does), so a repeated SIGTERM must not cut its streams short; the supervisor sends
        SIGQUIT for "stop now", and Ctrl-C reaches the workers only through the supervisor.
        """
        if worker:
            signal.signal(signal.SIGTERM, self.begin_once)
            signal.signal(signal.SIGQUIT, self.stop_now)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        signal.signal(signal.SIGTERM, self.begin)
        signal.signal(signal.SIGINT, self.begin)

    def begin_once(self, signum, frame) -> None:
        """A worker's SIGTERM: start draining; a repeat changes nothing (the drain thread's own signal ends it)."""
        if not self.begun or (self.done and not self.leaving):
            self.begin(signum, frame)

    def stop_now(self, signum, frame) -> None:
        """A worker's SIGQUIT: leave the event loop now; serve() then flushes the log."""
        if not self.leaving:
            self.leaving = True
            raise SystemExit(0)

    def begin(self, signum, frame) -> None:
        """Signal handler (main thread): start draining, or stop the loop when draining is over."""
        if self.done or self.begun:
            # draining finished (or a second signal): leave the event loop; serve() then flushes the log
            self.leaving = True  # a worker ignores signals from now on, so nothing cuts the flush short
            raise SystemExit(0)
        self.begun = True
        self.gateway.draining = True  # /readyz answers 503 from now on
        log.info("signal %s: no longer accepting connections; draining for up to %g s", signum, self.grace)
        self.server.trigger.pull_trigger(self._stop_accepting)
        threading.Thread(target=self._drain, name="promptproxy-shutdown", daemon=True).start()

    def _stop_accepting(self) -> None:
        """Close the listening socket (runs inside the event loop, between polls)."""
        self.server.accepting = False
        wasyncore.dispatcher.close(self.server)

    def busy(self) -> int:
        """Requests being handled, queued for a thread, or with output not yet sent."""
        dispatcher = self.server.task_dispatcher
        channels = list(self.server.active_channels.values())
        pending = sum(1 for ch in channels if ch.requests or ch.total_outbufs_len)
        return max(dispatcher.active_count + len(dispatcher.queue), pending)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace
        while self.busy() and time.monotonic() < deadline:
            time.sleep(self.poll)
        left = self.busy()
        if left:
            log.warning("shutdown grace period over with %d requests in flight; closing their connections", left)
            self.server.trigger.pull_trigger(self._close_channels)
            cutoff = time.monotonic() + 5.0
            while self.server.task_dispatcher.active_count and time.monotonic() < cutoff:
                time.sleep(self.poll)
        self.done = True
        _thread.interrupt_main(signal.SIGTERM)  # runs begin() in the main thread, which leaves the loop
        self.server.pull_trigger()  # wake the poll so the main thread notices at once

    def _close_channels(self) -> None:
        for channel in list(self.server.active_channels.values()):
            channel.handle_close()

    def finish(self) -> None:
        """After the loop: write every queued log row and close upstream pools."""
        self.gateway.close()
        log.info("request log flushed; bye")
