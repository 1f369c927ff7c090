"""The dashboard's MCP page: create, edit, delete with CSRF; secrets write-only; the address guard; admins only."""
from __future__ import annotations

import sqlalchemy as sa

from promptproxy.extensions import db
from promptproxy.models import McpServer

from ..admin.conftest import admin_web, member_web, people  # noqa: F401  (fixtures)

FORM = {"name": "gh", "url": "http://127.0.0.1:9/mcp", "api_key": "sk-canary-mcp-secret-4444",
        "headers": "X-Team: canary-header-value-55", "description": "GitHub", "enabled": "y"}


def one(app, **where):
    with app.app_context():
        obj = db.session.scalar(sa.select(McpServer).filter_by(**where))
        if obj is not None:
            db.session.expunge(obj)
        return obj


def test_create_edit_delete_without_ever_showing_secrets(admin_web, app):  # noqa: F811
    resp = admin_web.post("/admin/mcp", FORM, hx="create-form")
    assert resp.status_code == 200 and resp.headers["HX-Trigger"] == "rows-changed"
    server = one(app, name="gh")
    assert server.api_key_hint == "sk-…4444" and server.header_names == ["X-Team"]
    pages = [admin_web.get("/admin/mcp"), admin_web.get(f"/admin/mcp/{server.id}/edit"),
             admin_web.hx_get(f"/admin/mcp/{server.id}/edit", f"row-{server.id}"), admin_web.get("/admin/audit")]
    for page in pages:
        body = page.get_data(as_text=True)
        assert page.status_code == 200
        assert "sk-canary-mcp-secret-4444" not in body and "canary-header-value-55" not in body
    assert "X-Team" in pages[0].get_data(as_text=True)
    before = server.api_key_encrypted, server.headers_encrypted
    resp = admin_web.post(f"/admin/mcp/{server.id}/edit", {**FORM, "api_key": "", "headers": "", "timeout": "9"},
                          hx=f"row-{server.id}")
    assert resp.status_code == 200
    after = one(app, id=server.id)
    assert (after.api_key_encrypted, after.headers_encrypted) == before and after.timeout == 9
    admin_web.post(f"/admin/mcp/{server.id}/edit", {**FORM, "api_key": "", "headers": "", "clear_key": "y",
                                                   "clear_headers": "y"})
    after = one(app, id=server.id)
    assert after.api_key_encrypted is None and after.headers_encrypted is None
    resp = admin_web.post(f"/admin/mcp/{server.id}/delete", hx=f"row-{server.id}")
    assert resp.status_code == 200 and one(app, name="gh") is None


def test_the_address_guard_and_bad_input_are_inline_errors_on_create_and_edit(admin_web, app):  # noqa: F811
    admin_web.post("/admin/mcp", FORM)
    server = one(app, name="gh")
    app.config["ALLOW_PRIVATE_UPSTREAMS"] = False
    resp = admin_web.post("/admin/mcp", {**FORM, "name": "meta", "url": "http://169.254.169.254/mcp"},
                          hx="create-form")
    assert resp.status_code == 422 and "base URL" in resp.get_data(as_text=True)
    assert one(app, name="meta") is None
    resp = admin_web.post(f"/admin/mcp/{server.id}/edit", {**FORM, "url": "http://169.254.169.254/mcp"},
                          hx=f"row-{server.id}")
    assert resp.status_code == 422 and one(app, id=server.id).url == "http://127.0.0.1:9/mcp"
    resp = admin_web.post("/admin/mcp", {**FORM, "name": "a__b", "url": "https://example.com/mcp"},
                          hx="create-form")
    assert resp.status_code == 422 and "MCP server name must be" in resp.get_data(as_text=True)
    resp = admin_web.post(f"/admin/mcp/{server.id}/edit", {**FORM, "url": "https://example.com/mcp",
                                                          "headers": "no colon here"}, hx=f"row-{server.id}")
    assert resp.status_code == 422 and "must be NAME: value" in resp.get_data(as_text=True)


def test_csrf_is_required_and_members_are_refused(admin_web, member_web, app):  # noqa: F811
    resp = admin_web.client.post("/admin/mcp", data=FORM)
    assert resp.status_code == 400 and one(app, name="gh") is None
    assert member_web.get("/admin/mcp").status_code == 403
    resp = member_web.post("/admin/mcp", FORM)
    assert resp.status_code == 403 and one(app, name="gh") is None


def test_the_request_log_filter_finds_tool_calls(admin_web, app, live, mcp_seed):  # noqa: F811
    from ..conftest import rows_when
    from .conftest import with_session

    with_session(live, mcp_seed.ann, lambda s: s.call_tool("tools__echo", {"text": "hi"}))
    assert [r.endpoint for r in rows_when(app, 2)] == ["mcp/tools/call", "mcp/tools/list"]  # the SDK lists after
    found = admin_web.get("/admin/requests?model=tools__echo").get_data(as_text=True)
    assert '<td data-label="Model">tools__echo</td>' in found and "1 shown" in found
    other = admin_web.get("/admin/requests?model=tools__add").get_data(as_text=True)
    assert "No requests match." in other
