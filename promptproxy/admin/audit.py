"""The audit log: who changed what (administrators only)."""
from __future__ import annotations

import sqlalchemy as sa

from ..models import AuditEvent
from . import bp
from .auth import admin_required
from .views import list_page


@bp.get("/audit")
@admin_required
def audit():
    """Newest first, searchable by actor, action and target."""
    query = sa.select(AuditEvent).order_by(AuditEvent.id.desc())
    return list_page("audit", query, (AuditEvent.actor, AuditEvent.action, AuditEvent.target_type,
                                      AuditEvent.target))
