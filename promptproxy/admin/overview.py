"""The overview: usage charts and top lists (a member sees only their own usage)."""
from __future__ import annotations

import math

from flask import render_template, request
from flask_login import current_user

from .. import stats
from . import bp
from .auth import login_required
from .views import hx_target


@bp.get("/")
@login_required
def overview():
    """Charts for 24 h, 7 days or 30 days; the range switch swaps only the charts."""
    name = request.args.get("range", "24h")
    name = name if name in stats.RANGES else "24h"
    since, until, bucket = stats.window(name)
    user_id = None if current_user.is_admin else current_user.id
    data = stats.overview(since, until, bucket, user_id=user_id)
    dims = ("user", "model", "prompt") if current_user.is_admin else ("model", "prompt")
    tops = {dim: stats.top(dim, since, until, user_id=user_id, limit=50 if dim == "model" else 10) for dim in dims}
    tops["model"], unknown = stats.split_unknown_models(tops["model"], since, until, user_id)
    tag_spend = stats.top("tag", since, until, user_id=user_id, by="cost")
    if current_user.is_admin:
        tops["group"] = stats.top_groups(since, until)
    template = "admin/_charts.html" if hx_target() == "charts" else "admin/overview.html"
    return render_template(template, data=data, tops=tops, range_name=name, ranges=list(stats.RANGES),
                           since=since, until=until, unknown=unknown,
                           tag_spend=tag_spend)


@bp.app_template_filter("money")
def money(value) -> str:
    """US dollars for people: cents when they matter, else two significant digits (never 6.00000E-5)."""
    value = float(value or 0)
    if value == 0 or abs(value) >= 0.01:
        return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${value:.4f}"
    digits = 1 - math.floor(math.log10(abs(value)))
    return f"${value:.{digits}f}"

