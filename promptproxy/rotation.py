"""Re-encrypt every stored secret under the current PROMPTPROXY_ENCRYPTION_KEY (all or nothing)."""
from __future__ import annotations

import sqlalchemy as sa

from .crypto import Box, SecretError
from .extensions import db
from .models import McpServer, Provider, Webhook

# (model, primary-key attribute used in messages, encrypted columns); new secret columns are added here.
ENCRYPTED = ((Provider, "name", ("api_key_encrypted", "extra_headers_encrypted")),
             (Webhook, "name", ("secret_encrypted",)),
             (McpServer, "name", ("api_key_encrypted", "headers_encrypted")))


class RotationError(RuntimeError):
    """A stored secret that no configured key can decrypt; nothing was changed."""


def rotate_secrets(box: Box) -> dict:
    """Re-encrypt secrets not yet under the current key; returns counts. Caller commits."""
    counts = {"rotated": 0, "current": 0}
    changes = []
    for model, label, columns in ENCRYPTED:
        for row in db.session.scalars(sa.select(model)):
            for column in columns:
                token = getattr(row, column)
                if not token:
                    continue
                if box.is_current(token):
                    counts["current"] += 1
                    continue
                try:
                    changes.append((row, column, box.rotate(token)))
                except SecretError:
                    raise RotationError(
                        f"{model.__tablename__} `{getattr(row, label)}` ({column}): cannot be decrypted with "
                        "PROMPTPROXY_ENCRYPTION_KEY or any of PROMPTPROXY_OLD_ENCRYPTION_KEYS; nothing was changed"
                    ) from None
    for row, column, token in changes:  # only once every secret decrypted: all or nothing
        setattr(row, column, token)
        counts["rotated"] += 1
    return counts
