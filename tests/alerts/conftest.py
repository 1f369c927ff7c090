"""Fixtures for alerts: a real webhook receiver on 127.0.0.1, fast retries, helpers to read the outbox."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import sqlalchemy as sa

from promptproxy.alerts import webhooks
from promptproxy.extensions import db
from promptproxy.models import WebhookDelivery

from ..admin.conftest import admin_web, member_web, page, people  # noqa: F401 - dashboard and Chromium fixtures


class Receiver:
    """Records every POST; answers the scripted statuses in turn, then 200."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # the body is not held back until the headers are acknowledged

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-path"

    def start(self) -> Receiver:
        # A short poll: stop() waits for the loop to notice (0.5 s per test at the default interval).
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def json(self, i: int = -1) -> dict:
        return orjson.loads(self.requests[i]["body"])

    def events(self, kind: str | None = None) -> list[dict]:
        bodies = [orjson.loads(r["body"]) for r in self.requests]
        return [b for b in bodies if kind is None or b.get("event") == kind]


@pytest.fixture(autouse=True)
def fast_alerts(monkeypatch):
    """Quick retries and polls, so tests wait milliseconds (read when each app is created)."""
    for name, value in {"ALERT_RETRY_BACKOFF": "0.05", "ALERT_POLL_INTERVAL": "0.05", "ALERT_TIMEOUT": "5",
                        "ALERT_CHECK_INTERVAL": "3600"}.items():
        monkeypatch.setenv(f"PROMPTPROXY_{name}", value)


@pytest.fixture
def receiver():
    """A real HTTP receiver on a free loopback port."""
    server = Receiver().start()
    yield server
    server.stop()


def make_hook(app, url: str, name: str = "ops", events="budget,errors,provider,key_expiry", fmt: str = "json",
              secret: str | None = None) -> int:
    """A webhook created as the CLI and the dashboard do; its id."""
    with app.app_context():
        hook = webhooks.create_webhook("test", name, url, events, fmt, secret)
        db.session.commit()
        return hook.id


def deliveries(app, event: str | None = None) -> list[WebhookDelivery]:
    """Outbox rows, oldest first."""
    with app.app_context():
        query = sa.select(WebhookDelivery).order_by(WebhookDelivery.id)
        if event:
            query = query.where(WebhookDelivery.event == event)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return rows


def worker(app):
    """The app's alerts worker."""
    return app.extensions["promptproxy"].alerts
