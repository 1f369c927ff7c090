"""Per-version traffic of a prompt: a real 90/10 rollout through the gateway, then the prompt page and the CLI."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db
from promptproxy.models import RequestLog, utcnow
from promptproxy.proxy.resolve import rollout_version

from ..admin.conftest import ADMIN_PW, CHROMIUM, admin_web, browser, member_web, page, people  # noqa: F401
from ..conftest import log_rows
from .conftest import CHAT, chat
from .test_rollouts import label, two_versions

SPLIT = ((1, 90), (2, 10))
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
GERMAN = "Translate into German."  # version 2's text


def cells(html: str, version: int) -> dict[str, str]:
    """The version table's row for `version` as {column: text}."""
    found = re.search(rf'<tr id="stats-v{version}">(.*?)</tr>', html, re.S)
    assert found, f"no row for version {version}"
    return {name: re.sub(r"<[^>]+>|\s+", " ", value).strip()
            for name, value in re.findall(r'<td data-label="([^"]+)">(.*?)</td>', found.group(1), re.S)}


def cli_run(app, *args):
    return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))


@pytest.fixture
def rollout(app, client, seeded, upstream):
    """Version 2 on 10 % of users; users call until each version has callers; v2's first call fails upstream."""
    prompt_id = two_versions(app)
    assert label(app, "1=90", "2=10").exit_code == 0
    app.extensions["promptproxy"].catalog.invalidate()
    failed = []

    def handler(req):
        if (req["body"] or {}).get("messages", [{}])[0].get("content") == GERMAN and not failed:
            failed.append(req)
            return 400, {"Content-Type": "application/json"}, json.dumps(
                {"error": {"message": "bad", "type": "invalid_request_error"}})
        return upstream.default(req)

    upstream.handler = handler
    users = Counter()
    with app.app_context():
        for i in range(300):
            if users[2] >= 2 and users[1] >= 5:
                break
            user = manage.create_user("t", f"u{i}", all_models=True, all_prompts=True)
            _, key = manage.create_key("t", user)
            db.session.commit()
            version = rollout_version(SPLIT, user.id, prompt_id)
            users[version] += 1
            for _ in range(2):
                body = {**CHAT, "model": "gpt-4o-mini:translator@production"}
                assert chat(client, key, body).status_code in (200, 400)
    app.extensions["promptproxy"].logs.flush()
    assert failed, "no call reached version 2"
    return prompt_id, users


def expected(app, version: int) -> dict:
    rows = [r for r in log_rows(app) if r.prompt == "translator" and r.prompt_version == version]
    return {"requests": len(rows), "errors": sum(r.status >= 400 for r in rows),
            "input": sum(r.input_tokens or 0 for r in rows), "output": sum(r.output_tokens or 0 for r in rows),
            "cost": sum(r.cost or 0 for r in rows)}


def test_the_prompt_page_compares_the_versions_of_a_rollout(rollout, app, admin_web):  # noqa: F811
    prompt_id, users = rollout
    html = admin_web.get(f"/admin/prompts/{prompt_id}").get_data(as_text=True)
    assert "Traffic per version" in html
    v1, v2 = cells(html, 1), cells(html, 2)
    assert v1["Requests"] == str(2 * users[1]) and v2["Requests"] == str(2 * users[2])
    assert (v1["Errors"], v2["Errors"]) == ("0", "1")  # the failed call counts for the version that was served
    assert v2["Error rate"] == f"{100 / (2 * users[2]):.1f}%" and v1["Error rate"] == "0.0%"
    for version, row in ((1, v1), (2, v2)):
        want = expected(app, version)
        assert (row["Input tokens"], row["Output tokens"]) == (str(want["input"]), str(want["output"]))
        assert row["Cost"] == app.jinja_env.filters["money"](want["cost"])
        assert row["p50 latency"].endswith(" ms")
    assert want["input"] == 11 * (2 * users[2] - 1)  # the refused call used no tokens
    assert (v1["Labels"], v2["Labels"]) == ("production 90%", "production 10%")
    assert "→ version 1 (90%), version 2 (10%)" in html  # the labels section shows the rollout too


