"""The overview: usage charts and top lists (a member sees only their own usage)."""
from __future__ import annotations

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
    tops = {dim: stats.top(dim, since, until, user_id=user_id) for dim in dims}
    if current_user.is_admin:
        tops["group"] = stats.top_groups(since, until)
    template = "admin/_charts.html" if hx_target() == "charts" else "admin/overview.html"
    return render_template(template, data=data, tops=tops, range_name=name, ranges=list(stats.RANGES),
                           since=since, until=until)

