"""Dashboard sign-in with OpenID Connect (Authlib): code flow with PKCE, state and nonce, ID token checked on JWKS."""
from __future__ import annotations

import logging

import requests
from flask import abort, current_app, redirect, render_template, request, session, url_for

from .. import sso
from ..extensions import db
from . import bp
from .auth import safe_next, start_session

log = logging.getLogger("promptproxy.sso")
KEY = "promptproxy_oidc"
# What the code flow needs from the discovery document; without one of them the provider is unusable, not us broken.
REQUIRED = ("authorization_endpoint", "token_endpoint", "jwks_uri")


def client():
    """This app's Authlib client, registered on first use from the configuration; 404 when SSO is off."""
    app = current_app._get_current_object()
    if not sso.enabled(app.config):
        abort(404)
    if KEY not in app.extensions:
        from authlib.integrations.flask_client import OAuth  # only with SSO on: most processes never need it

        oauth = OAuth(app)
        issuer = app.config["OIDC_ISSUER"].rstrip("/")
        # PKCE (S256) on top of the client secret; Authlib adds state and, for the openid scope, a nonce.
        app.extensions[KEY] = oauth.register(
            "oidc", client_id=app.config["OIDC_CLIENT_ID"], client_secret=app.config["OIDC_CLIENT_SECRET"],
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": app.config["OIDC_SCOPES"], "code_challenge_method": "S256", "timeout": 10})
    return app.extensions[KEY]


def errors() -> tuple:
    """Authlib's error classes and joserfc's (its JWT layer: signature, iss, aud, exp, nonce), imported lazily."""
    from authlib.common.errors import AuthlibBaseError
    from joserfc.errors import JoseError

    return AuthlibBaseError, JoseError


def refused(message: str, status: int):
    """The clear refusal page (the password form stays one click away)."""
    return render_template("admin/sso_refused.html", message=message), status


def unavailable(hint: str):
    """The "provider unavailable" page (502)."""
    return refused(f"The identity provider cannot be reached right now. {hint}", 502)


def usable(oidc) -> bool:
    """The discovery document loads and names every endpoint the code flow needs.

    Authlib keeps the first document it loaded for the life of the process, so an incomplete one is dropped here:
    once the provider serves a whole document again, the next sign-in uses it without a restart.
    """
    try:
        metadata = oidc.load_server_metadata()
    except (requests.RequestException, ValueError, TypeError) as exc:  # TypeError: a document that is not an object
        log.warning("sso: identity provider unreachable: %s", type(exc).__name__)
        oidc.server_metadata.clear()
        return False
    missing = [name for name in REQUIRED if not (isinstance(metadata.get(name), str) and metadata[name])]
    if missing:
        log.warning("sso: the discovery document lacks %s", ", ".join(missing))
        oidc.server_metadata.clear()
        return False
    return True


@bp.get("/login/oidc")
def oidc_start():
    """Send the browser to the identity provider."""
    oidc = client()
    session["oidc_next"] = safe_next(request.args.get("next"))
    if not usable(oidc):
        return unavailable("Administrators can still log in with their password.")
    try:
        return oidc.authorize_redirect(url_for("admin.oidc_callback", _external=True))
    except (requests.RequestException, *errors(), ValueError) as exc:
        log.warning("sso: identity provider unreachable: %s", type(exc).__name__)
        return unavailable("Administrators can still log in with their password.")


@bp.get("/login/oidc/callback")
def oidc_callback():
    """Check state, exchange the code (PKCE), verify the ID token and nonce, then sign the user in."""
    oidc = client()
    if not usable(oidc):  # e.g. the document changed, or this process never loaded it, since the browser left
        return unavailable("Try again shortly.")
    try:
        token = oidc.authorize_access_token()
    except errors() as exc:
        log.warning("sso: sign-in refused: %s", getattr(exc, "error", type(exc).__name__))
        return refused("This sign-in could not be verified (it may have expired, been replayed or been "
                       "tampered with). Start again from the login page.", 400)
    except requests.RequestException as exc:
        log.warning("sso: token exchange failed: %s", type(exc).__name__)
        return unavailable("Try again shortly.")
    claims = token.get("userinfo")
    if not claims:
        return refused("The identity provider returned no ID token.", 400)
    claims = dict(claims)
    if "email" not in claims or _wants_groups(claims):
        claims = merged(claims, _userinfo(oidc, token, claims["sub"]))
    next_url = session.get("oidc_next")
    try:
        user = sso.sign_in(claims, current_app.config)
    except sso.Refused as exc:
        db.session.rollback()
        return refused(str(exc), 403)
    start_session(user)
    session["auth"] = "oidc"
    return redirect(safe_next(next_url), 303)


def _wants_groups(claims: dict) -> bool:
    name = current_app.config.get("OIDC_GROUPS_CLAIM")
    return bool(name) and name not in claims


def merged(id_claims: dict, info: dict) -> dict:
    """The ID token's claims over the userinfo ones, `email_verified` always from the source of `email`.

    A plain merge would pair the token's email with the userinfo's `email_verified: true` about another address.
    """
    out = {**info, **id_claims}
    if "email" in id_claims and not _same_email(info.get("email"), id_claims["email"]):
        out.pop("email_verified", None)
        if "email_verified" in id_claims:
            out["email_verified"] = id_claims["email_verified"]
    return out


def _same_email(one, other) -> bool:
    return isinstance(one, str) and isinstance(other, str) and sso.fold(one) == sso.fold(other)


def _userinfo(oidc, token: dict, sub: str) -> dict:
    """Claims from the userinfo endpoint, only if they are about the ID token's subject (none without the endpoint)."""
    if not oidc.load_server_metadata().get("userinfo_endpoint"):
        return {}
    try:
        info = dict(oidc.userinfo(token=token))
    except (requests.RequestException, *errors(), ValueError):
        return {}
    return info if info.get("sub") == sub else {}
