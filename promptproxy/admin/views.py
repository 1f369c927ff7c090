"""Shared view helpers: list pages with search and pagination, partial-or-page responses, saving."""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..core.catalog import user_access
from ..extensions import db
from ..manage import ManageError

PER_PAGE = 25


def hx_target() -> str:
    """The id of the element HTMX will swap (empty for a normal navigation)."""
    return request.headers.get("HX-Target", "") if request.headers.get("HX-Request") else ""


def inline() -> bool:
    """True when HTMX asked for one table row (edit in place)."""
    return hx_target().startswith("row-")


def search(query, columns, text: str):
    """Case-insensitive substring search over columns (LIKE wildcards in the text are literal)."""
    if not text:
        return query
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return query.where(sa.or_(*(sa.func.lower(c).like(pattern.lower(), escape="\\") for c in columns)))


def list_page(folder: str, query, columns=(), **ctx):
    """The index page, or just its rows when the search box or a page link asked for them."""
    q = request.args.get("q", "").strip()[:200]
    page = db.paginate(search(query, columns, q), page=request.args.get("page", 1, type=int), per_page=PER_PAGE,
                       max_per_page=100, error_out=False)
    args = {k: v for k, v in request.args.items() if k != "page"}
    template = f"admin/{folder}/_rows.html" if hx_target() == "rows" else f"admin/{folder}/index.html"
    return render_template(template, page=page, q=q, args=args, folder=folder, **ctx)


def save(change: Callable[[], object]) -> tuple[object, str | None]:
    """Run a manage.* change and commit; a ManageError rolls back and becomes a message."""
    try:
        result = change()
        db.session.commit()
        return result, None
    except ManageError as exc:
        db.session.rollback()
        return None, str(exc)


def created(folder: str, endpoint: str, message: str, **ctx):
    """After a create: a fresh form that refreshes the rows (HTMX), or back to the list."""
    if hx_target() == "create-form":
        return render_template(f"admin/{folder}/_create.html", notice=message, **ctx), 200, {
            "HX-Trigger": "rows-changed"}
    flash(message)
    return redirect(url_for(endpoint), 303)


def form_error(folder: str, error: str | None, **ctx):
    """A create form with its errors: the partial for HTMX, a page otherwise (422 either way)."""
    template = f"admin/{folder}/_create.html" if hx_target() == "create-form" else "admin/create_page.html"
    return render_template(template, error=error, folder=folder, **ctx), 422


def edit_view(folder: str, obj, form, cols: int, title: str, status: int = 200, error: str | None = None):
    """The edit form: a table row for HTMX, a page otherwise."""
    if inline():
        return render_template("admin/_edit_row.html", obj=obj, form=form, cols=cols, folder=folder, inline=True,
                               error=error), status
    return render_template("admin/edit_page.html", obj=obj, form=form, folder=folder, inline=False, title=title,
                           error=error), status


def updated(folder: str, obj, endpoint: str, message: str, **ctx):
    """After an edit: the display row (HTMX; it may show the message as `notice`), or back to the list."""
    if inline():
        return render_template(f"admin/{folder}/_row.html", obj=obj, notice=message, **ctx)
    flash(message)
    return redirect(url_for(endpoint), 303)


def deleted(endpoint: str, message: str, error: str | None, row: Callable[[], str] | None = None):
    """After a delete: an empty swap removes the row (HTMX), or back to the list with a message."""
    if inline():
        if error:
            return row(error) if row else (error, 422)
        return ""
    flash(error or message, "error" if error else "info")
    return redirect(url_for(endpoint), 303)


def number(value):
    """Form decimals to float (None stays None)."""
    return None if value is None else float(value)


def int_or_zero(value) -> int:
    """An empty limit field means 'no limit' (0 for manage.apply_limits)."""
    return value or 0


def member_scope(kind: str) -> frozenset | None:
    """Slugs of models or prompts the viewer may list; None = every one (admins, and members allowed everything).

    None is "no limit", never "admin": a member allowed every model is still a member. Test `is_admin` for what
    only administrators see (forms, providers, upstream names).
    """
    if current_user.is_admin:
        return None
    models, prompts = user_access(current_user)
    return models if kind == "models" else prompts
