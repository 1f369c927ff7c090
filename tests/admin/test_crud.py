"""Create, edit in place, delete and search for users, keys, providers, models and prompts."""
from __future__ import annotations

import sqlalchemy as sa

from promptproxy import manage
from promptproxy.crypto import hash_key
from promptproxy.extensions import db
from promptproxy.models import ApiKey, AuditEvent, Model, Prompt, PromptVersion, Provider, User


def one(app, model, **where):
    with app.app_context():
        obj = db.session.scalar(sa.select(model).filter_by(**where))
        if obj is not None:
            db.session.expunge(obj)
        return obj


# -- users -------------------------------------------------------------------------------------------
def test_create_user_with_htmx_returns_fresh_form_and_refreshes_rows(admin_web, app):
    resp = admin_web.post("/admin/users", {"name": "carol", "email": "carol@example.com", "role": "member",
                                           "rpm": "60", "all_models": "y"}, hx="create-form")
    assert resp.status_code == 200
    assert resp.headers["HX-Trigger"] == "rows-changed"
    body = resp.get_data(as_text=True)
    assert 'id="create-form"' in body and "Created user carol." in body and "<html" not in body
    user = one(app, User, name="carol")
    assert (user.email, user.rpm, user.all_models) == ("carol@example.com", 60, True)
    assert one(app, AuditEvent, action="create", target="carol").actor == "web:root"


