"""Stored Responses API answers: what `store`, `previous_response_id` and /v1/responses/{id} read and write.

The Responses dialect marks a finished response to keep (`keep`); the store saves it when the answer is complete
(the lifecycle's on_answered stage, `install`): before the client has the end of it, so its next turn finds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from ..extensions import db
from ..models import StoredResponse
from .responses_wire import JSON, response_items_for_history

FEATURE = "responses"  # this feature's key in call.features


def install(lifecycle) -> None:
    """Save kept responses when their answer is complete."""
    lifecycle.add("on_answered", _save_kept)


def keep(call, **fields) -> None:
    """Mark a finished response to save (the arguments of `save`) once the answer is complete."""
    call.features = {**(call.features or {}), FEATURE: fields}


def _save_kept(call, answer) -> None:
    """on_answered: save the response the dialect kept, if any."""
    fields = call.features.get(FEATURE) if call.features else None
    if fields is not None:
        save(**fields)


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


def load(response_id: str, caller) -> StoredResponse | None:
    """The caller's stored response, or None (the caller answers 404, as for an unknown id).

    `caller` is the calling key's principal: the response must be its user's and on a model this key may use, so
    a key narrowed away from a model cannot read what its user made there with another key.
    """
    row = db.session.scalar(
        sa.select(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.user_id == caller.user_id)
    )
    return row if row is not None and caller.may_use_model(row.model) else None


def delete(response_id: str, caller) -> bool:
    """Delete a stored response the caller may read (see `load`); False when there was none for them."""
    row = load(response_id, caller)
    if row is not None:
        db.session.delete(row)
    db.session.commit()
    return row is not None


def history(response_id: str, caller) -> list[JSON] | None:
    """The items a turn with previous_response_id continues from: that response's context, input and output."""
    row = load(response_id, caller)
    if row is None:
        return None
    return response_items_for_history([*row.context, *row.input_items], row.response)


def _naive_utc(epoch: float | None) -> datetime:
    """Naive UTC for a Response's created_at (seconds), as every timestamp in the database is."""
    if epoch is None:
        return datetime.now(UTC).replace(tzinfo=None)
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)
