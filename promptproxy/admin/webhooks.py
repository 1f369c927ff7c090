"""Webhooks: where alerts go, a test button, and every delivery with its status, attempts and last error."""
from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..alerts import webhooks
from ..alerts.events import CATEGORIES
from ..extensions import db
from ..models import Webhook
from . import bp
from .auth import actor, admin_required
from .forms import options
from .views import save

EVENT_LABELS = {"budget": "Budget thresholds", "errors": "Model error rate", "provider": "Provider circuit open/closed",
                "key_expiry": "API key expiring"}


class WebhookForm(FlaskForm):
    """A webhook; the secret is write-only."""

    name = StringField("Name", validators=[DataRequired(), Length(max=64)])
    url = StringField("URL", validators=[DataRequired(), Length(max=512)],
                      description="e.g. a Slack incoming-webhook URL; checked by the same address guard as providers")
    events = SelectMultipleField("Events", choices=options([(c, EVENT_LABELS[c]) for c in CATEGORIES]),
                                 default=list(CATEGORIES), widget=ListWidget(prefix_label=False),
                                 option_widget=CheckboxInput())
    format = SelectField("Format", choices=options([("json", "JSON object"), ("slack", "Slack (text)")]))
    secret = PasswordField("Signing secret", validators=[Optional(), Length(max=1024)],
                           description="Optional; signs each delivery (X-PromptProxy-Signature). Never shown again.")
    clear_secret = BooleanField("Remove the stored secret")
    enabled = BooleanField("Enabled", default=True)


def page(form=None, edit=None, error=None, status=200):
    """The webhooks page: list, create or edit form, recent deliveries."""
    hooks = db.session.scalars(sa.select(Webhook).order_by(Webhook.name)).all()
    return render_template("admin/webhooks/index.html", hooks=hooks, form=form or WebhookForm(formdata=None),
                           edit=edit, error=error, deliveries=webhooks.deliveries(limit=50),
                           names={h.id: h.name for h in hooks}, display_url=webhooks.display_url), status


@bp.get("/webhooks")
@admin_required
def webhooks_page():
    """Webhooks and their deliveries."""
    return page()


@bp.get("/webhooks/deliveries")
@admin_required
def webhook_deliveries():
    """The deliveries table alone (refreshed by HTMX)."""
    hooks = {h.id: h.name for h in db.session.scalars(sa.select(Webhook))}
    return render_template("admin/webhooks/_deliveries.html", deliveries=webhooks.deliveries(limit=50), names=hooks)


@bp.post("/webhooks")
@admin_required
def webhook_create():
    """Create a webhook (URL through the address guard, secret encrypted)."""
    form = WebhookForm()
    if not form.validate_on_submit():
        return page(form, status=422)
    hook, error = save(lambda: webhooks.create_webhook(actor(), form.name.data, form.url.data.strip(),
                                                       form.events.data, form.format.data, form.secret.data or None))
    if error:
        return page(form, error=error, status=422)
    flash(f"Created webhook {hook.name}.", "success")
    return redirect(url_for("admin.webhooks_page"), 303)


@bp.route("/webhooks/<int:webhook_id>/edit", methods=["GET", "POST"])
@admin_required
def webhook_edit(webhook_id: int):
    """Edit; an empty secret field keeps the stored secret."""
    hook = db.get_or_404(Webhook, webhook_id)
    form = WebhookForm(obj=hook)
    if not form.is_submitted():
        form.secret.data = ""
        return page(form, edit=hook)
    if not form.validate():
        return page(form, edit=hook, status=422)
    secret = "" if form.clear_secret.data else (form.secret.data or None)
    _, error = save(lambda: webhooks.update_webhook(actor(), hook, url=form.url.data.strip(), events=form.events.data,
                                                    fmt=form.format.data, secret=secret, enabled=form.enabled.data))
    if error:
        db.session.refresh(hook)
        return page(form, edit=hook, error=error, status=422)
    flash(f"Saved webhook {hook.name}.", "success")
    return redirect(url_for("admin.webhooks_page"), 303)


@bp.post("/webhooks/<int:webhook_id>/test")
@admin_required
def webhook_test(webhook_id: int):
    """Queue a test alert; the alerts thread sends it and the deliveries table shows the outcome."""
    from flask import current_app

    hook = db.get_or_404(Webhook, webhook_id)
    _, error = save(lambda: webhooks.send_test(actor(), hook))
    current_app.extensions["promptproxy"].alerts.wake()
    flash(error or f"Test alert queued for {hook.name}; see its delivery below.", "error" if error else "success")
    return redirect(url_for("admin.webhooks_page"), 303)


@bp.post("/webhooks/<int:webhook_id>/delete")
@admin_required
def webhook_delete(webhook_id: int):
    """Delete a webhook and its deliveries."""
    hook = db.get_or_404(Webhook, webhook_id)
    name = hook.name
    _, error = save(lambda: webhooks.delete_webhook(actor(), hook))
    flash(error or f"Deleted webhook {name}.", "error" if error else "success")
    return redirect(url_for("admin.webhooks_page"), 303)
