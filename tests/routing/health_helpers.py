"""Helpers for the health tests: breakers on (the test config turns them off), scripted upstream answers."""
from __future__ import annotations

import json

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.routing.breakers import Breakers

JSON = {"Content-Type": "application/json"}


def breakers_on(app, clock: list | None = None, **settings) -> Breakers:
    """The shipped breaker settings (BREAKER_* defaults) on the app's gateway, optionally on a fake clock."""
    gw = app.extensions["promptproxy"]
    cfg = {**app.config, "BREAKER_THRESHOLD": 1, "BREAKER_MIN_REQUESTS": 10, "BREAKER_COOLDOWN": 30.0,
           "BREAKER_WINDOW": 30.0, "BREAKER_FAILURE_RATE": 0.5, **settings}
    gw.breakers = Breakers.from_config(cfg, gw.state)
    gw.breakers.listener = gw.alerts.events.put
    if clock is not None:
        gw.breakers.clock = lambda: clock[0]
    return gw.breakers


def answer(status: int, message: str, headers: dict | None = None):
    """An upstream error answer (status, headers, body)."""
    return status, {**JSON, **(headers or {})}, json.dumps({"error": {"message": message, "type": "server_error"}})


def add_chat_model(app, slug: str, upstream_model: str, provider: str = "local", fallback_of: str | None = None):
    """Another chat model on a provider, optionally appended to another model's fallbacks."""
    with app.app_context():
        manage.create_model("t", slug, manage.get_provider(provider), upstream_model)
        if fallback_of:
            primary = manage.get_model(fallback_of)
            manage.update_model("t", primary, fallbacks=[*(primary.fallbacks or []), slug])
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
