"""Providers: upstream APIs; the secret is write-only (a hint, never the value)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import render_template

from .. import manage
from ..extensions import db
from ..models import Provider
from ..netguard import HOST_CHANGED
from ..providers import KINDS
from . import bp
from .auth import actor, admin_required
from .forms import ProviderForm, options
from .views import created, deleted, edit_view, form_error, list_page, number, save, updated

FOLDER = "providers"
COLS = 5
SECRET_NAMES = {"api_key": "API key", "headers": "extra headers"}


def provider_form(**kwargs) -> ProviderForm:
    """The form with the known kinds."""
    form = ProviderForm(**kwargs)
    form.kind.choices = options(KINDS)
    return form


def provider_options(form) -> dict:
    """Optional settings from the form (None = unchanged)."""
    return dict(first_byte_timeout=number(form.first_byte_timeout.data), total_timeout=number(form.total_timeout.data),
                responses_api=form.responses_api.data, reasoning_effort=form.reasoning_effort.data,
                enabled=form.enabled.data)


@bp.app_context_processor
def breaker_helper() -> dict:
    """`breaker(provider_id)`: the circuit-breaker state for a provider row."""
    from ..routing.breakers import breaker_states

    return {"breaker": lambda provider_id: breaker_states().get(provider_id)}


@bp.get("/providers")
@admin_required
def providers():
    """Providers, searchable by name and URL."""
    query = sa.select(Provider).order_by(Provider.name)
    return list_page(FOLDER, query, (Provider.name, Provider.base_url), create_form=provider_form(formdata=None))


@bp.post("/providers")
@admin_required
def provider_create():
    """Create a provider; its key is encrypted before it is stored."""
    form = provider_form()
    error = None
    if form.validate_on_submit():
        provider, error = save(lambda: manage.create_provider(
            actor(), form.name.data.strip(), form.kind.data, form.base_url.data.strip(),
            api_key=form.api_key.data or None, **provider_options(form)))
        if error is None:
            return created(FOLDER, "admin.providers", f"Created provider {provider.name}.",
                           create_form=provider_form(formdata=None))
    return form_error(FOLDER, error, create_form=form)


@bp.get("/providers/<int:provider_id>")
@admin_required
def provider_row(provider_id: int):
    """One row (cancel of an edit)."""
    return render_template("admin/providers/_row.html", obj=db.get_or_404(Provider, provider_id))


@bp.route("/providers/<int:provider_id>/edit", methods=["GET", "POST"])
@admin_required
def provider_edit(provider_id: int):
    """Edit in place; an empty key field keeps the stored key (a new host drops it and the extra headers)."""
    provider = db.get_or_404(Provider, provider_id)
    form = provider_form(obj=provider)
    title = f"Edit provider {provider.name}"
    if not form.is_submitted():
        form.api_key.data = ""
        return edit_view(FOLDER, provider, form, COLS, title)
    if not form.validate():
        return edit_view(FOLDER, provider, form, COLS, title, 422)
    api_key = "" if form.clear_key.data else (form.api_key.data or None)
    changed, error = save(lambda: manage.update_provider(
        actor(), provider, base_url=form.base_url.data.strip(), api_key=api_key, name=form.name.data.strip(),
        **provider_options(form)))
    if error:
        return edit_view(FOLDER, provider, form, COLS, title, 422, error)
    dropped = [SECRET_NAMES[s] for s, note in changed.items() if note == HOST_CHANGED]
    note = f" The host changed: the stored {' and '.join(dropped)} were dropped." if dropped else ""
    return updated(FOLDER, provider, "admin.providers", f"Saved provider {provider.name}.{note}")


@bp.post("/providers/<int:provider_id>/delete")
@admin_required
def provider_delete(provider_id: int):
    """Delete a provider no model uses."""
    provider = db.get_or_404(Provider, provider_id)
    name = provider.name
    _, error = save(lambda: manage.delete_provider(actor(), provider))
    return deleted("admin.providers", f"Deleted provider {name}.", error, lambda e: (render_template(
        "admin/providers/_row.html", obj=provider, error=e), 422))
