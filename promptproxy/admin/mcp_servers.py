"""MCP servers: tool servers behind /mcp; the key and headers are write-only (a hint and names, never values)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import render_template
from flask_wtf import FlaskForm
from wtforms import BooleanField, DecimalField, PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from ..extensions import db
from ..manage import ManageError
from ..mcp.servers import create_server, delete_server, update_server
from ..models import McpServer
from . import bp
from .auth import actor, admin_required
from .views import created, deleted, edit_view, form_error, list_page, number, save, updated

FOLDER = "mcp"
COLS = 5


class McpServerForm(FlaskForm):
    """An MCP server; the key and header values are write-only."""

    name = StringField("Name", validators=[DataRequired(), Length(max=48)],
                       description="Tools appear to clients as NAME__TOOL.")
    url = StringField("URL", validators=[DataRequired(), Length(max=512)],
                      description="The server's streamable HTTP endpoint, e.g. https://tools.example.com/mcp")
    api_key = PasswordField("API key", validators=[Optional(), Length(max=4096)],
                            description="Sent upstream as Authorization: Bearer; stored encrypted.")
    clear_key = BooleanField("Remove the stored key")
    headers = TextAreaField("Headers", validators=[Optional(), Length(max=8192)],
                            description="One NAME: value per line, sent upstream; stored encrypted. "
                                        "Leave empty to keep the stored ones.")
    clear_headers = BooleanField("Remove the stored headers")
    description = StringField("Description", validators=[Optional(), Length(max=2000)])
    timeout = DecimalField("Timeout (s)", places=None, validators=[Optional()])
    enabled = BooleanField("Enabled", default=True)


def parse_headers(text: str, clear: bool) -> dict | None:
    """`NAME: value` lines -> dict; None keeps the stored headers, {} removes them."""
    if clear:
        return {}
    if not (text or "").strip():
        return None
    out = {}
    for line in text.splitlines():
        if line.strip():
            name, sep, value = line.partition(":")
            if not sep:
                raise ManageError(f"header line `{line[:60]}` must be NAME: value")
            out[name.strip()] = value.strip()
    return out


def options(form: McpServerForm) -> dict:
    """Optional settings from the form."""
    return dict(description=form.description.data or "", timeout=number(form.timeout.data), enabled=form.enabled.data)


@bp.get("/mcp")
@admin_required
def mcp_servers():
    """MCP servers, searchable by name and URL."""
    query = sa.select(McpServer).order_by(McpServer.name)
    return list_page(FOLDER, query, (McpServer.name, McpServer.url), create_form=McpServerForm(formdata=None))


@bp.post("/mcp")
@admin_required
def mcp_server_create():
    """Create an MCP server; its URL passes the address guard, its secrets are encrypted."""
    form = McpServerForm()
    error = None
    if form.validate_on_submit():
        server, error = save(lambda: create_server(
            actor(), form.name.data.strip(), form.url.data.strip(), api_key=form.api_key.data or None,
            headers=parse_headers(form.headers.data, False), **options(form)))
        if error is None:
            return created(FOLDER, "admin.mcp_servers", f"Created MCP server {server.name}.",
                           create_form=McpServerForm(formdata=None))
    return form_error(FOLDER, error, create_form=form)


@bp.get("/mcp/<int:mcpserver_id>")
@admin_required
def mcp_server_row(mcpserver_id: int):
    """One row (cancel of an edit)."""
    return render_template("admin/mcp/_row.html", obj=db.get_or_404(McpServer, mcpserver_id))


@bp.route("/mcp/<int:mcpserver_id>/edit", methods=["GET", "POST"])
@admin_required
def mcp_server_edit(mcpserver_id: int):
    """Edit in place; empty key and header fields keep the stored ones."""
    server = db.get_or_404(McpServer, mcpserver_id)
    form = McpServerForm(obj=server)
    title = f"Edit MCP server {server.name}"
    if not form.is_submitted():
        form.api_key.data = form.headers.data = ""
        return edit_view(FOLDER, server, form, COLS, title)
    if not form.validate():
        return edit_view(FOLDER, server, form, COLS, title, 422)
    api_key = "" if form.clear_key.data else (form.api_key.data or None)
    _, error = save(lambda: update_server(
        actor(), server, name=form.name.data.strip(), url=form.url.data.strip(), api_key=api_key,
        headers=parse_headers(form.headers.data, form.clear_headers.data), **options(form)))
    if error:
        return edit_view(FOLDER, server, form, COLS, title, 422, error)
    return updated(FOLDER, server, "admin.mcp_servers", f"Saved MCP server {server.name}.")


@bp.post("/mcp/<int:mcpserver_id>/delete")
@admin_required
def mcp_server_delete(mcpserver_id: int):
    """Delete an MCP server."""
    server = db.get_or_404(McpServer, mcpserver_id)
    name = server.name
    _, error = save(lambda: delete_server(actor(), server))
    return deleted("admin.mcp_servers", f"Deleted MCP server {name}.", error)
