"""Users: list, create, edit in place, delete (administrators only)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, url_for
from flask_login import current_user

from .. import groups as manage_groups
from .. import manage
from ..core.catalog import user_access
from ..extensions import db
from ..models import Group, Model, Prompt, User
from . import bp
from .auth import actor, admin_required
from .forms import UserEditForm, UserForm, options
from .views import created, deleted, edit_view, form_error, inline, int_or_zero, list_page, number, save, updated

FOLDER = "users"
COLS = 6


def with_choices(form):
    """Allow-list (and group) choices from the catalog."""
    form.allowed_models.choices = options(db.session.scalars(sa.select(Model.slug).order_by(Model.slug)))
    form.allowed_prompts.choices = options(db.session.scalars(sa.select(Prompt.slug).order_by(Prompt.slug)))
    if hasattr(form, "groups"):
        form.groups.choices = options(db.session.scalars(sa.select(Group.name).order_by(Group.name)))
    return form


@bp.app_template_global()
def effective_access(user: User) -> dict:
    """What the user may use through their own grants and their groups' (the union rule), for display."""
    models, prompts = user_access(user)
    shown = {"models": models, "prompts": prompts}
    return {kind: "every one" if found is None else (", ".join(sorted(found)) or "none")
            for kind, found in shown.items()}


def _save_user(change, form, user: User | None = None):
    """Apply a user change and the form's group list in one transaction (a refused part rolls back both)."""
    def both():
        result = change()
        manage_groups.set_memberships(actor(), user or result, replace=form.groups.data or [])
        return result
    return save(both)


def limits_from(form) -> dict:
    """manage.apply_limits arguments from the form; the lists are replaced, not extended."""
    return dict(rpm=int_or_zero(form.rpm.data), tpm=int_or_zero(form.tpm.data),
                max_concurrent=int_or_zero(form.max_concurrent.data), budget=number(form.budget.data) or 0.0,
                period=form.period.data or None, all_models=form.all_models.data, all_prompts=form.all_prompts.data,
                clear_models=True, allow_models=form.allowed_models.data or (),
                clear_prompts=True, allow_prompts=form.allowed_prompts.data or ())


def get_or_404(user_id: int) -> User:
    """A user or 404."""
    return db.get_or_404(User, user_id)


def index_ctx(form=None) -> dict:
    """What the index page needs besides the rows."""
    return {"create_form": form or with_choices(UserForm(formdata=None))}


@bp.get("/users")
@admin_required
def users():
    """All users, searchable by name and email."""
    query = sa.select(User).order_by(User.name)
    return list_page(FOLDER, query, (User.name, User.email), **index_ctx())


@bp.post("/users")
@admin_required
def user_create():
    """Create a user."""
    form = with_choices(UserForm())
    error = None
    if form.validate_on_submit():
        user, error = _save_user(lambda: manage.create_user(
            actor(), form.name.data, email=form.email.data or None, role=form.role.data,
            password=form.password.data or None, **limits_from(form)), form)
        if error is None:
            return created(FOLDER, "admin.users", f"Created user {user.name}.", create_form=with_choices(
                UserForm(formdata=None)))
    return form_error(FOLDER, error, create_form=form)


@bp.get("/users/<int:user_id>")
@admin_required
def user_row(user_id: int):
    """One row (cancel of an edit)."""
    return render_template("admin/users/_row.html", obj=get_or_404(user_id))


@bp.route("/users/<int:user_id>/edit", methods=["GET", "POST"])
@admin_required
def user_edit(user_id: int):
    """Edit a user in place."""
    user = get_or_404(user_id)
    form = with_choices(UserEditForm(obj=user))
    if form.is_submitted() and not form.validate():
        return edit_view(FOLDER, user, form, COLS, f"Edit user {user.name}", 422)
    if not form.is_submitted():
        form.period.data = user.budget_period or ""
        form.budget.data = user.budget_usd
        form.groups.data = [g.name for g in user.groups]
        return edit_view(FOLDER, user, form, COLS, f"Edit user {user.name}")
    if user.id == current_user.id and (form.role.data != "admin" or not form.active.data):
        return edit_view(FOLDER, user, form, COLS, f"Edit user {user.name}", 422,
                         "You cannot remove your own administrator role or disable yourself.")
    _, error = _save_user(lambda: manage.update_user(
        actor(), user, email=form.email.data or "", role=form.role.data, active=form.active.data,
        password=form.password.data or None, **limits_from(form)), form, user)
    if error:
        return edit_view(FOLDER, user, form, COLS, f"Edit user {user.name}", 422, error)
    return updated(FOLDER, user, "admin.users", f"Saved user {user.name}.")


@bp.post("/users/<int:user_id>/delete")
@admin_required
def user_delete(user_id: int):
    """Delete a user and their keys (log rows stay)."""
    user = get_or_404(user_id)
    if user.id == current_user.id:
        return deleted("admin.users", "", "You cannot delete yourself.", lambda e: (render_template(
            "admin/users/_row.html", obj=user, error=e), 422))
    name = user.name
    outcome, error = save(lambda: manage.delete_user(actor(), user))
    if outcome == "deactivated":  # kept for the request log's attribution: the row stays, now inactive
        if inline():
            return render_template("admin/users/_row.html", obj=user)
        flash(f"Deactivated user {name}: they have request history, kept so the log still shows their name.", "info")
        return redirect(url_for("admin.users"), 303)
    return deleted("admin.users", f"Deleted user {name}.", error)
