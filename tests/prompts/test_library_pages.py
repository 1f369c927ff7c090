"""Dashboard prompt pages: history, diff, preview, labels, rollback, and the playground route."""
from __future__ import annotations

import orjson
import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..admin.conftest import Web, csrf_token, login
from ..conftest import log_rows, rows_when

PASSWORD = "library-admin-pw-1"


@pytest.fixture
def web(app, seeded) -> Web:
    """A client logged in as an admin (with access to everything), with two versions of translator."""
    with app.app_context():
        manage.create_user("t", "boss", email="boss@example.com", role="admin", password=PASSWORD,
                           all_models=True, all_prompts=True)
        prompt = manage.get_prompt("translator")
        manage.add_version("t", prompt, "Translate into {{lang}}.\nBe <b>brief</b>.", variables={"lang": "Dutch"},
                           params={"temperature": {"value": 0, "locked": True}}, note="with a variable")
        db.session.commit()
        prompt_id = prompt.id
    client = app.test_client()
    assert login(client, "boss@example.com", PASSWORD).status_code == 303
    logged_in = Web(client, csrf_token(client, "/admin/"))
    logged_in.prompt_id = prompt_id
    return logged_in


def boss_id(app) -> int:
    """The admin's user id."""
    with app.app_context():
        return manage.get_user("boss").id


def test_history_page_lists_versions_labels_and_live(web):
    html = web.get(f"/admin/prompts/{web.prompt_id}").get_data(as_text=True)
    assert "Roll back to v1" in html and "with a variable" in html
    assert 'id="version-2" class="live"' in html
    assert "Be &lt;b&gt;brief&lt;/b&gt;." in html, "prompt text is escaped"
    assert f'href="/admin/prompts/{web.prompt_id}"' in web.get("/admin/prompts").get_data(as_text=True)


def test_rollback_forward_and_labels_through_the_pages(web, app):
    url = f"/admin/prompts/{web.prompt_id}"
    resp = web.post(url + "/live", {"version": "1"})
    assert resp.status_code == 303
    html = web.get(url).get_data(as_text=True)
    assert "Version 1 is live now." in html and "Make v2 live" in html and "Follow the newest version again" in html
    web.post(url + "/labels", {"label": "production", "version": "2"})
    assert "<code>translator@production</code> → version 2" in web.get(url).get_data(as_text=True)
    resp = web.post(url + "/labels", {"label": "99", "version": "1"})
    assert "label must be letters" in web.get(resp.headers["Location"]).get_data(as_text=True)
    web.post(url + "/live", {"version": ""})
    with app.app_context():
        prompt = manage.get_prompt("translator")
        assert prompt.live_version is None
        from promptproxy.models import AuditEvent

        actors = {e.actor for e in db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "rollback"))}
        assert actors == {"web:boss"}


def test_changes_need_csrf(web):
    resp = web.client.post(f"/admin/prompts/{web.prompt_id}/live", data={"version": "1"})
    assert resp.status_code == 400


def test_diff_between_any_two_versions_is_escaped(web):
    url = f"/admin/prompts/{web.prompt_id}/diff?a=1&b=2"
    html = web.get(url).get_data(as_text=True)
    assert '<span class="d-del"><span class="sr-only">removed: </span>-Translate the user&#39;s words into French.' \
        in html
    assert "+Be &lt;b&gt;brief&lt;/b&gt;." in html
    assert "+# params" in html and '+    &#34;locked&#34;: true,' in html
    part = web.hx_get(url, "diff").get_data(as_text=True)
    assert part.lstrip().startswith('<pre class="diff"') and "<html" not in part
    assert "identical" in web.get(f"/admin/prompts/{web.prompt_id}/diff?a=2&b=2").get_data(as_text=True)
    assert web.get(f"/admin/prompts/{web.prompt_id}/diff?a=1&b=9").status_code == 404
    assert web.get(f"/admin/prompts/{web.prompt_id}/diff?a=x&b=1").status_code == 404


