"""Models: admins manage them; members see only the models they may use."""
from __future__ import annotations

import sqlalchemy as sa
from flask import render_template
from flask_login import current_user

from .. import manage
from ..extensions import db
from ..models import Model, Provider
from . import bp
from .auth import actor, admin_required, login_required
from .forms import ModelForm, options
from .views import created, deleted, edit_view, form_error, list_page, member_scope, number, save, updated

FOLDER = "models"
COLS = 6


def model_form(**kwargs) -> ModelForm:
    """The form with the providers to choose from."""
    form = ModelForm(**kwargs)
    form.provider.choices = options((str(p.id), p.name) for p in db.session.scalars(sa.select(Provider).order_by(
        Provider.name)))
    return form


def fields(form) -> dict:
    """manage.create_model/update_model arguments from the form."""
    fallbacks = [s.strip() for s in (form.fallbacks.data or "").split(",") if s.strip()]
    return dict(upstream_model=form.upstream_model.data, kind=form.kind.data, input_price=number(
        form.input_price.data) or 0.0, output_price=number(form.output_price.data) or 0.0,
        cached_input_price=number(form.cached_input_price.data), fallbacks=fallbacks, enabled=form.enabled.data,
        endpoints=form.endpoints.data or [])


def chosen_provider(form) -> Provider | None:
    """The provider picked in the form."""
    return db.session.get(Provider, int(form.provider.data)) if (form.provider.data or "").isdigit() else None


@bp.get("/models")
@login_required
def models():
    """Models: admins search slug and upstream name and get the create form; members see slugs they may use."""
    query = sa.select(Model).order_by(Model.slug)
    if current_user.is_admin:
        return list_page(FOLDER, query, (Model.slug, Model.upstream_model), create_form=model_form(formdata=None))
    scope = member_scope("models")  # None: a member allowed every model, still a member (no providers, no form)
    if scope is not None:
        query = query.where(Model.slug.in_(sorted(scope)))
    # members search slugs only: a search by upstream name would reveal it through which rows match
    return list_page(FOLDER, query, (Model.slug,), create_form=None)


@bp.app_template_global("visible_fallbacks")
def visible_fallbacks(model: Model) -> list[str]:
    """A model's fallbacks as the viewer may see them: all for admins, only models they may use for members."""
    scope = member_scope("models")
    return [slug for slug in model.fallbacks or () if scope is None or slug in scope]


bp.add_app_template_global(manage.served_endpoints, "served_endpoints")


@bp.post("/models")
@admin_required
def model_create():
    """Expose a provider's model under a slug."""
    form = model_form()
    error = None
    if form.validate_on_submit():
        provider = chosen_provider(form)
        if provider is None:
            error = "Choose a provider (create one first)."
        else:
            model, error = save(lambda: manage.create_model(actor(), form.slug.data.strip(), provider, **fields(form)))
            if error is None:
                return created(FOLDER, "admin.models", f"Created model {model.slug}.",
                               create_form=model_form(formdata=None))
    return form_error(FOLDER, error, create_form=form)


@bp.get("/models/<int:model_id>")
@admin_required
def model_row(model_id: int):
    """One row (cancel of an edit)."""
    return render_template("admin/models/_row.html", obj=db.get_or_404(Model, model_id))


@bp.route("/models/<int:model_id>/edit", methods=["GET", "POST"])
@admin_required
def model_edit(model_id: int):
    """Edit in place (the slug is fixed: clients and logs use it)."""
    model = db.get_or_404(Model, model_id)
    form = model_form(obj=model)
    title = f"Edit model {model.slug}"
    if not form.is_submitted():
        form.provider.data = str(model.provider_id)
        form.fallbacks.data = ", ".join(model.fallbacks or ())
        form.endpoints.data = list(model.declared_endpoints)
        return edit_view(FOLDER, model, form, COLS, title)
    if not form.validate():
        return edit_view(FOLDER, model, form, COLS, title, 422)
    _, error = save(lambda: manage.update_model(actor(), model, provider=chosen_provider(form), **fields(form)))
    if error:
        return edit_view(FOLDER, model, form, COLS, title, 422, error)
    return updated(FOLDER, model, "admin.models", f"Saved model {model.slug}.")


@bp.post("/models/<int:model_id>/delete")
@admin_required
def model_delete(model_id: int):
    """Delete a model (log rows keep its slug)."""
    model = db.get_or_404(Model, model_id)
    slug = model.slug
    _, error = save(lambda: manage.delete_model(actor(), model))
    return deleted("admin.models", f"Deleted model {slug}.", error)
