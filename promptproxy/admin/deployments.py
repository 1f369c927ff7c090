"""A model's deployments: health and traffic per deployment, add or change one, remove one (admins)."""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from .. import manage
from ..extensions import db
from ..models import Model, ModelDeployment, Provider, RequestLog, utcnow
from . import bp
from .auth import actor, admin_required
from .forms import options
from .views import save


class DeploymentForm(FlaskForm):
    """Where a model runs: a provider and its model name, with weight, priority and optional limits."""

    provider = SelectField("Provider", choices=[], validate_choice=False)
    upstream_model = StringField("Upstream model", validators=[DataRequired(), Length(max=256)])
    weight = IntegerField("Weight", default=1, validators=[Optional(), NumberRange(min=0)])
    priority = IntegerField("Priority", default=0, validators=[Optional(), NumberRange(min=0)])
    rpm = IntegerField("RPM (0 = none)", validators=[Optional(), NumberRange(min=0)])
    tpm = IntegerField("TPM (0 = none)", validators=[Optional(), NumberRange(min=0)])


def _form(**kwargs) -> DeploymentForm:
    form = DeploymentForm(**kwargs)
    form.provider.choices = options((str(p.id), p.name) for p in db.session.scalars(
        sa.select(Provider).order_by(Provider.name)))
    return form


def _traffic(model: Model) -> dict[int, tuple[int, int]]:
    """{deployment id: (requests, errors)} over the last 24 hours, from the request log.

    By deployment, not by the row's model: a call whose fallback to this model failed is counted here too.
    """
    since = utcnow() - timedelta(hours=24)
    ids = [d.id for d in model.deployments]
    rows = db.session.execute(sa.select(RequestLog.deployment_id, sa.func.count(),
                                        sa.func.sum(sa.case((RequestLog.status >= 500, 1), else_=0)))
                              .where(RequestLog.deployment_id.in_(ids), RequestLog.created_at >= since)
                              .group_by(RequestLog.deployment_id))
    return {dep: (count, int(errors or 0)) for dep, count, errors in rows}


@bp.get("/models/<int:model_id>/deployments")
@admin_required
def model_deployments(model_id: int, form: DeploymentForm | None = None, status: int = 200):
    """The deployments page."""
    model = db.get_or_404(Model, model_id)
    gw = current_app.extensions["promptproxy"]
    gw.catalog.refresh()
    info = gw.catalog.model(model.slug)
    health = {s["deployment_id"]: s for s in gw.deployments.states(info)} if info else {}
    return render_template("admin/models/deployments.html", model=model, form=form or _form(formdata=None),
                           health=health, traffic=_traffic(model)), status


@bp.post("/models/<int:model_id>/deployments")
@admin_required
def model_deploy(model_id: int):
    """Add a deployment, or change the one with this provider and upstream name."""
    model = db.get_or_404(Model, model_id)
    form = _form()
    provider = db.session.get(Provider, int(form.provider.data)) if (form.provider.data or "").isdigit() else None
    if not form.validate() or provider is None:
        flash("Choose a provider and an upstream model; numbers must be positive.", "error")
        return model_deployments(model_id, form, 422)
    fields = {name: getattr(form, name).data for name in ("weight", "priority", "rpm", "tpm")}
    _, error = save(lambda: manage.deploy(actor(), model, provider, form.upstream_model.data, **fields))
    flash(error or f"Deployment {provider.name} → {form.upstream_model.data.strip()} saved.",
          "error" if error else "info")
    return redirect(url_for("admin.model_deployments", model_id=model.id), 303)


@bp.post("/models/<int:model_id>/deployments/<int:deployment_id>/delete")
@admin_required
def model_undeploy(model_id: int, deployment_id: int):
    """Remove one deployment (a model keeps at least one)."""
    model = db.get_or_404(Model, model_id)
    dep = db.session.get(ModelDeployment, deployment_id)
    if dep is None or dep.model_id != model.id:
        return redirect(url_for("admin.model_deployments", model_id=model.id), 303)
    name, upstream = dep.provider.name, dep.upstream_model
    _, error = save(lambda: manage.undeploy(actor(), model, dep.provider, upstream))
    flash(error or f"Deployment {name} → {upstream} removed.", "error" if error else "info")
    return redirect(url_for("admin.model_deployments", model_id=model.id), 303)
