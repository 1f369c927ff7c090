"""Issue 15's dashboard items in a real browser: labels in edit rows, filtered export, overview layout, prompts."""
from __future__ import annotations

import csv
import os
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import AuditEvent, Prompt, RequestLog, utcnow

from .conftest import CHROMIUM
from .test_browser import login

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}")]


@pytest.fixture
def root(app):
    """An admin who logs in with a password."""
    with app.app_context():
        manage.create_user("t", "root", email="root@example.com", role="admin", password="root-password",
                           all_models=True, all_prompts=True)
        db.session.commit()


def checked(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "el => el.checked")


@pytest.mark.parametrize(("path", "row", "label", "name"), [
    ("/admin/users", "anna", "Every model (present and future)", "all_models"),
    ("/admin/providers", "local", "Speaks the Responses API", "responses_api"),
    ("/admin/models", "gpt-4o-mini", "Enabled", "enabled"),
])
def test_a_label_in_a_rows_edit_form_toggles_that_forms_checkbox(app, live, page, root, seeded, path, row, label,
                                                                  name):
    with app.app_context():
        manage.create_user("t", "anna")
        db.session.commit()
    login(page, live, "root@example.com", "root-password")
    page.goto(live + path)
    page.click("#create-form summary")  # the "New …" form open too: both forms on screen
    new_before = checked(page, f"#create-form [name={name}]")
    page.locator("#rows tr", has_text=row).first.locator("text=Edit").click()
    page.wait_for_selector("tr.editing")
    before = checked(page, f"tr.editing [name={name}]")
    page.click(f"tr.editing label:text-is('{label}')")
    assert checked(page, f"tr.editing [name={name}]") is not before
    assert checked(page, f"#create-form [name={name}]") is new_before
    assert page.evaluate("[...document.querySelectorAll('[id]')].map(e => e.id)"
                         ".filter((id, i, all) => all.indexOf(id) !== i)") == []


def test_a_label_in_a_prompts_edit_form_focuses_that_forms_text(live, page, root, seeded):
    login(page, live, "root@example.com", "root-password")
    page.goto(live + "/admin/prompts")
    page.click("#create-form summary")
    page.locator("#rows tr", has_text="translator").locator("text=Edit").click()
    page.wait_for_selector("tr.editing textarea")
    page.click("tr.editing label:text-is('Text')")
    assert page.evaluate("document.activeElement.closest('tr.editing') !== null && "
                         "document.activeElement.name === 'text'")


@pytest.fixture
def logged(app, people):
    """Six rows: mia and otto, ok and failed."""
    with app.app_context():
        for i, (user, status) in enumerate([("mia", 200), ("mia", 500), ("mia", 429), ("otto", 500), ("otto", 200),
                                            ("mia", 200)]):
            db.session.add(RequestLog(request_id=f"r{i}", created_at=utcnow() - timedelta(minutes=i),
                                      user_id=people[user], model="gpt-4o-mini", model_id=1,
                                      endpoint="/v1/chat/completions",
                                      status=status, cost=0.00006 * (i + 1), input_tokens=10, output_tokens=10))
        db.session.commit()


def test_csv_export_follows_filters_applied_in_place(live, page, logged, tmp_path):
    login(page, live, "root@example.com", "admin-password-1")
    page.goto(live + "/admin/requests")
    page.select_option("#f-user", label="mia")
    page.fill("#f-status", "error")
    page.wait_for_function("() => document.querySelector('#export-csv').href.includes('status=error')")
    assert "status=error" in page.url  # the address follows too
    with page.expect_download() as info:
        page.click("#export-csv")
    path = tmp_path / "export.csv"
    info.value.save_as(path)
    with path.open(newline="") as f:
        ids = sorted(r["request_id"] for r in csv.DictReader(f))
    assert ids == ["r1", "r2"]
    assert not [p for p in page.problems if p.startswith("404 ")], page.problems


def test_overview_cards_charts_and_favicon(app, live, page, logged, tmp_path):
    with app.app_context():
        db.session.add(RequestLog(request_id="long", created_at=utcnow(), model="a-rather-long-model-name-for-a-card",
                                  model_id=1, endpoint="/v1/chat/completions", status=200, input_tokens=123456,
                                  output_tokens=654321, cost=1234.5))
        db.session.commit()
    login(page, live, "root@example.com", "admin-password-1")
    page.goto(live + "/admin/?range=24h")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-cost')) !== undefined")
    # every top card shows its Cost column whole, without scrolling
    for card in ("top-users", "top-models", "top-prompts"):
        wrap = page.locator(f"#{card} .table-wrap")
        assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth"), card
        cost, box = page.locator(f"#{card} th:text-is('Cost')").bounding_box(), wrap.bounding_box()
        assert cost["x"] + cost["width"] <= box["x"] + box["width"] + 1, card
    # the axis is 24-hour UTC, like the range in the header
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-requests')).data.labels")
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in labels), labels
    header = page.inner_text(".ranges .muted")
    assert header.split(" ")[1] == labels[0] and header.endswith("UTC")
    assert page.evaluate("Chart.getChart(document.getElementById('chart-requests')).options.scales.x.ticks"
                         ".maxRotation") == 0
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    page.click("text=7 days")
    page.wait_for_function("() => document.querySelector('.ranges [aria-current]').textContent.includes('7 days')")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-cost')) !== undefined")
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-requests')).data.labels")
    assert all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d", label) for label in labels), labels
    # costs as money on the axis and in the tooltip
    assert page.evaluate("Chart.getChart(document.getElementById('chart-cost')).options.scales.y.ticks"
                         ".callback(0.00006)") == "$0.000060"
    # a data alternative
    assert not page.is_visible("#chart-cost-table")
    page.click("#chart-cost-table >> xpath=ancestor::details/summary")
    assert page.is_visible("#chart-cost-table") and "$1,234.50" in page.inner_text("#chart-cost-table")
    # the favicon is linked and served
    assert page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)") == 200
    assert not [p for p in page.problems if p.startswith("404 ")], page.problems


def test_prompt_saved_unchanged_from_the_browser_makes_no_version_then_save_and_make_live(app, live, page, root):
    with app.app_context():
        prompt = manage.create_prompt("t", "support", "Line one.\nLine two.")
        manage.add_version("t", prompt, "Line one.\nLine two, better.")
        manage.set_live("t", prompt, 1)
        db.session.commit()
        audits = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    login(page, live, "root@example.com", "root-password")
    page.goto(live + "/admin/prompts")
    page.locator("#rows tr", has_text="support").locator("text=Edit").click()
    page.wait_for_selector("tr.editing [data-pinned]")
    assert "Version 1 is pinned live" in page.inner_text("tr.editing [data-pinned]")
    page.click("tr.editing button.primary")
    page.wait_for_selector("#rows >> text=the text is unchanged (no new version)")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == audits
        assert db.session.scalar(sa.select(Prompt.latest_version).where(Prompt.slug == "support")) == 2
    page.locator("#rows tr", has_text="support").locator("text=Edit").click()
    page.wait_for_selector("tr.editing textarea")
    page.fill("tr.editing textarea", "Line one.\nLine three.")
    page.click("tr.editing button:text-is('Save and make live')")
    page.wait_for_selector("#rows >> text=Saved version 3 of support; it is live.")
    with app.app_context():
        prompt = db.session.scalar(sa.select(Prompt).where(Prompt.slug == "support"))
        assert (prompt.live_version, prompt.latest_version) == (None, 3)
