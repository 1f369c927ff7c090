"""The request log: filters, a detail view and a streamed CSV export (members see only their own rows)."""
from __future__ import annotations

import csv
import io
from datetime import datetime

import sqlalchemy as sa
from flask import Response, abort, render_template, request, stream_with_context
from flask_login import current_user

from ..extensions import db
from ..models import ApiKey, Group, GroupMember, RequestLog, RequestTag, User, tagged
from . import bp
from .auth import login_required
from .views import PER_PAGE, hx_target

FILTERS = ("user", "group", "key", "model", "prompt", "status", "since", "until", "tag", "by")
CSV_COLUMNS = ("created_at", "request_id", "user_id", "groups", "key_id", "model", "upstream_model", "prompt",
               "prompt_version", "endpoint", "stream", "status", "error_type", "input_tokens", "output_tokens",
               "cached_tokens", "usage_estimated", "cost", "latency_ms", "ttft_ms", "client_ip", "tags")
ADMIN_ONLY_COLUMNS = ("upstream_model",)  # hidden from members on the page, so in their export too


def parse_time(value: str) -> datetime | None:
    """A datetime-local value (UTC) or an ISO date; None when empty or invalid."""
    try:
        return datetime.fromisoformat(value.strip().removesuffix("Z")) if value.strip() else None
    except ValueError:
        return None


def filtered() -> tuple[sa.Select, dict, list[str]]:
    """The log query narrowed by the filters in the query string; members are pinned to themselves."""
    args = {k: request.args.get(k, "").strip()[:200] for k in FILTERS}
    query, errors = sa.select(RequestLog), []
    if not current_user.is_admin:
        query = query.where(RequestLog.user_id == current_user.id)
    elif args["user"].isdigit():
        query = query.where(RequestLog.user_id == int(args["user"]))
    if current_user.is_admin and args["group"].isdigit():  # the group's current members' rows
        query = query.where(RequestLog.user_id.in_(
            sa.select(GroupMember.user_id).where(GroupMember.group_id == int(args["group"]))))
    if args["key"].isdigit():
        query = query.where(RequestLog.key_id == int(args["key"]))
    for name, column in (("model", RequestLog.model), ("prompt", RequestLog.prompt)):
        if args[name]:
            query = query.where(column == args[name])
    if args["tag"]:
        query = query.where(tagged(args["tag"]))
    status = args["status"]
    if status == "ok":
        query = query.where(RequestLog.status < 400)
    elif status == "error":
        query = query.where(RequestLog.status >= 400)
    elif status.isdigit():
        query = query.where(RequestLog.status == int(status))
    elif status:
        errors.append("Status must be ok, error or a number.")
    for name, op in (("since", "__ge__"), ("until", "__lt__")):
        when = parse_time(args[name])
        if args[name] and when is None:
            errors.append(f"{name.capitalize()} is not a date and time.")
        elif when is not None:
            query = query.where(getattr(RequestLog.created_at, op)(when))
    return query, args, errors


def by_tag(query: sa.Select, limit: int = 50) -> list:
    """Requests, errors, tokens and cost per tag over the filtered rows, most spent first."""
    rows = query.with_only_columns(RequestLog.request_id, RequestLog.status, RequestLog.input_tokens,
                                   RequestLog.output_tokens, RequestLog.cost).subquery()
    return db.session.execute(
        sa.select(RequestTag.tag, sa.func.count().label("requests"),
                  sa.func.sum(sa.case((rows.c.status >= 400, 1), else_=0)).label("errors"),
                  sa.func.sum(sa.func.coalesce(rows.c.input_tokens, 0) + sa.func.coalesce(rows.c.output_tokens, 0))
                  .label("tokens"), sa.func.sum(sa.func.coalesce(rows.c.cost, 0.0)).label("cost"))
        .join(rows, rows.c.request_id == RequestTag.request_id).group_by(RequestTag.tag)
        .order_by(sa.desc("cost"), RequestTag.tag).limit(limit)).all()


def user_names(ids) -> dict[int, str]:
    """User names for display."""
    ids = {i for i in ids if i is not None}
    return {i: n for i, n in db.session.execute(sa.select(User.id, User.name).where(User.id.in_(ids)))} if ids else {}


@bp.get("/requests")
@login_required
def requests_log():
    """Newest first, filterable; the filter form swaps only the rows."""
    query, args, errors = filtered()
    page = db.paginate(query.order_by(RequestLog.id.desc()), page=request.args.get("page", 1, type=int),
                       per_page=PER_PAGE * 2, max_per_page=200, error_out=False)
    admin = current_user.is_admin
    users = db.session.execute(sa.select(User.id, User.name).order_by(User.name)).all() if admin else []
    groups = db.session.execute(sa.select(Group.id, Group.name).order_by(Group.name)).all() if admin else []
    template = "admin/requests/_rows.html" if hx_target() == "rows" else "admin/requests/index.html"
    tag_groups = by_tag(query) if args["by"] == "tag" and not errors else None
    return render_template(template, page=page, args=args, errors=errors, users=users, groups=groups,
                           tag_groups=tag_groups,
                           names=user_names(r.user_id for r in page.items))


@bp.get("/requests/<int:row_id>")
@login_required
def request_detail(row_id: int):
    """One row in full (bodies only if body logging was on)."""
    row = db.session.get(RequestLog, row_id)
    if row is None or (not current_user.is_admin and row.user_id != current_user.id):
        abort(404)
    key = db.session.get(ApiKey, row.key_id) if row.key_id else None
    return render_template("admin/requests/detail.html", row=row, key=key, names=user_names([row.user_id]))


def group_names() -> dict[int, list[str]]:
    """Each user's current groups, by name (the CSV's `groups` column)."""
    out: dict[int, list[str]] = {}
    query = sa.select(GroupMember.user_id, Group.name).join(Group).order_by(Group.name)
    for user_id, name in db.session.execute(query):
        out.setdefault(user_id, []).append(name)
    return out


def csv_cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else (value.isoformat() if isinstance(value, datetime) else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_columns() -> tuple[str, ...]:
    """The export's columns for the viewer: members get none the request pages hide from them."""
    return CSV_COLUMNS if current_user.is_admin else tuple(c for c in CSV_COLUMNS if c not in ADMIN_ONLY_COLUMNS)


@bp.get("/requests.csv")
@login_required
def requests_csv():
    """The filtered log as CSV, streamed in batches."""
    query, _, errors = filtered()
    if errors:
        abort(400, "; ".join(errors))
    query = query.order_by(RequestLog.id).execution_options(yield_per=1000)

    memberships = group_names()
    columns = csv_columns()

    def generate():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for row in db.session.scalars(query):
            values = {"groups": " ".join(memberships.get(row.user_id, ()))}
            writer.writerow([csv_cell(values[c] if c in values else getattr(row, c)) for c in columns])
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    return Response(stream_with_context(generate()), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=requests.csv"})