def test_the_range_switch_swaps_only_the_table_and_older_calls_count_in_longer_ranges(
        rollout, app, admin_web):  # noqa: F811
    prompt_id, users = rollout
    with app.app_context():
        db.session.add(RequestLog(request_id="old-1", created_at=utcnow() - timedelta(days=3), endpoint="x",
                                  status=200, prompt="translator", prompt_version=1, latency_ms=5.0))
        db.session.commit()
    url = f"/admin/prompts/{prompt_id}"
    assert cells(admin_web.get(url).get_data(as_text=True), 1)["Requests"] == str(2 * users[1])
    part = admin_web.hx_get(f"{url}?range=7d", "version-stats").get_data(as_text=True)
    assert "<html" not in part and "Compare versions" not in part
    assert cells(part, 1)["Requests"] == str(2 * users[1] + 1)
    assert 'aria-current="true">7 days' in part
    assert cells(admin_web.get(f"{url}?range=bogus").get_data(as_text=True), 1)["Requests"] == str(2 * users[1])


def test_cli_prompt_stats_prints_the_same(rollout, app):
    _, users = rollout
    out = cli_run(app, "prompt", "stats", "translator", "--since", "24h", "--json")
    assert out.exit_code == 0, out.output
    rows = {r["version"]: r for r in map(orjson.loads, out.output.splitlines())}
    assert (rows[1]["requests"], rows[1]["errors"], rows[2]["requests"], rows[2]["errors"]) == (
        2 * users[1], 0, 2 * users[2], 1)
    assert rows[2]["labels"] == {"production": 10} and rows[1]["live"] is False and rows[2]["live"] is True
    assert rows[2]["cost"] == pytest.approx(expected(app, 2)["cost"]) and rows[2]["p50_ms"] > 0
    text = cli_run(app, "prompt", "stats", "translator").output.splitlines()
    assert text[0].split() == ["VERSION", "LABELS", "REQUESTS", "ERRORS", "ERROR", "%", "TOKENS", "IN/OUT", "COST",
                               "$", "P50", "MS"]
    assert text[1].split()[:6] == ["2", "(live)", "production", "10%", str(2 * users[2]), "1"]
    assert text[2].split()[:4] == ["1", "production", "90%", str(2 * users[1])]


def test_cli_prompt_stats_errors_and_empty_ranges(app, seeded):
    bad = cli_run(app, "prompt", "stats", "translator", "--since", "yesterday")
    assert bad.exit_code == 2 and "give a number and a unit: 30m, 24h, 7d or 4w" in bad.output
    missing = cli_run(app, "prompt", "stats", "nosuch")
    assert missing.exit_code == 1 and "no prompt `nosuch`" in missing.output
    empty = cli_run(app, "prompt", "stats", "translator", "--since", "30m")
    assert empty.exit_code == 0 and empty.output == "no requests for prompt translator in the last 0:30:00\n"


def test_members_cannot_see_a_prompts_version_table(member_web, app, seeded):  # noqa: F811
    with app.app_context():
        prompt_id = manage.get_prompt("translator").id
    assert member_web.get(f"/admin/prompts/{prompt_id}").status_code in (403, 404)
    assert member_web.hx_get(f"/admin/prompts/{prompt_id}?range=7d", "version-stats").status_code in (403, 404)


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}")
def test_in_a_browser_the_range_buttons_swap_the_table_in_place(rollout, app, live, page, people):  # noqa: F811
    from playwright.sync_api import expect

    prompt_id, users = rollout
    with app.app_context():
        db.session.add(RequestLog(request_id="old-2", created_at=utcnow() - timedelta(days=3), endpoint="x",
                                  status=200, prompt="translator", prompt_version=1, latency_ms=5.0))
        db.session.commit()
    page.goto(live + "/admin/login")
    page.fill("#email", "root@example.com")
    page.fill("#password", ADMIN_PW)
    page.click("button[type=submit]")
    page.goto(f"{live}/admin/prompts/{prompt_id}")
    requests = "#stats-v1 td[data-label=Requests]"
    assert page.inner_text(requests) == str(2 * users[1])
    page.evaluate("window.notReloaded = true")
    page.click("#version-stats a:has-text('7 days')")
    expect(page.locator(requests)).to_have_text(str(2 * users[1] + 1))
    assert page.evaluate("window.notReloaded") is True  # swapped by htmx, not a new page
    assert not page.problems, page.problems  # no CSP violation, script error or missing asset
    expect(page.locator("#version-stats a[aria-current=true]")).to_have_text("7 days")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "prompt-version-stats.png"), full_page=True)
