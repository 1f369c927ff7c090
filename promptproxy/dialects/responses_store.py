"""Stored Responses API answers: what `store`, `previous_response_id` and /v1/responses/{id} read and write."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from ..extensions import db
from ..models import StoredResponse
from .responses_wire import JSON, response_items_for_history


def save(
    *,
    response: JSON,
    user_id: int,
    key_id: int | None,
    model: str,
    input_items: Iterable[JSON],
    context: Iterable[JSON] = (),
    previous_response_id: str | None = None,
) -> StoredResponse:
    """Store a finished Response (with the turn's input and the history before it) and commit."""
    row = StoredResponse(
        id=response["id"],
        user_id=user_id,
        key_id=key_id,
        created_at=_naive_utc(response.get("created_at")),
        model=model,
        previous_response_id=previous_response_id,
        context=list(context),
        input_items=list(input_items),
        response=response,
    )
    db.session.add(row)
    db.session.commit()
    return row


def load(response_id: str, user_id: int) -> StoredResponse | None:
    """The user's stored response; another user's id reads as missing, so the caller answers 404."""
    return db.session.scalar(
        sa.select(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.user_id == user_id)
    )


def delete(response_id: str, user_id: int) -> bool:
    """Delete the user's stored response; False when there was none (or it is someone else's)."""
    count = db.session.execute(
        sa.delete(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.user_id == user_id)
    ).rowcount
    db.session.commit()
    return bool(count)


def history(response_id: str, user_id: int) -> list[JSON] | None:
    """The items a turn with previous_response_id continues from: that response's context, input and output."""
    row = load(response_id, user_id)
    if row is None:
        return None
    return response_items_for_history([*row.context, *row.input_items], row.response)


def _naive_utc(epoch: float | None) -> datetime:
    """Naive UTC for a Response's created_at (seconds), as every timestamp in the database is."""
    if epoch is None:
        return datetime.now(UTC).replace(tzinfo=None)
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)
