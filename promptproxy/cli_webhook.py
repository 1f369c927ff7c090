"""`promptproxy webhook`: alert destinations (docs/alerts.md)."""
from __future__ import annotations

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext

from .alerts import webhooks
from .alerts.events import CATEGORIES
from .cli_common import ACTOR, committed, emit, json_option, row, say
from .extensions import db
from .models import Webhook


def webhook_dict(h: Webhook) -> dict:
    """A webhook as printed: the URL without its path, the secret only as set or not."""
    return {"id": h.id, "name": h.name, "url": webhooks.display_url(h.url), "events": h.events,
            "format": h.format, "secret": bool(h.secret_encrypted), "enabled": h.enabled}


@click.group()
def webhook():
    """Where alerts go: budget thresholds, error rates, provider circuits, expiring keys."""


@webhook.command("create")
@click.argument("name")
@click.option("--url", required=True, help="The receiver, e.g. a Slack incoming-webhook URL.")
@click.option("--events", default=",".join(CATEGORIES), show_default=True,
              help=f"Comma-separated: {', '.join(CATEGORIES)}.")
@click.option("--format", "fmt", type=click.Choice(webhooks.FORMATS), default="json", show_default=True)
@click.option("--secret", help="Signs each delivery (X-PromptProxy-Signature); stored encrypted, never shown.")
@with_appcontext
@committed
def webhook_create(name, url, events, fmt, secret):
    """Add a webhook."""
    h = webhooks.create_webhook(ACTOR, name, url, events, fmt, secret)
    say(f"created webhook {h.name} (id {h.id})")


@webhook.command("update")
@click.argument("name")
@click.option("--url")
@click.option("--events", help=f"Comma-separated: {', '.join(CATEGORIES)}.")
@click.option("--format", "fmt", type=click.Choice(webhooks.FORMATS))
@click.option("--secret", help="Replace the secret ('' removes it).")
@click.option("--enabled/--disabled", default=None)
@with_appcontext
@committed
def webhook_update(name, url, events, fmt, secret, enabled):
    """Change a webhook."""
    h = webhooks.get_webhook(name)
    changed = webhooks.update_webhook(ACTOR, h, url=url, events=events, fmt=fmt, secret=secret, enabled=enabled)
    say(f"updated webhook {h.name}: {', '.join(changed) or 'nothing changed'}")


@webhook.command("list")
@json_option
@with_appcontext
def webhook_list(as_json):
    """List webhooks."""
    for h in db.session.scalars(sa.select(Webhook).order_by(Webhook.name)):
        d = webhook_dict(h)
        row(d, as_json, h.id, h.name, d["url"], ",".join(h.events), h.format,
            "enabled" if h.enabled else "disabled")


@webhook.command("delete")
@click.argument("name")
@with_appcontext
@committed
def webhook_delete(name):
    """Delete a webhook and its delivery history."""
    webhooks.delete_webhook(ACTOR, webhooks.get_webhook(name))
    say(f"deleted webhook {name}")


@webhook.command("deliveries")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@with_appcontext
@committed
def webhook_deliveries(name, limit, as_json):
    """Recent deliveries of one webhook: status, attempts, last error."""
    for d in webhooks.deliveries(webhooks.get_webhook(name).id, limit):
        row({"id": d.id, "event": d.event, "status": d.status, "attempts": d.attempts,
             "http_status": d.response_status, "last_error": d.last_error, "created_at": d.created_at,
             "delivered_at": d.delivered_at}, as_json, d.id, d.created_at.isoformat(timespec="seconds") + "Z",
            d.event, d.status, d.attempts, d.response_status or "-", d.last_error or "")


@webhook.command("test")
@click.argument("name")
@json_option
@with_appcontext
def webhook_test(name, as_json):
    """Send a test alert now and report what the receiver answered (exit 1 when it failed)."""
    queued = committed(lambda: webhooks.send_test(ACTOR, webhooks.get_webhook(name)))()
    result = current_app.extensions["promptproxy"].alerts.deliver(queued) or {"status": "pending"}
    if as_json:
        emit({"delivery": queued, **result}, True)
    elif result.get("error"):
        say(f"test delivery {queued} failed: {result['error']} (status {result['status']}; retried by the server)")
    else:
        say(f"test delivery {queued} {result['status']} (HTTP {result.get('http_status')})")
    if result.get("error"):
        raise SystemExit(1)
