"""Create, change, delete and test webhooks; shared by the CLI and the dashboard, each change audited."""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app

from ..extensions import db
from ..manage import ManageError, _lookup, _slug, _unique, audit
from ..models import Webhook, WebhookDelivery, utcnow
from ..netguard import UnsafeURL, validate_base_url
from . import outbox
from .events import CATEGORIES

FORMATS = ("json", "slack")


def _gateway():
    return current_app.extensions["promptproxy"]


def check_url(url: str) -> str:
    """The URL through the same address guard as provider base URLs (private hosts need the same opt-in)."""
    try:
        return validate_base_url(url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except UnsafeURL as exc:
        raise ManageError(str(exc).replace("base URL", "webhook URL")) from None


def parse_events(events) -> list[str]:
    """Categories from a list or a comma-separated string; unknown names are refused."""
    items = events.split(",") if isinstance(events, str) else list(events or ())
    chosen = [e.strip() for e in items if e and e.strip()]
    unknown = sorted(set(chosen) - set(CATEGORIES))
    if unknown or not chosen:
        raise ManageError(f"events must be one or more of {', '.join(CATEGORIES)}"
                          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return [c for c in CATEGORIES if c in chosen]


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ManageError(f"format must be one of {', '.join(FORMATS)}")
    return fmt


def display_url(url: str) -> str:
    """Scheme, host and port only: a webhook path often is the secret (Slack's are)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path.strip("/") else f"{parts.scheme}://{parts.netloc}"


def get_webhook(ref: str) -> Webhook:
    """A webhook by name or id."""
    return _lookup(Webhook, Webhook.name, ref, "webhook")


def create_webhook(actor: str, name: str, url: str, events=CATEGORIES, fmt: str = "json",
                   secret: str | None = None) -> Webhook:
    """A new webhook; its secret is encrypted before it touches the database and never shown again."""
    name = _slug((name or "").strip(), "webhook name")
    if len(name) > 64:
        raise ManageError("webhook name must be at most 64 characters")
    _unique(Webhook, Webhook.name, name, "webhook")
    hook = Webhook(name=name, url=check_url(url), events=parse_events(events), format=_format(fmt), enabled=True)
    if secret:
        hook.secret_encrypted = _gateway().box.encrypt(secret)
    db.session.add(hook)
    db.session.flush()
    audit(actor, "create", "webhook", name, {"url": display_url(hook.url), "events": hook.events,
                                             "format": hook.format, "secret": bool(secret)})
    return hook


def update_webhook(actor: str, hook: Webhook, url: str | None = None, events=None, fmt: str | None = None,
                   secret: str | None = None, enabled: bool | None = None) -> dict:
    """Change a webhook; every value is checked before any is applied. `secret=""` removes the secret."""
    values = {"url": check_url(url) if url is not None else None,
              "events": parse_events(events) if events is not None else None,
              "format": _format(fmt) if fmt is not None else None, "enabled": enabled}
    changed = {}
    for field, value in values.items():
        if value is not None and value != getattr(hook, field):
            setattr(hook, field, value)
            changed[field] = display_url(value) if field == "url" else value
    if secret is not None:
        hook.secret_encrypted = _gateway().box.encrypt(secret) if secret else None
        changed["secret"] = "replaced" if secret else "removed"
    audit(actor, "update", "webhook", hook.name, changed)
    return changed


def delete_webhook(actor: str, hook: Webhook) -> None:
    """Delete a webhook and its deliveries."""
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    db.session.delete(hook)
    audit(actor, "delete", "webhook", hook.name)


def send_test(actor: str, hook: Webhook) -> int:
    """Queue a test alert for one webhook (delivered by the alerts thread, or at once by the CLI); its id."""
    now = utcnow()
    text = f"Test alert from PromptProxy for webhook {hook.name}."
    key = f"test:{secrets.token_hex(8)}"
    outbox.enqueue(db.session.connection(), [hook.id], "test", key, text, {"webhook": hook.name}, now)
    audit(actor, "test", "webhook", hook.name)
    return db.session.scalar(sa.select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook.id,
                                                                 WebhookDelivery.dedup_key == key))


def deliveries(hook_id: int | None = None, limit: int = 50) -> list:
    """The newest deliveries (all webhooks, or one)."""
    query = sa.select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if hook_id is not None:
        query = query.where(WebhookDelivery.webhook_id == hook_id)
    return list(db.session.scalars(query))
