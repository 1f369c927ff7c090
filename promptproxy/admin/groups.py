"""Groups: list, create, edit in place, delete (administrators only)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import render_template

from .. import groups as manage_groups
from ..extensions import db
from ..models import Group
from . import bp
from .auth import actor, admin_required
from .forms import GroupForm
from .users import limits_from, with_choices
from .views import created, deleted, edit_view, form_error, list_page, save, updated

FOLDER = "groups"
COLS = 5


def get_or_404(group_id: int) -> Group:
    """A group or 404."""
    return db.get_or_404(Group, group_id)


@bp.get("/groups")
@admin_required
def groups():
    """All groups, searchable by name."""
    query = sa.select(Group).order_by(Group.name)
    return list_page(FOLDER, query, (Group.name, Group.description),
                     create_form=with_choices(GroupForm(formdata=None)))


@bp.post("/groups")
@admin_required
def group_create():
    """Create a group."""
    form = with_choices(GroupForm())
    error = None
    if form.validate_on_submit():
        group, error = save(lambda: manage_groups.create_group(
            actor(), form.name.data, description=form.description.data or "", **limits_from(form)))
        if error is None:
            return created(FOLDER, "admin.groups", f"Created group {group.name}.",
                           create_form=with_choices(GroupForm(formdata=None)))
    return form_error(FOLDER, error, create_form=form)


@bp.get("/groups/<int:group_id>")
@admin_required
def group_row(group_id: int):
    """One row (cancel of an edit)."""
    return render_template("admin/groups/_row.html", obj=get_or_404(group_id))


@bp.route("/groups/<int:group_id>/edit", methods=["GET", "POST"])
@admin_required
def group_edit(group_id: int):
    """Edit a group in place."""
    group = get_or_404(group_id)
    form = with_choices(GroupForm(obj=group))
    title = f"Edit group {group.name}"
    if form.is_submitted() and not form.validate():
        return edit_view(FOLDER, group, form, COLS, title, 422)
    if not form.is_submitted():
        form.period.data = group.budget_period or ""
        form.budget.data = group.budget_usd
        return edit_view(FOLDER, group, form, COLS, title)
    _, error = save(lambda: manage_groups.update_group(
        actor(), group, name=form.name.data, description=form.description.data or "", **limits_from(form)))
    if error:
        db.session.refresh(group)
        return edit_view(FOLDER, group, form, COLS, title, 422, error)
    return updated(FOLDER, group, "admin.groups", f"Saved group {group.name}.")


@bp.post("/groups/<int:group_id>/delete")
@admin_required
def group_delete(group_id: int):
    """Delete a group (its members stay, without what it granted)."""
    group = get_or_404(group_id)
    name = group.name
    _, error = save(lambda: manage_groups.delete_group(actor(), group))
    return deleted("admin.groups", f"Deleted group {name}.", error)
