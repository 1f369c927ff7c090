"""API keys: admins see all, members only their own (create and revoke); a new secret is shown once."""
from __future__ import annotations

from datetime import datetime, time

import sqlalchemy as sa
from flask import abort, render_template
from flask_login import current_user

from .. import manage
from ..extensions import db
from ..models import ApiKey, User
from ..proxy.tags import split as split_tags
from . import bp
from .auth import actor, login_required
from .forms import KeyForm, options
from .views import deleted, form_error, hx_target, list_page, save

FOLDER = "keys"


def key_form(formdata=True) -> KeyForm:
    """The create form; only admins choose the user."""
    form = KeyForm() if formdata else KeyForm(formdata=None)
    if current_user.is_admin:
        users = db.session.scalars(sa.select(User).order_by(User.name))
        form.user.choices = options((str(u.id), u.name) for u in users)
        if not form.user.data:
            form.user.data = str(current_user.id)
    else:
        del form.user
    return form


def visible(query):
    """Members see only their own keys."""
    return query if current_user.is_admin else query.where(ApiKey.user_id == current_user.id)


def own_key_or_404(key_id: int) -> ApiKey:
    """A key the current user may manage; someone else's is a 404 for members."""
    key = db.session.scalar(visible(sa.select(ApiKey).where(ApiKey.id == key_id)))
    if key is None:
        abort(404)
    return key


@bp.get("/keys")
@login_required
def keys():
    """Keys, newest first, searchable by name, prefix and user."""
    query = visible(sa.select(ApiKey).join(User, ApiKey.user_id == User.id).order_by(ApiKey.id.desc()))
    return list_page(FOLDER, query, (ApiKey.name, ApiKey.prefix, User.name), create_form=key_form(False))


@bp.post("/keys")
@login_required
def key_create():
    """Create a key and show its secret exactly once."""
    form = key_form()
    if not form.validate_on_submit():
        return form_error(FOLDER, None, create_form=form)
    owner = current_user if not current_user.is_admin else db.session.get(User, int(form.user.data or 0))
    if owner is None:
        return form_error(FOLDER, "Choose a user.", create_form=form)
    expires = datetime.combine(form.expires.data, time.max.replace(microsecond=0)) if form.expires.data else None
    tags = split_tags(form.tags.data or "")
    result, error = save(lambda: manage.create_key(actor(), owner, form.name.data or "", expires, tags))
    if error:
        return form_error(FOLDER, error, create_form=form)
    key, raw = result
    if hx_target() == "create-form":
        return render_template("admin/keys/_created.html", key=key, secret=raw, owner=owner), 200, {
            "HX-Trigger": "rows-changed"}
    return render_template("admin/keys/created_page.html", key=key, secret=raw, owner=owner), 201


@bp.get("/keys/new")
@login_required
def key_new():
    """A fresh create form (after a secret was shown)."""
    return render_template("admin/keys/_create.html", create_form=key_form(False))


@bp.post("/keys/<int:key_id>/revoke")
@login_required
def key_revoke(key_id: int):
    """Revoke a key at once."""
    key = own_key_or_404(key_id)
    _, error = save(lambda: manage.revoke_key(actor(), key))
    if not error and hx_target().startswith("row-"):
        return render_template("admin/keys/_row.html", obj=key)
    return deleted("admin.keys", f"Revoked key {key.display}.", error)
