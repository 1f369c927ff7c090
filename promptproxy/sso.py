"""Single sign-on: whether it is on, and who a sign-in is (verified email to user, domains, groups, admin role)."""
from __future__ import annotations

import logging
import re
import unicodedata
from urllib.parse import urlsplit

import sqlalchemy as sa

from . import groups, manage
from .extensions import db
from .models import Group, User

log = logging.getLogger("promptproxy.sso")
ACTOR = "sso"


def enabled(cfg) -> bool:
    """True when issuer, client id and client secret are all configured."""
    return bool(cfg.get("OIDC_ISSUER") and cfg.get("OIDC_CLIENT_ID") and cfg.get("OIDC_CLIENT_SECRET"))


def button_name(cfg) -> str:
    """What the login page's "Sign in with …" names."""
    return cfg.get("OIDC_NAME") or urlsplit(cfg.get("OIDC_ISSUER", "")).hostname or "single sign-on"


class Refused(Exception):
    """A sign-in the gateway will not accept, with a message for the person."""


def fold(text: str) -> str:
    """An email or domain as compared: NFKC, then casefold (NFKC once more, so folding twice changes nothing).

    `lower()` alone leaves full-width letters, ligatures and `ß` apart from the ASCII spelling an identity provider
    may assert for the same address; every comparison here (user match, domain lists) goes through this one function.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text.strip()).casefold())


def domains(value: str) -> frozenset[str]:
    """A comma-separated list of email domains (PROMPTPROXY_OIDC_ALLOWED_DOMAINS, ..._LINK_DOMAINS), folded."""
    return frozenset(fold(d).lstrip("@") for d in (value or "").split(",") if d.strip())


def linkable(domain: str, cfg) -> bool:
    """May a verified email of this (folded) domain sign in as the existing user with that email?

    Only the domains the administrator named: OIDC_ALLOWED_DOMAINS (whose users are created, so they must come
    back) and OIDC_LINK_DOMAINS (`*`: any). Otherwise any identity provider account asserting, say, the password
    admin's address would become that admin.
    """
    named = domains(cfg.get("OIDC_ALLOWED_DOMAINS", "")) | domains(cfg.get("OIDC_LINK_DOMAINS", ""))
    return domain in named or "*" in named


def verified_email(claims: dict) -> str:
    """The claims' email (stripped, as asserted), only when the provider says it is verified."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Refused("Your identity provider did not share an email address, so you cannot be matched to a user.")
    if claims.get("email_verified") is not True:
        raise Refused(f"Your identity provider has not verified {email}; only verified emails can sign in.")
    return email.strip()


def claim_groups(claims: dict, name: str) -> list[str] | None:
    """The group names in the configured claim; None when no claim is configured or the token lacks it."""
    if not name or name not in claims:
        return None
    value = claims[name]
    if isinstance(value, str):
        value = [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _new_name(email: str) -> str:
    """A free user name from the email's local part (alice, alice-2, ...)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", email.split("@")[0]).strip("-")[:56] or "user"
    name, n = base, 1
    while db.session.scalar(sa.select(User.id).where(User.name == name)) is not None:
        n += 1
        name = f"{base}-{n}"
    return name


def _match(email: str) -> User | None:
    """The one user whose email folds to the same as `email`; more than one is refused rather than guessed."""
    key = fold(email)
    rows = db.session.execute(sa.select(User.id, User.email).where(User.email.is_not(None))).all()
    found = [user_id for user_id, stored in rows if fold(stored) == key]
    if len(found) > 1:
        log.warning("sso: %d users share the folded email of a sign-in; refused", len(found))
        raise Refused(f"More than one user here has an email matching {email}. Ask an administrator.")
    return db.session.get(User, found[0]) if found else None


def sign_in(claims: dict, cfg) -> User:
    """The user for verified claims: matched by email within the linkable domains, or created if the domain is allowed.

    The domain is checked before any user is looked up, so the refusal is the same whether the address has an
    account or not (the page tells nobody who exists here).
    """
    email = verified_email(claims)
    domain = fold(email).rsplit("@", 1)[1]
    if not linkable(domain, cfg):
        raise Refused(f"{email} has no account here that can sign in with single sign-on: its domain is not one "
                      "this gateway accepts from the identity provider. Ask an administrator.")
    user = _match(email)
    if user is None:
        if domain not in domains(cfg.get("OIDC_ALLOWED_DOMAINS", "")):
            raise Refused(f"{email} has no account here, and its domain is not one whose users are created on "
                          "first sign-in. Ask an administrator to add you.")
        email = unicodedata.normalize("NFKC", email)  # stored as plain letters (manage lower-cases it)
        user = manage.create_user(ACTOR, _new_name(email.lower()), email=email, role="member")
    if not user.active:
        raise Refused("Your account is disabled. Ask an administrator.")
    names = claim_groups(claims, cfg.get("OIDC_GROUPS_CLAIM", ""))
    if names is not None:
        _follow(user, names, cfg.get("OIDC_ADMIN_GROUP", ""))
    db.session.commit()
    return user


def _follow(user: User, names: list[str], admin_group: str) -> None:
    """Memberships of existing groups follow the claim; the admin group (if configured) sets the role."""
    known = db.session.scalars(sa.select(Group.name).where(Group.name.in_(names))).all()
    groups.set_memberships(ACTOR, user, replace=sorted(known))
    if not admin_group:
        return
    role = "admin" if admin_group in names else "member"
    if role == user.role:
        return
    if role == "member" and _last_admin(user):
        log.warning("sso: %s is not in %s but is the last active admin; kept as admin", user.name, admin_group)
        return
    manage.update_user(ACTOR, user, role=role)


def _last_admin(user: User) -> bool:
    others = sa.select(User.id).where(User.role == "admin", User.active, User.id != user.id).limit(1)
    return db.session.scalar(others) is None
