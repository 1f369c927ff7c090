"""Real-browser walk-through with Playwright and Debian's Chromium: set-up, CRUD, a key, an API call, charts."""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import openai
import pytest

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import RequestLog, utcnow

from ..conftest import flush_logs
from .conftest import CHROMIUM

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}")]


def shot(page, name: str, full: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def create(page, live, path: str, fields: dict, selects: dict | None = None, checks=()):
    """Open a list page, fill the in-place create form and wait for the HTMX answer."""
    page.goto(live + path)
    page.click("#create-form summary")
    for name, value in fields.items():
        page.fill(f"#create-form [name={name}]", value)
    for name, value in (selects or {}).items():
        page.select_option(f"#create-form [name={name}]", label=value)
    for name in checks:
        page.check(f"#create-form [name={name}]")
    page.click("#create-form button[type=submit]")


def login(page, live, email, password):
    page.goto(live + "/admin/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_first_run_setup_crud_key_api_call_charts_and_member_isolation(app, live, upstream, page, capsys):
    from promptproxy.server import announce_setup

    announce_setup(app)
    token = capsys.readouterr().out.split("one-time token: ")[1].split()[0]
    page.goto(live + "/_/")
    assert "/admin/login" in page.url
    page.click("text=Set up the first one")
    page.fill("#token", token)
    page.fill("#name", "boss")
    page.fill("#email", "boss@example.com")
    page.fill("#password", "boss-password")
    shot(page, "setup")
    page.click("button[type=submit]")
    page.wait_for_selector("text=You are the first administrator")

    create(page, live, "/admin/providers", {"name": "local", "base_url": upstream.url + "/v1",
                                             "api_key": "sk-upstream-browser-4321"})
    page.wait_for_selector("#create-form >> text=Created provider local.")
    page.wait_for_selector("#rows >> text=sk-…4321")
    assert "sk-upstream-browser-4321" not in page.content()
    create(page, live, "/admin/models", {"slug": "gpt-4o-mini", "upstream_model": "real-model:latest",
                                          "input_price": "1", "output_price": "2"}, {"provider": "local"})
    page.wait_for_selector("#rows >> text=real-model:latest")
    create(page, live, "/admin/prompts", {"slug": "translator", "text": "Translate into French."})
    page.wait_for_selector("#rows >> text=Translate into French.")
    create(page, live, "/admin/users", {"name": "bob", "email": "bob@example.com", "password": "bob-password"},
           checks=("all_models", "all_prompts"))
    page.wait_for_selector("#rows >> text=bob@example.com")
    shot(page, "users")

    create(page, live, "/admin/keys", {"name": "laptop"}, {"user": "bob"})
    secret = page.input_value("#new-secret")
    assert secret.startswith("pp-")
    page.click("[data-copy]")
    page.wait_for_selector("text=Copied.")
    shot(page, "key-created")
    page.click("text=Done")
    page.wait_for_selector("#create-form summary")
    page.wait_for_selector("#rows >> text=laptop")
    assert secret not in page.content()
    page.reload()
    assert secret not in page.content()

    sdk = openai.OpenAI(base_url=live + "/v1", api_key=secret, max_retries=0)
    reply = sdk.chat.completions.create(model="gpt-4o-mini:translator", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Bonjour!"
    assert upstream.last["body"]["messages"][0] == {"role": "system", "content": "Translate into French."}
    flush_logs(app)

    page.goto(live + "/admin/")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-requests')) !== undefined")
    total = page.evaluate("Chart.getChart(document.getElementById('chart-requests')).data.datasets[0].data"
                          ".reduce((a, b) => a + b, 0)")
    assert total == 1
    assert page.evaluate("Chart.getChart(document.getElementById('chart-latency')).data.datasets.length") == 2
    shot(page, "overview")
    page.click("text=7 days")
    page.wait_for_function("() => document.querySelector('.ranges [aria-current]').textContent.includes('7 days')")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-requests')) !== undefined")
    page.goto(live + "/admin/requests")
    page.wait_for_selector("text=gpt-4o-mini")
    shot(page, "requests")
    assert not [p for p in page.problems if "Content Security Policy" in p or "CSPV" in p], page.problems
    assert not [p for p in page.problems if p.startswith("404 ")], page.problems  # the favicon included

    page.click("text=Log out")
    page.wait_for_selector("text=You are logged out.")
    login(page, live, "bob@example.com", "bob-password")
    page.wait_for_load_state()
    assert "My usage" in page.content(), page.inner_text('main')
    assert page.locator("nav >> text=Users").count() == 0
    page.goto(live + "/admin/keys")
    page.wait_for_selector("#rows >> text=laptop")
    shot(page, "member-keys")
    resp = page.goto(live + "/admin/users")
    assert resp.status == 403 and "Forbidden" in page.content()
    assert page.goto(live + "/admin/providers").status == 403


def test_search_as_you_type_edit_in_place_and_delete_with_confirmation(app, live, page):
    with app.app_context():
        manage.create_user("t", "root", email="root@example.com", role="admin", password="root-password")
        for name in ("anna", "anton", "zoe"):
            manage.create_user("t", name)
        db.session.commit()
    login(page, live, "root@example.com", "root-password")
    page.goto(live + "/admin/users")
    page.type("#q", "ant")
    page.wait_for_function("() => !document.querySelector('#rows').textContent.includes('zoe')")
    assert "anton" in page.inner_text("#rows") and "anna" not in page.inner_text("#rows")
    assert "q=ant" in page.url
    row = page.locator("#rows tr", has_text="anton")
    row.locator("text=Edit").click()
    page.wait_for_selector("tr.editing")
    page.fill("tr.editing [name=email]", "anton@example.com")
    page.click("tr.editing button[type=submit]")
    page.wait_for_selector("#rows >> text=anton@example.com")
    page.on("dialog", lambda d: d.accept())
    page.locator("#rows tr", has_text="anton").locator("text=Delete").click()
    page.wait_for_function("() => !document.querySelector('#rows').textContent.includes('anton@example.com')")


def test_phone_width_has_no_horizontal_scroll(app, live, browser, seeded):
    with app.app_context():
        manage.create_user("t", "root", email="root@example.com", role="admin", password="root-password")
        db.session.commit()
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    login(page, live, "root@example.com", "root-password")
    for path in ("/admin/", "/admin/keys", "/admin/users", "/admin/requests", "/admin/prompts"):
        page.goto(live + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 362, path
    shot(page, "phone-keys")
    context.close()


def test_docs_screenshots_from_a_seeded_instance(app, live, browser, seeded):
    """Screenshots for the README (copied to docs/ by hand when the UI changes)."""
    import random

    rnd = random.Random(3)
    with app.app_context():
        manage.create_user("t", "root", email="root@example.com", role="admin", password="root-password")
        manage.create_prompt("t", "support-agent", "You are a patient support agent for {{product}}.\n"
                             "Answer in {{language}}. Keep answers under 120 words.", description="Help desk")
        for i in range(400):
            ok = rnd.random() > 0.06
            tin, tout = rnd.randint(20, 900), rnd.randint(5, 400)
            db.session.add(RequestLog(
                request_id=f"seed-{i}", created_at=utcnow() - timedelta(minutes=rnd.randint(0, 24 * 60)),
                user_id=seeded.user_id, key_id=1, model=rnd.choice(["gpt-4o-mini", "gpt-4o-mini", "embed"]),
                prompt=rnd.choice([None, "translator", "support-agent"]), prompt_version=1,
                endpoint="/v1/chat/completions", status=200 if ok else rnd.choice([429, 502]),
                input_tokens=tin, output_tokens=tout, cost=(tin + 2 * tout) / 1e6 * 3,
                latency_ms=rnd.lognormvariate(6, 0.5)))
        db.session.commit()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    login(page, live, "root@example.com", "root-password")
    page.goto(live + "/admin/")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-latency')) !== undefined")
    shot(page, "docs-overview")
    page.goto(live + "/admin/keys")
    shot(page, "docs-keys")
    page.goto(live + "/admin/prompts")
    page.locator("#rows tr", has_text="support-agent").locator("text=Edit").click()
    page.wait_for_selector("tr.editing textarea")
    shot(page, "docs-prompt")
    context.close()
