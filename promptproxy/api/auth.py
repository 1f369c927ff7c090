"""Bearer or x-api-key -> the caller's Principal."""
from __future__ import annotations

from flask import request

from ..core.catalog import Principal, now
from ..core.errors import ErrorCode, GatewayError

MAX_KEY_LENGTH = 256


def raw_key() -> str | None:
    """The key from `Authorization: Bearer` (any case) or `x-api-key`."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""
    return request.headers.get("x-api-key")


def authenticate(catalog) -> Principal:
    """Look the key up once, by hash; refuse missing, unknown, revoked, expired keys and disabled users."""
    key = raw_key()
    if key is None:
        raise GatewayError(401, "You didn't provide an API key. Provide it in the Authorization header "
                            "(Authorization: Bearer YOUR_KEY) or the x-api-key header.", code=ErrorCode.INVALID_API_KEY)
    principal = None
    if key and len(key) <= MAX_KEY_LENGTH and key.isprintable():
        principal = catalog.principal(key)
    if principal is None or principal.revoked or (principal.expires_at and principal.expires_at <= now()):
        raise GatewayError(401, "Incorrect API key provided.", code=ErrorCode.INVALID_API_KEY)
    if not principal.user_active:
        raise GatewayError(403, "The user of this API key is disabled.", code=ErrorCode.USER_DISABLED,
                           type="permission_error")
    return principal