def test_preview_fills_variables_literally_and_uses_defaults(web):
    url = f"/admin/prompts/{web.prompt_id}/preview"
    assert "Translate into Dutch." in web.get(url + "?version=2").get_data(as_text=True)
    html = web.hx_get(url + "?version=2&var_lang=%7B%7Blang%7D%7D+%3Cscript%3E", "preview").get_data(as_text=True)
    assert "Translate into {{lang}} &lt;script&gt;." in html and "<html" not in html
    with_missing = web.get(f"/admin/prompts/{web.prompt_id}/preview?version=1").get_data(as_text=True)
    assert "Translate the user&#39;s words into French." in with_missing


def test_members_cannot_reach_library_pages(app, seeded, web):
    with app.app_context():
        manage.create_user("t", "mem", email="mem@example.com", password="member-pw-12345", all_models=True,
                           all_prompts=True)
        db.session.commit()
    client = app.test_client()
    login(client, "mem@example.com", "member-pw-12345")
    for url in (f"/admin/prompts/{web.prompt_id}", "/admin/playground", f"/admin/prompts/{web.prompt_id}/diff?a=1&b=2"):
        assert client.get(url).status_code == 403
    anonymous = app.test_client().get("/admin/playground")
    assert anonymous.status_code == 302 and "/admin/login" in anonymous.headers["Location"]


# -- playground --------------------------------------------------------------------------------------
def run(web, **fields):
    """POST the playground as app.js does (JSON, CSRF header)."""
    return web.client.post("/admin/playground/run", data=orjson.dumps(fields), headers={
        "Content-Type": "application/json", "X-CSRFToken": web.token})


def test_playground_streams_through_the_proxy_and_is_logged_as_the_admin(web, app, upstream):
    resp = run(web, model="gpt-4o-mini", prompt="translator", version="2", message="Hello",
               variables='{"lang": "Frisian"}')
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    body = resp.get_data(as_text=True)
    frames = [f for f in body.split("\n\n") if f]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in
                   (orjson.loads(f[6:]) for f in frames if f.startswith("data: {")) if c.get("choices"))
    assert text == "Bonjour!"
    stats = orjson.loads(frames[-1].split("data: ", 1)[1])
    assert frames[-1].startswith("event: stats")
    assert (stats["input_tokens"], stats["output_tokens"], stats["version"]) == (11, 3, 2)
    assert stats["cost"] == pytest.approx((11 * 1.0 + 3 * 2.0) / 1e6) and stats["latency_ms"] > 0
    sent = upstream.last["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Translate into Frisian.\nBe <b>brief</b>."}
    assert sent["temperature"] == 0 and sent["model"] == "real-model-name:latest"
    [row] = log_rows(app)
    assert (row.user_id, row.key_id, row.endpoint, row.status, row.stream) == \
        (boss_id(app), None, "/admin/playground", 200, True)
    assert (row.prompt, row.prompt_version, row.output_tokens) == ("translator", 2, 3)
    assert row.request_id == stats["request_id"]


def test_playground_errors_are_json_and_logged(web, app, upstream):
    resp = run(web, model="gpt-4o-mini", prompt="translator", version="1", message="x", variables="{bad")
    assert resp.status_code == 400 and resp.json["error"]["param"] == "prompt_variables"
    resp = run(web, model="gpt-4o-mini", prompt="translator", version="9", message="x")
    assert resp.status_code == 404 and resp.json["error"]["code"] == "prompt_not_found"
    resp = run(web, model="gpt-4o-mini", prompt="translator", message="x", variables='{"lang": {"a": 1}}')
    assert resp.status_code == 400 and "`lang`" in resp.json["error"]["message"]
    resp = web.client.post("/admin/playground/run", data=b"[1]", headers={
        "Content-Type": "application/json", "X-CSRFToken": web.token})
    assert resp.status_code == 400 and resp.json["error"]["type"] == "invalid_request_error"
    resp = run(web, model="gpt-4o-mini", prompt=12345, message="x")
    assert resp.status_code == 404 and resp.json["error"]["code"] == "prompt_not_found"
    assert upstream.requests == []
    assert [r.status for r in log_rows(app)] == [400, 404, 400, 400, 404]


