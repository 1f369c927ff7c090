"""The durable outbox: one row per (webhook, event), queued once, claimed atomically, retried with back-off."""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from ..models import Webhook, WebhookDelivery
from .events import CATEGORIES

TABLE = WebhookDelivery.__table__
HOOKS = Webhook.__table__
PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"


def subscribers(conn) -> dict[str, list[int]]:
    """{category: ids of the enabled webhooks that asked for it} (one query; webhooks are few)."""
    rows = conn.execute(sa.select(HOOKS.c.id, HOOKS.c.events).where(HOOKS.c.enabled.is_(True))).all()
    return {c: [r.id for r in rows if c in (r.events or ())] for c in CATEGORIES}


def _insert_ignoring_duplicates(conn, rows: list[dict]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING on the (webhook_id, dedup_key) constraint; returns rows inserted."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases: one insert each, duplicates skipped
        done = 0
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(TABLE).values(**row))
                done += 1
            except sa.exc.IntegrityError:
                pass
        return done
    stmt = insert(TABLE).on_conflict_do_nothing(index_elements=["webhook_id", "dedup_key"])
    return sum(conn.execute(stmt.values(**row)).rowcount for row in rows)


def enqueue(conn, webhook_ids, event: str, dedup_key: str, text: str, data: dict, now: datetime) -> int:
    """Queue one event for each webhook; a (webhook, dedup_key) already queued by any instance is skipped."""
    rows = [{"webhook_id": wid, "event": event, "dedup_key": dedup_key[:191], "payload": {"text": text,
             "data": data}, "status": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
            for wid in webhook_ids]
    return _insert_ignoring_duplicates(conn, rows) if rows else 0


def due(conn, now: datetime, limit: int = 20) -> list[int]:
    """Ids ready to send: pending and due, or claimed by an instance whose lease ran out (it died mid-send)."""
    t = TABLE
    ready = sa.or_(sa.and_(t.c.status == PENDING, t.c.next_attempt_at <= now),
                   sa.and_(t.c.status == SENDING, t.c.lease_until < now))
    return list(conn.scalars(sa.select(t.c.id).where(ready).order_by(t.c.id).limit(limit)))


def claim(conn, delivery_id: int, now: datetime, lease: float) -> bool:
    """Take one row for this instance: a conditional UPDATE, so of two instances exactly one gets it."""
    t = TABLE
    ready = sa.or_(sa.and_(t.c.status == PENDING, t.c.next_attempt_at <= now),
                   sa.and_(t.c.status == SENDING, t.c.lease_until < now))
    done = conn.execute(sa.update(t).where(t.c.id == delivery_id, ready).values(
        status=SENDING, lease_until=now + timedelta(seconds=lease), attempts=t.c.attempts + 1))
    return done.rowcount == 1


def record(conn, delivery_id: int, now: datetime, status: int | None, error: str | None, retry_at: datetime | None):
    """Store an attempt's outcome: delivered, pending again (retry_at), or failed for good."""
    if error is None:
        values = {"status": DELIVERED, "delivered_at": now, "last_error": None}
    elif retry_at is not None:
        values = {"status": PENDING, "next_attempt_at": retry_at, "last_error": error[:512]}
    else:
        values = {"status": FAILED, "last_error": error[:512]}
    conn.execute(sa.update(TABLE).where(TABLE.c.id == delivery_id).values(
        response_status=status, lease_until=None, **values))
