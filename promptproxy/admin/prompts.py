"""Prompts: a simple list, create and edit (a text change saves a new version); members see what they may use.

The rich editor (versions, diff, preview, labels, playground) lives in prompt_library.py under
/admin/prompts/<id>/...; this module only uses /admin/prompts, .../row, .../edit and .../delete.
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import render_template, request
from flask_login import current_user

from .. import manage
from ..extensions import db
from ..models import Prompt, PromptVersion
from . import bp
from .auth import actor, admin_required, login_required
from .forms import PromptForm
from .views import created, deleted, edit_view, form_error, list_page, member_scope, save, updated

FOLDER = "prompts"
COLS = 5


def latest_text(prompt: Prompt) -> str:
    """The newest version's text."""
    return db.session.scalar(sa.select(PromptVersion.text).where(
        PromptVersion.prompt_id == prompt.id, PromptVersion.version == prompt.latest_version)) or ""


@bp.app_template_global("live_text")
def live_text(prompt: Prompt) -> str:
    """The live version's text (the pinned one, else the newest)."""
    return db.session.scalar(sa.select(PromptVersion.text).where(
        PromptVersion.prompt_id == prompt.id, PromptVersion.version == (prompt.live_version or prompt.latest_version)
    )) or ""


@bp.get("/prompts")
@login_required
def prompts():
    """Prompts, searchable by slug and description."""
    query = sa.select(Prompt).order_by(Prompt.slug)
    scope = member_scope("prompts")
    if scope is not None:
        query = query.where(Prompt.slug.in_(sorted(scope)))
    form = PromptForm(formdata=None) if current_user.is_admin else None
    return list_page(FOLDER, query, (Prompt.slug, Prompt.description), create_form=form)


@bp.post("/prompts")
@admin_required
def prompt_create():
    """A new prompt with version 1."""
    form = PromptForm()
    error = None
    if form.validate_on_submit():
        prompt, error = save(lambda: manage.create_prompt(
            actor(), form.slug.data.strip(), form.text.data, mode=form.mode.data,
            description=form.description.data or "", note=form.note.data or "", mcp=form.mcp.data,
            **cache_settings(form)))
        if error is None:
            return created(FOLDER, "admin.prompts", f"Created prompt {prompt.slug}.",
                           create_form=PromptForm(formdata=None))
    return form_error(FOLDER, error, create_form=form)


@bp.get("/prompts/<int:prompt_id>/row")
@admin_required
def prompt_row(prompt_id: int):
    """One row (cancel of an edit)."""
    return render_template("admin/prompts/_row.html", obj=db.get_or_404(Prompt, prompt_id))


@bp.route("/prompts/<int:prompt_id>/edit", methods=["GET", "POST"])
@admin_required
def prompt_edit(prompt_id: int):
    """Edit mode and description; a changed text saves a new version through manage.add_version."""
    prompt = db.get_or_404(Prompt, prompt_id)
    form = PromptForm(obj=prompt)
    del form.slug
    title = f"Edit prompt {prompt.slug}"
    if not form.is_submitted():
        form.text.data = latest_text(prompt)
        form.note.data = ""
        return edit_view(FOLDER, prompt, form, COLS, title)
    if not form.validate():
        return edit_view(FOLDER, prompt, form, COLS, title, 422)

    text = form.text.data.replace("\r\n", "\n")  # browsers send textarea lines with CRLF

    def change():
        manage.update_prompt(actor(), prompt, mode=form.mode.data, description=form.description.data or "",
                             mcp=form.mcp.data, **cache_settings(form))
        if text != latest_text(prompt):
            manage.add_version(actor(), prompt, text, note=form.note.data or "")
        if request.form.get("make_live") and prompt.live_version is not None:
            manage.set_live(actor(), prompt, None)

    latest_before = prompt.latest_version
    _, error = save(change)
    if error:
        return edit_view(FOLDER, prompt, form, COLS, title, 422, error)
    return updated(FOLDER, prompt, "admin.prompts", saved_message(prompt, latest_before))


def cache_settings(form: PromptForm) -> dict:
    """The form's response cache fields for manage: an empty TTL is off (the model's cache applies)."""
    return {"cache_ttl": form.cache_ttl.data or 0, "cache_scope": form.cache_scope.data}


def saved_message(prompt: Prompt, latest_before: int) -> str:
    """What the save did, saying plainly when the new version is not the live one."""
    if prompt.latest_version == latest_before:
        return f"Saved prompt {prompt.slug}; the text is unchanged (no new version)."
    if prompt.live_version is not None:
        return (f"Saved version {prompt.latest_version} of {prompt.slug}, but it is not live: version "
                f"{prompt.live_version} is pinned. Use “Save and make live” or the prompt's page to switch.")
    return f"Saved version {prompt.latest_version} of {prompt.slug}; it is live."


@bp.post("/prompts/<int:prompt_id>/delete")
@admin_required
def prompt_delete(prompt_id: int):
    """Delete a prompt and its versions (log rows keep slug and version)."""
    prompt = db.get_or_404(Prompt, prompt_id)
    slug = prompt.slug
    _, error = save(lambda: manage.delete_prompt(actor(), prompt))
    return deleted("admin.prompts", f"Deleted prompt {slug}.", error)