def test_playground_respects_the_admins_own_access(app, web, upstream):
    with app.app_context():
        boss = manage.get_user("boss")
        manage.update_user("t", boss, all_prompts=False)
        db.session.commit()
    resp = run(web, model="gpt-4o-mini", prompt="translator", message="x")
    assert resp.status_code == 404 and upstream.requests == []


def test_playground_needs_csrf_and_works_without_javascript(web, upstream):
    no_token = web.client.post("/admin/playground/run", data=orjson.dumps({"model": "gpt-4o-mini", "message": "x"}),
                               headers={"Content-Type": "application/json"})
    assert no_token.status_code == 400 and upstream.requests == []
    page = web.post("/admin/playground/run", {"model": "gpt-4o-mini", "message": "hi", "prompt": ""})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and '<pre id="pg-answer" class="answer" aria-live="polite">Bonjour!</pre>' in html
    assert upstream.last["body"]["messages"] == [{"role": "user", "content": "hi"}]
    page = web.get("/admin/playground?prompt=translator&version=1")
    assert '<option value="translator" selected>' in page.get_data(as_text=True)


def test_playground_budget_estimate_includes_the_stored_prompt(web, app, upstream):
    """The playground runs the /v1 pipeline: the body is built (stored prompt in) before the budget is reserved."""
    long_text = "Answer in the voice of a careful, patient reference librarian. " * 2000  # ~24k tokens
    with app.app_context():
        prompt = manage.get_prompt("translator")
        manage.add_version("t", prompt, long_text, note="long")
        # At $1/M in and $2/M out, a bare "hi" with the 4,096-token default cap is ~$0.008; with the stored
        # prompt ~$0.03. A $0.015 budget admits the first and must refuse the second.
        manage.update_user("t", manage.get_user("boss"), budget=0.015, period="month")
        db.session.commit()
    refused = run(web, model="gpt-4o-mini", prompt="translator", message="hi")
    assert refused.status_code == 429 and refused.json["error"]["code"] == "insufficient_quota"
    assert upstream.requests == []
    admitted = run(web, model="gpt-4o-mini", message="hi")
    assert admitted.status_code == 200 and '"status":200' in admitted.get_data(as_text=True)
    assert upstream.last["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert [r.status for r in rows_when(app, 2)] == [429, 200]


@pytest.mark.parametrize("api, upstream_path", [("responses", "/v1/chat/completions"),
                                                ("messages", "/v1/chat/completions")])
def test_playground_speaks_each_dialect(web, app, upstream, api, upstream_path):
    resp = run(web, api=api, model="gpt-4o-mini", prompt="translator", version="1", message="Hello")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and ("response.output_text.delta" if api == "responses" else
                                        "content_block_delta") in body
    assert upstream.last["path"] == upstream_path
    assert upstream.last["body"]["messages"][0]["content"] == "Translate the user's words into French."
    page = web.post("/admin/playground/run", {"api": api, "model": "gpt-4o-mini", "message": "hi", "prompt": ""})
    assert '<pre id="pg-answer" class="answer" aria-live="polite">Bonjour!</pre>' in page.get_data(as_text=True)
    rows = rows_when(app, 2)
    assert {(r.inbound_format, r.status) for r in rows} == {("anthropic" if api == "messages" else api, 200)}


def test_playground_refuses_an_unknown_api(web, upstream):
    resp = run(web, api="soap", model="gpt-4o-mini", message="x")
    assert resp.status_code == 400 and resp.json["error"]["param"] == "api" and upstream.requests == []
