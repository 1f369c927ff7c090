"""Create and change groups and memberships; shared by the CLI, the dashboard and `apply`, each change audited."""
from __future__ import annotations

import re

import sqlalchemy as sa

from .extensions import db
from .manage import ManageError, _public, apply_limits, audit
from .models import BudgetUsage, Group, GroupMember, User

# Quoted in 429 messages ("group 'research' budget"), so no quotes, spaces or control characters.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def get_group(ref: str) -> Group:
    """A group by name or id."""
    group = db.session.scalar(sa.select(Group).where(Group.name == ref))
    if group is None and str(ref).isdigit():
        group = db.session.get(Group, int(ref))
    if group is None:
        raise ManageError(f"no group `{ref}`")
    return group


def _name(name: str, exclude_id: int | None = None) -> str:
    name = (name or "").strip()
    if not NAME.fullmatch(name):
        raise ManageError("group name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    query = sa.select(Group.id).where(Group.name == name)
    if exclude_id is not None:
        query = query.where(Group.id != exclude_id)
    if db.session.scalar(query) is not None:
        raise ManageError(f"group `{name}` already exists")
    return name


def _description(text: str) -> str:
    if len(text) > 256:
        raise ManageError("description must be at most 256 characters")
    return text


def create_group(actor: str, name: str, description: str = "", **limits) -> Group:
    """A new group (grants nothing until given models or prompts)."""
    group = Group(name=_name(name), description=_description(description or ""), all_models=False,
                  all_prompts=False, all_mcp=False)
    db.session.add(group)
    apply_limits(group, **limits)
    db.session.flush()
    audit(actor, "create", "group", group.name, _public(limits))
    return group


def update_group(actor: str, group: Group, name: str | None = None, description: str | None = None,
                 **limits) -> dict:
    """Change a group's name, description, limits and grants; returns what changed."""
    changed = apply_limits(group, **limits)
    if name is not None and name != group.name:
        group.name = changed["name"] = _name(name, group.id)
    if description is not None and description != group.description:
        group.description = changed["description"] = _description(description)
    audit(actor, "update", "group", group.name, changed)
    return changed


def delete_group(actor: str, group: Group) -> None:
    """Delete a group: its members lose what it granted; its budget rows go (ids are never reused)."""
    db.session.execute(sa.delete(BudgetUsage).where(BudgetUsage.subject == f"group:{group.id}"))
    audit(actor, "delete", "group", group.name, {"members": [u.name for u in group.members]})
    db.session.delete(group)


def set_memberships(actor: str, user: User, add=(), remove=(), replace=None) -> list[str]:
    """Add the user to groups and take them out of others (or set the whole list); returns the new names."""
    before = [g.name for g in user.groups]
    wanted = {g.id: g for g in user.groups} if replace is None else {}
    for ref in (replace or ()) if replace is not None else add:
        group = get_group(ref)
        wanted[group.id] = group
    for ref in remove:
        wanted.pop(get_group(ref).id, None)
    groups = sorted(wanted.values(), key=lambda g: g.name)
    after = [g.name for g in groups]
    if after != before:
        user.groups = groups
        audit(actor, "update", "user", user.name, {"groups": after})
    return after


def member_ids(group: Group):
    """A subquery of the group's members' user ids (request-log and usage filters)."""
    return sa.select(GroupMember.user_id).where(GroupMember.group_id == group.id)
