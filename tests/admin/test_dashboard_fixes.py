"""Issue 15's dashboard items without a browser: unique ids, filtered export, pinned prompts, no-op saves, overview."""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import openai
import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.admin.overview import money
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Model, Prompt, PromptVersion, RequestLog, utcnow

from ..conftest import log_rows


class Ids(HTMLParser):
    """Every id, every label's `for`, and every href/src of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.ids, self.fors, self.urls, self.links = [], [], [], {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.append(attrs["id"])
            if tag == "a":
                self.links[attrs["id"]] = attrs.get("href")
        if tag == "label" and attrs.get("for"):
            self.fors.append(attrs["for"])
        for name in ("href", "src"):
            if attrs.get(name):
                self.urls.append(attrs[name])


def dupes(ids) -> list:
    return sorted(i for i, n in Counter(ids).items() if n > 1)


@pytest.fixture
def things(app, seeded, people):
    """One of each editable resource, with the ids of a row per page."""
    with app.app_context():
        return {"users": people["mia"], "providers": manage.get_provider("local").id,
                "models": manage.get_model("gpt-4o-mini").id, "prompts": manage.get_prompt("translator").id}


@pytest.mark.parametrize("folder", ["users", "providers", "models", "prompts"])
def test_an_open_edit_row_shares_no_id_with_the_page_or_the_new_form(admin_web, things, folder):
    row = things[folder]
    page = admin_web.get(f"/admin/{folder}").get_data(as_text=True)
    edit = admin_web.hx_get(f"/admin/{folder}/{row}/edit", f"row-{row}").get_data(as_text=True)
    assert 'id="new-' in page and f'id="edit-{row}-' in edit
    # the page as the browser has it once the row is swapped for its edit form
    swapped = Ids(page).ids
    swapped.remove(f"row-{row}")
    swapped += Ids(edit).ids
    assert dupes(swapped) == []
    labels = Ids(edit).fors
    assert labels and all(f in Ids(edit).ids for f in labels)  # each label names a field of its own form


@pytest.mark.parametrize("path", ["/admin/", "/admin/users", "/admin/keys", "/admin/providers", "/admin/models",
                                  "/admin/prompts", "/admin/requests", "/admin/audit", "/admin/prompts/{prompt}",
                                  "/admin/users/{user}/edit", "/admin/playground"])
def test_no_page_has_duplicate_ids(admin_web, things, path):
    resp = admin_web.get(path.format(prompt=things["prompts"], user=things["users"]))
    assert resp.status_code == 200
    assert dupes(Ids(resp.get_data(as_text=True)).ids) == []


def test_every_page_links_only_assets_that_exist_including_a_favicon(admin_web, member_web, things):
    pages = ["/admin/", "/admin/users", "/admin/keys", "/admin/providers", "/admin/models", "/admin/prompts",
             "/admin/requests", "/admin/audit", f"/admin/prompts/{things['prompts']}", "/admin/playground",
             "/admin/login", "/admin/no-such-page"]
    seen = set()
    for path in pages:
        html = admin_web.get(path).get_data(as_text=True)
        assert '<link rel="icon" href="/static/favicon.svg"' in html, path
        seen |= {u for u in Ids(html).urls if u.startswith("/static/")}
    seen |= {u for u in Ids(member_web.get("/admin/").get_data(as_text=True)).urls if u.startswith("/static/")}
    assert "/static/favicon.svg" in seen
    for url in sorted(seen):
        resp = admin_web.get(url)
        assert resp.status_code == 200, url
        resp.close()


# -- the request log's links follow the filters ---------------------------------------------------------------
@pytest.fixture
def logged(app, people):
    """Six rows: mia and otto, ok and failed, on two models."""
    with app.app_context():
        for i, (user, status, model) in enumerate([("mia", 200, "a"), ("mia", 500, "a"), ("mia", 429, "b"),
                                                   ("otto", 500, "a"), ("otto", 200, "b"), ("mia", 200, "b")]):
            db.session.add(RequestLog(request_id=f"r{i}", created_at=utcnow() - timedelta(minutes=i),
                                      user_id=people[user], model=model, endpoint="/v1/chat/completions",
                                      status=status))
        db.session.commit()


def test_filtering_in_place_updates_the_export_link_and_the_csv_holds_only_those_rows(admin_web, people, logged):
    rows = admin_web.hx_get(f"/admin/requests?user={people['mia']}&status=error&model=&key=", "rows")
    html = rows.get_data(as_text=True)
    assert "<html" not in html
    href = Ids(html).links["export-csv"]
    assert parse_qs(urlsplit(href).query) == {"user": [str(people["mia"])], "status": ["error"]}
    data = list(csv.DictReader(io.StringIO(admin_web.get(href).get_data(as_text=True))))
    assert sorted(r["request_id"] for r in data) == ["r1", "r2"]
    unfiltered = Ids(admin_web.hx_get("/admin/requests", "rows").get_data(as_text=True)).links["export-csv"]
    assert unfiltered == "/admin/requests.csv"


def test_no_export_link_while_a_filter_is_invalid(admin_web, logged):
    html = admin_web.hx_get("/admin/requests?status=teapot", "rows").get_data(as_text=True)
    assert "export-csv" not in html and "Status must be ok, error or a number." in html


# -- prompts: pinned versions and saves that change nothing ---------------------------------------------------
def versions_and_audits(app, slug="translator"):
    with app.app_context():
        prompt = manage.get_prompt(slug)
        count = db.session.scalar(sa.select(sa.func.count()).select_from(PromptVersion).where(
            PromptVersion.prompt_id == prompt.id))
        return count, db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))


def prompt_form(text, **extra):
    return {"description": "", "mode": "prepend", "text": text, "note": "", **extra}


def test_saving_a_prompt_unchanged_writes_no_version_and_no_audit_event(app, admin_web, things):
    before = versions_and_audits(app)
    pid = things["prompts"]
    resp = admin_web.post(f"/admin/prompts/{pid}/edit", prompt_form("Translate the user's words into French."),
                          hx=f"row-{pid}")
    assert resp.status_code == 200 and "the text is unchanged (no new version)" in resp.get_data(as_text=True)
    assert versions_and_audits(app) == before


def test_a_multiline_prompt_saved_from_a_browser_textarea_is_unchanged(app, admin_web, things):
    with app.app_context():
        manage.add_version("t", manage.get_prompt("translator"), "Line one.\nLine two.")
        db.session.commit()
    before = versions_and_audits(app)
    pid = things["prompts"]
    # browsers submit textarea line breaks as CRLF
    admin_web.post(f"/admin/prompts/{pid}/edit", prompt_form("Line one.\r\nLine two."), hx=f"row-{pid}")
    assert versions_and_audits(app) == before


def test_an_edit_that_changes_only_the_mode_audits_only_the_mode(app, admin_web, things):
    pid = things["prompts"]
    admin_web.post(f"/admin/prompts/{pid}/edit", prompt_form("Translate the user's words into French.",
                                                             mode="replace"), hx=f"row-{pid}")
    with app.app_context():
        event = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert (event.action, event.target) == ("update", "translator") and event.details == {"mode": "replace"}
        assert db.session.scalar(sa.select(Prompt.latest_version).where(Prompt.id == pid)) == 1


@pytest.fixture
def pinned(app, things):
    """translator with versions 1 and 2, version 1 pinned live."""
    with app.app_context():
        prompt = manage.get_prompt("translator")
        manage.add_version("t", prompt, "Version two.")
        manage.set_live("t", prompt, 1)
        db.session.commit()
    return things["prompts"]


def test_the_edit_form_says_plainly_when_an_older_version_is_pinned(admin_web, pinned):
    html = admin_web.hx_get(f"/admin/prompts/{pinned}/edit", f"row-{pinned}").get_data(as_text=True)
    assert "Version 1 is pinned live" in html and "saves version 3, which will <strong>not</strong> be live" in html
    assert re.search(r'<button type="submit" name="make_live" value="1">Save and make live</button>', html)


def test_saving_while_pinned_says_the_new_version_is_not_live(app, admin_web, pinned):
    resp = admin_web.post(f"/admin/prompts/{pinned}/edit", prompt_form("Version three."), hx=f"row-{pinned}")
    assert "Saved version 3 of translator, but it is not live: version 1 is pinned." in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Prompt, pinned).live_version == 1


def test_save_and_make_live(app, admin_web, pinned):
    resp = admin_web.post(f"/admin/prompts/{pinned}/edit", prompt_form("Version three.", make_live="1"),
                          hx=f"row-{pinned}")
    assert "Saved version 3 of translator; it is live." in resp.get_data(as_text=True)
    with app.app_context():
        prompt = db.session.get(Prompt, pinned)
        assert (prompt.live_version, prompt.latest_version) == (None, 3)


def test_save_while_pinned_without_javascript_flashes_the_same_message(admin_web, pinned):
    resp = admin_web.post(f"/admin/prompts/{pinned}/edit", prompt_form("Version three."), follow_redirects=True)
    assert "but it is not live: version 1 is pinned" in resp.get_data(as_text=True)


def test_no_pinned_notice_when_the_prompt_follows_the_newest(admin_web, things):
    pid = things["prompts"]
    html = admin_web.hx_get(f"/admin/prompts/{pid}/edit", f"row-{pid}").get_data(as_text=True)
    assert "pinned" not in html and "make_live" not in html


# -- the model form declares endpoints -----------------------------------------------------------------------
def test_model_form_declares_endpoints_on_create_and_edit(app, admin_web, seeded):
    with app.app_context():
        provider = manage.get_provider("local").id
    resp = admin_web.post("/admin/models", {"slug": "vllm", "provider": str(provider), "upstream_model": "m",
                                            "kind": "chat", "endpoints": ["chat"], "enabled": "y"},
                          hx="create-form")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    with app.app_context():
        model = db.session.scalar(sa.select(Model).where(Model.slug == "vllm"))
        assert model.endpoints == ["chat"]
    rows = admin_web.hx_get("/admin/models", "rows").get_data(as_text=True)
    assert "serves chat, completions" in rows and "serves chat<" in rows
    bad = admin_web.post(f"/admin/models/{model.id}/edit", {"provider": str(provider), "upstream_model": "m",
                                                            "kind": "chat", "endpoints": ["embeddings", "chat"]},
                         hx=f"row-{model.id}")
    assert bad.status_code == 422 and "embeddings stay separate" in bad.get_data(as_text=True)
    ok = admin_web.post(f"/admin/models/{model.id}/edit", {"provider": str(provider), "upstream_model": "m",
                                                           "kind": "chat", "enabled": "y"}, hx=f"row-{model.id}")
    assert ok.status_code == 200 and "serves chat, completions" in ok.get_data(as_text=True)


# -- overview ------------------------------------------------------------------------------------------------
def test_refused_calls_for_made_up_models_are_shown_apart(app, live, seeded, admin_web):
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    for name in ("gpt-5-turbo-ultra", "gpt-5-turbo-ultra", "typo-model"):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    assert len(log_rows(app)) == 4
    html = admin_web.get("/admin/?range=24h").get_data(as_text=True)
    top_models = html.split('id="top-models"')[1].split("</table>")[0]
    unknown = html.split('id="unknown-models"')[1].split("</table>")[0]
    assert "gpt-4o-mini" in top_models and "gpt-5-turbo-ultra" not in top_models and "typo-model" not in top_models
    assert re.search(r"gpt-5-turbo-ultra</code> <span class=\"badge bad\">unknown model</span></td>"
                     r"<td class=\"num\" data-label=\"Requests\">2<", unknown)
    assert "typo-model" in unknown


def test_a_deleted_model_that_served_calls_stays_a_model(app, live, seeded, admin_web):
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    client.completions.create(model="text-davinci", prompt="hi")
    assert len(log_rows(app)) == 1
    with app.app_context():
        manage.delete_model("t", manage.get_model("text-davinci"))
        db.session.commit()
    html = admin_web.get("/admin/?range=24h").get_data(as_text=True)
    assert "text-davinci" in html.split('id="top-models"')[1] and 'id="unknown-models"' not in html


@pytest.mark.parametrize(("value", "shown"), [(0, "$0.00"), (6e-5, "$0.000060"), (0.000123456, "$0.00012"),
                                               (0.0423, "$0.0423"), (12.5, "$12.50"), (1234.5, "$1,234.50")])
def test_money_is_written_as_people_write_it(value, shown):
    assert money(value) == shown


def test_member_overview_shows_small_costs_as_money(app, live, seeded, people, member_web):
    with app.app_context():
        db.session.add(RequestLog(request_id="m1", created_at=utcnow(), user_id=people["mia"], model="gpt-4o-mini",
                                  endpoint="/v1/chat/completions", status=200, input_tokens=20, output_tokens=20,
                                  cost=6e-5))
        db.session.commit()
    html = member_web.get("/admin/?range=24h").get_data(as_text=True)
    visible = re.sub(r"data-chart='[^']*'", "", html)  # the chart's data stays numbers; what people read is money
    assert 'data-stat="cost">$0.000060<' in visible and not re.search(r"\d[eE]-0?5", visible)
    assert '"money": true' in html  # the cost chart formats its axis and tooltips as money


def test_every_chart_has_its_numbers_as_a_table(admin_web, people, logged):
    html = admin_web.get("/admin/?range=24h").get_data(as_text=True)
    for chart in ("requests", "tokens", "cost", "error_rate", "latency"):
        assert f'aria-describedby="chart-{chart}-table"' in html
        table = html.split(f'id="chart-{chart}-table"')[1].split("</table>")[0]
        assert table.count("<tr>") == 25  # header + 24 hourly rows, labelled in UTC
        assert re.search(r'<th scope="row">\d{4}-\d\d-\d\d \d\d:00</th>', table)
    requests_table = html.split('id="chart-requests-table"')[1].split("</table>")[0]
    assert sum(int(n) for n in re.findall(r'<td class="num">(\d+)</td><td class="num">\d+</td>', requests_table)) == 6
