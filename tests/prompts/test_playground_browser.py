"""One real-browser test: the playground streams an answer into the page (chromium via Playwright)."""
from __future__ import annotations

import os

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..conftest import CHROMIUM, log_rows

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


@pytest.fixture
def browser_page(browser):
    """A page of the shared headless Chromium (tests/conftest.py), in a fresh context."""
    return browser.new_page()


def test_playground_streams_an_answer_in_the_browser(app, live, seeded, upstream, browser_page):
    with app.app_context():
        manage.create_user("t", "web-admin", email="web@example.com", role="admin", password="browser-pw-123",
                           all_models=True, all_prompts=True)
        db.session.commit()
    chunks = ["Guten ", "Morgen, ", "<b>Welt</b>!"]

    def slow_stream(req):
        from ..upstream import Upstream, chunk

        model = req["body"]["model"]
        frames = [chunk(model, "", role=True)] + [chunk(model, t) for t in chunks] + [chunk(model, finish="stop")]
        return 200, {"Content-Type": "text/event-stream"}, Upstream.sse(frames, req["body"], model, gap=0.05)

    upstream.handler = slow_stream
    page = browser_page
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "404" not in msg.text else None)
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(live + "/admin/login")
    page.fill("input[name=email]", "web@example.com")
    page.fill("input[name=password]", "browser-pw-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/**")
    page.goto(live + "/admin/playground?prompt=translator")
    page.fill("#pg-message", "Good morning")
    page.click("#playground button[type=submit]")
    from playwright.sync_api import expect

    expect(page.locator("#pg-stats [data-stat=output_tokens]")).to_have_text("3")  # waits; CSP forbids eval
    assert page.text_content("#pg-answer") == "Guten Morgen, <b>Welt</b>!"
    assert page.locator("#pg-answer b").count() == 0, "streamed text is inserted as text, never as HTML"
    assert page.text_content("#pg-stats [data-stat=output_tokens]") == "3"
    assert page.text_content("#pg-stats [data-stat=input_tokens]") == "11"
    assert page.text_content("#pg-stats [data-stat=cost]") == f"{(11 * 1.0 + 3 * 2.0) / 1e6:.6f}"
    assert page.is_hidden("#pg-error")
    assert errors == [], "no script errors or CSP violations"
    assert [url for url in missing if not url.endswith("/favicon.ico")] == []
    [row] = log_rows(app)
    assert (row.endpoint, row.prompt, row.stream, row.status) == ("/admin/playground", "translator", True, 200)
    assert upstream.last["body"]["messages"][0]["content"] == "Translate the user's words into French."