def test_create_user_without_js_redirects_303(admin_web, app):
    resp = admin_web.post("/admin/users", {"name": "dave", "role": "member"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/users"
    assert "Created user dave." in admin_web.get("/admin/users").get_data(as_text=True)


def test_create_user_validation_errors_are_inline(admin_web):
    resp = admin_web.post("/admin/users", {"name": "root", "role": "member"}, hx="create-form")
    assert resp.status_code == 422
    assert "user `root` already exists" in resp.get_data(as_text=True)
    resp = admin_web.post("/admin/users", {"name": "eve", "email": "not-an-email", "role": "member"},
                          hx="create-form")
    assert resp.status_code == 422 and "is not a valid email address" in resp.get_data(as_text=True)
    resp = admin_web.post("/admin/users", {"name": "", "role": "member"})
    assert resp.status_code == 422 and "This field is required." in resp.get_data(as_text=True)
    resp = admin_web.post("/admin/users", {"name": "frank", "role": "member", "password": "short"})
    assert resp.status_code == 422 and "between 8 and 1024 characters" in resp.get_data(as_text=True)


def test_edit_user_in_place(admin_web, app, people):
    form = admin_web.hx_get(f"/admin/users/{people['mia']}/edit", f"row-{people['mia']}")
    assert form.status_code == 200
    assert form.get_data(as_text=True).startswith(f'<tr id="row-{people["mia"]}" class="editing">')
    resp = admin_web.post(f"/admin/users/{people['mia']}/edit", {
        "email": "mia2@example.com", "role": "member", "active": "y", "rpm": "5", "budget": "2.5", "period": "day"},
        hx=f"row-{people['mia']}")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True).lstrip().startswith(f'<tr id="row-{people["mia"]}"')
    user = one(app, User, name="mia")
    assert (user.email, user.rpm, user.budget_usd, user.budget_period) == ("mia2@example.com", 5, 2.5, "day")
    cancel = admin_web.hx_get(f"/admin/users/{people['mia']}", f"row-{people['mia']}")
    assert "mia2@example.com" in cancel.get_data(as_text=True)


def test_edit_user_errors_stay_in_the_row(admin_web, people):
    resp = admin_web.post(f"/admin/users/{people['mia']}/edit", {"email": "root@example.com", "role": "member"},
                          hx=f"row-{people['mia']}")
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "email `root@example.com` already exists" in body and 'class="editing"' in body


def test_edit_user_page_without_js(admin_web, people):
    page = admin_web.get(f"/admin/users/{people['mia']}/edit")
    assert page.status_code == 200 and "<html" in page.get_data(as_text=True)
    resp = admin_web.post(f"/admin/users/{people['mia']}/edit", {"email": "", "role": "member", "active": "y"})
    assert resp.status_code == 303


def test_admin_cannot_lock_themselves_out(admin_web, app, people):
    resp = admin_web.post(f"/admin/users/{people['root']}/edit", {"role": "member", "active": "y"},
                          hx=f"row-{people['root']}")
    assert resp.status_code == 422 and "cannot remove your own" in resp.get_data(as_text=True)
    resp = admin_web.post(f"/admin/users/{people['root']}/delete", hx=f"row-{people['root']}")
    assert resp.status_code == 422 and "cannot delete yourself" in resp.get_data(as_text=True)
    assert one(app, User, name="root").role == "admin"


def test_delete_user_htmx_removes_row_and_plain_post_redirects(admin_web, app, people):
    resp = admin_web.post(f"/admin/users/{people['mia']}/delete", hx=f"row-{people['mia']}")
    assert resp.status_code == 200 and resp.get_data(as_text=True) == ""
    assert one(app, User, name="mia") is None
    resp = admin_web.post(f"/admin/users/{people['otto']}/delete")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/users"


def test_missing_objects_are_404_pages(admin_web):
    for url in ("/admin/users/999/edit", "/admin/providers/999", "/admin/models/999/edit", "/admin/prompts/999/row"):
        resp = admin_web.get(url)
        assert resp.status_code == 404 and "Not found" in resp.get_data(as_text=True)
    assert admin_web.post("/admin/keys/999/revoke").status_code == 404


def test_search_returns_only_rows_partial_and_varies(admin_web, people):
    resp = admin_web.hx_get("/admin/users?q=mi", "rows")
    body = resp.get_data(as_text=True)
    assert "<html" not in body and "<table" in body
    assert "mia@example.com" in body and "otto@example.com" not in body
    assert "HX-Request" in resp.vary
    full = admin_web.get("/admin/users?q=mi").get_data(as_text=True)
    assert "<html" in full and "otto@example.com" not in full


def test_search_treats_like_wildcards_literally(admin_web, people):
    body = admin_web.hx_get("/admin/users?q=%25", "rows").get_data(as_text=True)
    assert "No users match" in body


def test_pagination(admin_web, app):
    with app.app_context():
        for i in range(30):
            manage.create_user("t", f"bulk{i:02d}")
        db.session.commit()
    first = admin_web.hx_get("/admin/users?q=bulk", "rows").get_data(as_text=True)
    assert "Page 1 of 2" in first and "bulk00" in first and "bulk29" not in first
    second = admin_web.hx_get("/admin/users?q=bulk&page=2", "rows").get_data(as_text=True)
    assert "bulk29" in second and "bulk00" not in second and "page=1" in second


# -- keys --------------------------------------------------------------------------------------------
def test_key_secret_is_shown_once(admin_web, app, people):
    resp = admin_web.post("/admin/keys", {"name": "ci", "user": str(people["mia"])}, hx="create-form")
    assert resp.status_code == 200 and resp.headers["HX-Trigger"] == "rows-changed"
    body = resp.get_data(as_text=True)
    secret = body.split('data-secret')[0].rsplit('value="', 1)[1].split('"')[0]
    assert secret.startswith("pp-") and len(secret) > 40
    assert "data-copy" in body and "shown only once" in body
    key = one(app, ApiKey, name="ci")
    assert key.key_hash == hash_key(secret) and key.user_id == people["mia"]
    listing = admin_web.get("/admin/keys").get_data(as_text=True)
    assert secret not in listing and key.display in listing
    assert resp.headers["Cache-Control"] == "no-store"


def test_key_create_without_js_renders_secret_page(admin_web):
    resp = admin_web.post("/admin/keys", {"name": "nojs"})
    assert resp.status_code == 201 and "Copy this key now" in resp.get_data(as_text=True)


def test_key_expiry_in_the_past_is_an_inline_error(admin_web):
    resp = admin_web.post("/admin/keys", {"name": "old", "expires": "2001-01-01"}, hx="create-form")
    assert resp.status_code == 422 and "expiry must be in the future" in resp.get_data(as_text=True)


def test_revoke_key_in_place(admin_web, app, people):
    with app.app_context():
        key, _ = manage.create_key("t", db.session.get(User, people["mia"]), "to-revoke")
        db.session.commit()
        key_id = key.id
    resp = admin_web.post(f"/admin/keys/{key_id}/revoke", hx=f"row-{key_id}")
    assert resp.status_code == 200 and "revoked" in resp.get_data(as_text=True)
    assert one(app, ApiKey, id=key_id).revoked_at is not None


# -- providers ---------------------------------------------------------------------------------------
PROVIDER = {"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1",
            "api_key": "sk-canary-provider-secret-7777", "enabled": "y"}


def test_provider_secret_is_never_shown_again(admin_web, app):
    resp = admin_web.post("/admin/providers", PROVIDER, hx="create-form")
    assert resp.status_code == 200
    provider = one(app, Provider, name="openai")
    assert provider.api_key_hint == "sk-…7777"
    for body in (admin_web.get("/admin/providers").get_data(as_text=True),
                 admin_web.hx_get(f"/admin/providers/{provider.id}/edit", f"row-{provider.id}").get_data(as_text=True),
                 admin_web.get(f"/admin/providers/{provider.id}/edit").get_data(as_text=True),
                 admin_web.get("/admin/audit").get_data(as_text=True)):
        assert "sk-canary-provider-secret-7777" not in body
        assert "sk-…7777" in body or "openai" in body


def test_provider_blank_key_keeps_and_new_key_replaces(admin_web, app):
    admin_web.post("/admin/providers", PROVIDER)
    pid = one(app, Provider, name="openai").id
    before = one(app, Provider, id=pid).api_key_encrypted
    resp = admin_web.post(f"/admin/providers/{pid}/edit", {**PROVIDER, "api_key": ""}, hx=f"row-{pid}")
    assert resp.status_code == 200
    assert one(app, Provider, id=pid).api_key_encrypted == before
    admin_web.post(f"/admin/providers/{pid}/edit", {**PROVIDER, "api_key": "sk-another-secret-8888"})
    assert one(app, Provider, id=pid).api_key_hint == "sk-…8888"
    admin_web.post(f"/admin/providers/{pid}/edit", {**PROVIDER, "api_key": "", "clear_key": "y"})
    assert one(app, Provider, id=pid).api_key_encrypted is None


def test_provider_dialect_flags_from_the_form(admin_web, app):
    resp = admin_web.post("/admin/providers", {**PROVIDER, "responses_api": "y", "reasoning_effort": "y"},
                          hx="create-form")
    assert resp.status_code == 200
    provider = one(app, Provider, name="openai")
    assert (provider.responses_api, provider.reasoning_effort) == (True, True)
    page = admin_web.get("/admin/providers").get_data(as_text=True)
    assert "Responses API</span>" in page and "reasoning_effort</span>" in page
    edit = admin_web.get(f"/admin/providers/{provider.id}/edit").get_data(as_text=True)
    assert 'name="responses_api"' in edit and 'name="reasoning_effort"' in edit
    resp = admin_web.post(f"/admin/providers/{provider.id}/edit", {**PROVIDER, "api_key": "", "reasoning_effort": "y"},
                          hx=f"row-{provider.id}")
    assert resp.status_code == 200 and "Responses API</span>" not in resp.get_data(as_text=True)
    provider = one(app, Provider, id=provider.id)
    assert (provider.responses_api, provider.reasoning_effort) == (False, True)


def test_provider_responses_api_on_anthropic_is_an_inline_error(admin_web, app):
    claude = {**PROVIDER, "name": "claude", "kind": "anthropic", "base_url": "https://api.anthropic.com"}
    resp = admin_web.post("/admin/providers", {**claude, "responses_api": "y"}, hx="create-form")
    assert resp.status_code == 422
    assert "responses_api applies to OpenAI-compatible providers only" in resp.get_data(as_text=True)
    assert one(app, Provider, name="claude") is None
    admin_web.post("/admin/providers", claude)
    pid = one(app, Provider, name="claude").id
    resp = admin_web.post(f"/admin/providers/{pid}/edit", {**claude, "api_key": "", "responses_api": "y"},
                          hx=f"row-{pid}")
    assert resp.status_code == 422
    assert "responses_api applies to OpenAI-compatible providers only" in resp.get_data(as_text=True)
    assert one(app, Provider, id=pid).responses_api is False


def test_provider_unsafe_url_is_an_inline_error(admin_web, app):
    app.config["ALLOW_PRIVATE_UPSTREAMS"] = False
    resp = admin_web.post("/admin/providers", {**PROVIDER, "base_url": "http://169.254.169.254/v1"},
                          hx="create-form")
    assert resp.status_code == 422
    assert one(app, Provider, name="openai") is None
    assert "alert" in resp.get_data(as_text=True)


def test_provider_in_use_cannot_be_deleted(admin_web, app):
    admin_web.post("/admin/providers", PROVIDER)
    with app.app_context():
        manage.create_model("t", "m1", manage.get_provider("openai"), "gpt")
        db.session.commit()
    pid = one(app, Provider, name="openai").id
    resp = admin_web.post(f"/admin/providers/{pid}/delete", hx=f"row-{pid}")
    assert resp.status_code == 422 and "is used by model(s): m1" in resp.get_data(as_text=True)
    resp = admin_web.post(f"/admin/providers/{pid}/delete")
    assert resp.status_code == 303
    assert "is used by model(s): m1" in admin_web.get("/admin/providers").get_data(as_text=True)


# -- models ------------------------------------------------------------------------------------------
def test_model_create_edit_delete(admin_web, app):
    admin_web.post("/admin/providers", PROVIDER)
    pid = one(app, Provider, name="openai").id
    resp = admin_web.post("/admin/models", {"slug": "gpt-4o-mini", "provider": str(pid), "upstream_model": "gpt-4o",
                                            "kind": "chat", "input_price": "0.15", "output_price": "0.6",
                                            "enabled": "y"}, hx="create-form")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    model = one(app, Model, slug="gpt-4o-mini")
    assert (model.upstream_model, model.input_price, model.output_price) == ("gpt-4o", 0.15, 0.6)
    resp = admin_web.post(f"/admin/models/{model.id}/edit", {"provider": str(pid), "upstream_model": "llama3:8b",
                                                             "kind": "chat", "fallbacks": "nope", "enabled": "y"},
                          hx=f"row-{model.id}")
    assert resp.status_code == 422 and "no model `nope`" in resp.get_data(as_text=True)
    resp = admin_web.post(f"/admin/models/{model.id}/edit", {"provider": str(pid), "upstream_model": "llama3:8b",
                                                             "kind": "chat", "enabled": "y"}, hx=f"row-{model.id}")
    assert resp.status_code == 200 and one(app, Model, id=model.id).upstream_model == "llama3:8b"
    assert admin_web.post(f"/admin/models/{model.id}/delete", hx=f"row-{model.id}").status_code == 200
    assert one(app, Model, id=model.id) is None


def test_model_bad_slug_and_missing_provider(admin_web, app):
    resp = admin_web.post("/admin/models", {"slug": "a:b", "provider": "", "upstream_model": "x", "kind": "chat"},
                          hx="create-form")
    assert resp.status_code == 422 and "Choose a provider" in resp.get_data(as_text=True)
    admin_web.post("/admin/providers", PROVIDER)
    pid = one(app, Provider, name="openai").id
    resp = admin_web.post("/admin/models", {"slug": "a:b", "provider": str(pid), "upstream_model": "x",
                                            "kind": "chat"}, hx="create-form")
    assert resp.status_code == 422 and "without &#39;:&#39; or &#39;@&#39;" in resp.get_data(as_text=True)


# -- prompts -----------------------------------------------------------------------------------------
def test_prompt_create_and_edit_saves_a_new_version(admin_web, app):
    resp = admin_web.post("/admin/prompts", {"slug": "translator", "text": "Translate to French.",
                                             "mode": "prepend", "description": "fr"}, hx="create-form")
    assert resp.status_code == 200
    prompt = one(app, Prompt, slug="translator")
    form = admin_web.hx_get(f"/admin/prompts/{prompt.id}/edit", f"row-{prompt.id}").get_data(as_text=True)
    assert "Translate to French." in form
    resp = admin_web.post(f"/admin/prompts/{prompt.id}/edit", {"text": "Translate to German.", "mode": "replace",
                                                               "description": "de", "note": "german now"},
                          hx=f"row-{prompt.id}")
    assert resp.status_code == 200 and "Translate to German." in resp.get_data(as_text=True)
    prompt = one(app, Prompt, id=prompt.id)
    assert (prompt.latest_version, prompt.mode, prompt.description) == (2, "replace", "de")
    assert one(app, PromptVersion, prompt_id=prompt.id, version=2).note == "german now"
    # Same text again: no new version.
    admin_web.post(f"/admin/prompts/{prompt.id}/edit", {"text": "Translate to German.", "mode": "replace"})
    assert one(app, Prompt, id=prompt.id).latest_version == 2


def test_prompt_validation_errors(admin_web):
    resp = admin_web.post("/admin/prompts", {"slug": "p", "text": "   ", "mode": "prepend"}, hx="create-form")
    assert resp.status_code == 422 and "This field is required." in resp.get_data(as_text=True)
    resp = admin_web.post("/admin/prompts", {"slug": "p", "text": "x", "mode": "sideways"}, hx="create-form")
    assert resp.status_code == 422 and "Not a valid choice" in resp.get_data(as_text=True)


def test_prompt_delete(admin_web, app):
    admin_web.post("/admin/prompts", {"slug": "gone", "text": "x", "mode": "prepend"})
    pid = one(app, Prompt, slug="gone").id
    assert admin_web.post(f"/admin/prompts/{pid}/delete").status_code == 303
    assert one(app, Prompt, id=pid) is None


def test_audit_page_lists_dashboard_changes(admin_web):
    admin_web.post("/admin/users", {"name": "zed", "role": "member"})
    body = admin_web.hx_get("/admin/audit?q=zed", "rows").get_data(as_text=True)
    assert "web:root" in body and "zed" in body


def test_open_circuit_breaker_is_shown_on_the_providers_page(app, admin_web):
    from promptproxy import manage
    from promptproxy.core.errors import Fault, UpstreamError
    from promptproxy.extensions import db
    from promptproxy.routing.breakers import Breakers

    with app.app_context():
        provider = manage.create_provider("t", "flaky", "openai", "http://127.0.0.1:9/v1")
        db.session.commit()
        pid = provider.id
    gw = app.extensions["promptproxy"]
    gw.breakers = Breakers(threshold=2, cooldown=30.0, state=gw.state)
    page = admin_web.get("/admin/providers").get_data(as_text=True)
    assert "circuit open" not in page
    for _ in range(2):
        gw.breakers.failure(type("P", (), {"id": pid, "name": "flaky"})(),
                            UpstreamError(502, "refused", fault=Fault.CONNECT))
    page = admin_web.get("/admin/providers").get_data(as_text=True)
    assert "circuit open, retry in 30 s" in page
