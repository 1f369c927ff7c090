"""Who an OpenID Connect sign-in is: verified email to user, allowed domains, groups and admin role from a claim."""
from __future__ import annotations

import logging
import re

import sqlalchemy as sa

from . import groups, manage
from .extensions import db
from .models import Group, User

log = logging.getLogger("promptproxy.sso")
ACTOR = "sso"


class Refused(Exception):
    """A sign-in the gateway will not accept, with a message for the person."""


def domains(value: str) -> frozenset[str]:
    """PROMPTPROXY_OIDC_ALLOWED_DOMAINS as a set of lower-case domains."""
    return frozenset(d.strip().lower().lstrip("@") for d in (value or "").split(",") if d.strip())


def verified_email(claims: dict) -> str:
    """The claims' email, only when the provider says it is verified."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Refused("Your identity provider did not share an email address, so you cannot be matched to a user.")
    if claims.get("email_verified") is not True:
        raise Refused(f"Your identity provider has not verified {email}; only verified emails can sign in.")
    return email.strip().lower()


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


def sign_in(claims: dict, cfg) -> User:
    """The user for verified claims: matched by email, or created as a member if the domain is allowed."""
    email = verified_email(claims)
    user = db.session.scalar(sa.select(User).where(User.email == email))
    if user is None:
        if email.rsplit("@", 1)[1] not in domains(cfg.get("OIDC_ALLOWED_DOMAINS", "")):
            raise Refused(f"{email} has no account here, and its domain is not one whose users are created on "
                          "first sign-in. Ask an administrator to add you.")
        user = manage.create_user(ACTOR, _new_name(email), email=email, role="member")
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
