"""Response headers for every HTML response: a strict CSP, no framing, no sniffing, no caching."""
from __future__ import annotations

import secrets

from flask import g, request

from . import bp

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def is_api_path() -> bool:
    """The JSON API sets its own headers."""
    return request.path == "/v1" or request.path.startswith("/v1/")


@bp.before_app_request
def request_id() -> None:
    """A request id for dashboard error pages (the API has its own)."""
    if not is_api_path():
        g.request_id = secrets.token_hex(8)


@bp.after_app_request
def security_headers(response):
    """CSP and friends on every non-API response, including error pages outside the blueprint."""
    if is_api_path():
        return response
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.path.startswith("/admin"):
        headers.setdefault("Cache-Control", "no-store")
        response.vary.add("HX-Request")
        response.vary.add("HX-Target")
    return response


@bp.app_context_processor
def dashboard_helpers() -> dict:
    """Template helpers: whether an endpoint exists (extension modules), and the navigation."""
    from flask import current_app

    def has_endpoint(name: str) -> bool:
        return name in current_app.view_functions

    return {"has_endpoint": has_endpoint}


@bp.app_template_global()
def now_utc():
    """Naive UTC now, as stored in the database."""
    from ..models import utcnow

    return utcnow()
