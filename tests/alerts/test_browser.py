"""The Webhooks page in Chromium: create a webhook, send a test, watch its delivery arrive in the table."""
from __future__ import annotations

import os

import pytest

from promptproxy import manage
from promptproxy.extensions import db

from ..admin.conftest import CHROMIUM
from ..admin.test_browser import login

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}")]


def test_create_a_webhook_and_send_a_test(app, live, page, receiver):
    with app.app_context():
        manage.create_user("t", "root", email="root@example.com", role="admin", password="root-password")
        db.session.commit()
    login(page, live, "root@example.com", "root-password")
    page.click("nav >> text=Webhooks")
    page.fill("[name=name]", "team-slack")
    page.fill("[name=url]", receiver.url)
    page.uncheck("input[name=events][value=key_expiry]")
    page.select_option("[name=format]", label="Slack (text)")
    page.fill("[name=secret]", "whsec-browser-1")
    page.click("button:text('Create webhook')")
    page.wait_for_selector("text=Created webhook team-slack.")
    row = page.locator("tr", has_text="team-slack")
    assert "budget, errors, provider" in row.inner_text() and "/hook/secret-path" not in page.content()
    row.locator("button:text('Send a test')").click()
    page.wait_for_selector("text=Test alert queued for team-slack")
    page.wait_for_selector("#deliveries td.status-delivered", timeout=30_000)  # the table refreshes itself
    assert receiver.json() == {"text": "Test alert from PromptProxy for webhook team-slack."}
    assert "whsec-browser-1" not in page.content()
    assert not [p for p in page.problems if "Content Security Policy" in p or "CSPV" in p], page.problems
    assert not [p for p in page.problems if p.startswith("404 ") and "favicon" not in p], page.problems
