"""Tags in the dashboard and the CLI: filter and group the request log, CSV, spend by tag on the overview, key
default tags from the key form and `key create/update --tag`, and `log --tag`."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from functools import partial

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import ApiKey, AuditEvent

from ..cli_runner import cli_env, run_cli
from ..conftest import log_rows

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def tagged(app, seeded, people):
    """Three calls by alice: tagged `a,b`, `a` and `c`, plus one untagged; returns the rows."""
    client = app.test_client()
    for tags in ("a,b", "a", "c", None):
        resp = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI}, headers={
            "Authorization": f"Bearer {seeded.key}", **({"x-promptproxy-tags": tags} if tags else {})})
        assert resp.status_code == 200
    return log_rows(app)


def row_ids(html: str) -> set[int]:
    """Ids of the request rows listed on a page."""
    return {int(i) for i in re.findall(r'href="/admin/requests/(\d+)"', html)}


def test_request_log_filters_by_tag_and_shows_the_rows_tags(admin_web, tagged):
    html = admin_web.get("/admin/requests?tag=a").get_data(as_text=True)
    assert row_ids(html) == {tagged[0].id, tagged[1].id}
    assert '<a class="tag" href="/admin/requests?tag=b">b</a>' in html
    rows = admin_web.hx_get("/admin/requests?tag=nope", "rows").get_data(as_text=True)
    assert row_ids(rows) == set() and "No requests match." in rows
    detail = admin_web.get(f"/admin/requests/{tagged[0].id}").get_data(as_text=True)
    assert "<dt>Tags</dt><dd>a, b</dd>" in detail


def test_request_log_groups_by_tag_over_the_filters(admin_web, tagged):
    cost = tagged[0].cost
    html = admin_web.get("/admin/requests?by=tag").get_data(as_text=True)
    table = html.split('<table class="by-tag">')[1].split("</table>")[0]
    found = re.findall(r'<td data-label="Tag"><a [^>]*>([^<]+)</a></td><td data-label="Requests" class="num">(\d+)'
                       r'</td>.*?<td data-label="Cost" class="num">\$([0-9.]+)</td>', table)
    assert {tag: (int(n), float(c)) for tag, n, c in found} == {
        "a": (2, pytest.approx(2 * cost, abs=1e-6)), "b": (1, pytest.approx(cost, abs=1e-6)),
        "c": (1, pytest.approx(cost, abs=1e-6))}
    narrowed = admin_web.get("/admin/requests?by=tag&tag=b").get_data(as_text=True)
    assert re.findall(r'<td data-label="Tag"><a [^>]*>([^<]+)</a>', narrowed) == ["a", "b"]  # b's rows, all tags


def test_csv_follows_the_tag_filter_and_has_a_tags_column(admin_web, tagged):
    resp = admin_web.get("/admin/requests.csv?tag=a")
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [(r["request_id"], r["tags"]) for r in rows] == [(tagged[0].request_id, "a,b"),
                                                            (tagged[1].request_id, "a")]


def test_overview_spends_by_tag_and_members_see_only_their_own(admin_web, member_web, tagged):
    html = admin_web.get("/admin/").get_data(as_text=True)
    card = html.split('id="tag-spend"')[1].split("</table>")[0]
    assert re.findall(r'<td data-label="Tag"><a [^>]*>([^<]+)</a></td><td class="num" data-label="Requests">(\d+)',
                      card) == [("a", "2"), ("b", "1"), ("c", "1")]  # most spent first
    mine = member_web.get("/admin/").get_data(as_text=True)
    assert "No tagged requests in this range." in mine.split('id="tag-spend"')[1]


def test_key_form_sets_default_tags_and_refuses_bad_ones(admin_web, app, people):
    resp = admin_web.post("/admin/keys", {"name": "ci", "user": str(people["mia"]), "tags": "team-a, svc:x"},
                          hx="create-form")
    assert resp.status_code == 200 and "pp-" in resp.get_data(as_text=True)
    resp = admin_web.post("/admin/keys", {"name": "bad", "user": str(people["mia"]), "tags": "team a"},
                          hx="create-form")
    assert "The tag `team a` is not valid" in resp.get_data(as_text=True)
    with app.app_context():
        keys = db.session.execute(sa.select(ApiKey.name, ApiKey.tags).where(ApiKey.user_id == people["mia"])).all()
    assert keys == [("ci", ["team-a", "svc:x"])]  # the refused form created nothing
    assert "tags: team-a, svc:x" in admin_web.get("/admin/keys").get_data(as_text=True)


@pytest.fixture
def cli(db_url, tmp_path, seeded):
    """`promptproxy ARGS` against the test database (tests/cli_runner.py); the tests check the exit code."""
    return partial(run_cli, env=cli_env(db_url, tmp_path / "cli-instance"), ok=False)


def key_tags(app, key_id: int):
    with app.app_context():
        return db.session.get(ApiKey, key_id).tags


def test_cli_key_tags_create_update_clear_and_refuse(cli, app):
    made = cli("key", "create", "--user", "alice", "--tag", "team-a", "--tag", "svc:x")
    assert made.exit_code == 0, made.stderr
    key_id = int(re.search(r"created key (\d+)", made.stdout + made.stderr).group(1))
    assert key_tags(app, key_id) == ["team-a", "svc:x"]
    assert cli("key", "update", str(key_id), "--tag", "b").exit_code == 0
    assert key_tags(app, key_id) == ["b"]
    refused = cli("key", "update", str(key_id), "--tag", "b c")
    assert refused.exit_code != 0 and "The tag `b c` is not valid" in refused.stderr
    assert "Traceback" not in refused.stderr and key_tags(app, key_id) == ["b"]
    refused = cli("key", "create", "--user", "alice", *[f"--tag=t{i}" for i in range(11)])
    assert refused.exit_code != 0 and "Too many tags: at most 10 per key, got 11." in refused.stderr
    assert cli("key", "update", str(key_id), "--no-tags").exit_code == 0
    assert key_tags(app, key_id) is None
    with app.app_context():
        details = [e.details for e in db.session.scalars(sa.select(AuditEvent).where(AuditEvent.target_type == "key"))]
    assert {"name": "", "tags": ["team-a", "svc:x"]} in details and {"tags": None} in details


def test_cli_log_filters_by_tag(cli, app, seeded):
    with app.app_context():
        manage.create_key("t", manage.get_user("bob"))
        db.session.commit()
    client = app.test_client()
    for tags in ("night-batch", "other"):
        client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI},
                    headers={"Authorization": f"Bearer {seeded.key}", "x-promptproxy-tags": tags})
    rows = log_rows(app)
    out = cli("log", "--tag", "night-batch", "--json")
    assert out.exit_code == 0, out.stderr
    found = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [(r["request_id"], r["tags"]) for r in found] == [(rows[0].request_id, "night-batch")]


def test_rollup_rebuild_keeps_tag_sums_and_retention_prunes_tag_rows(app, tagged):
    from promptproxy.models import RequestTag, UsageRollup, utcnow
    from promptproxy.rollups import prune, rebuild

    def tag_sums():
        return sorted(db.session.execute(sa.select(UsageRollup.user_id, UsageRollup.value, UsageRollup.requests)
                                         .where(UsageRollup.dim == "tag")).tuples().all())

    with app.app_context():
        before = tag_sums()
        assert (-1, "a", 2) in before
        with db.engine.begin() as conn:
            rebuild(conn)
        db.session.remove()
        assert tag_sums() == before
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RequestTag)) == 4
        prune(db.session, 1, now=utcnow() + timedelta(days=2))
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RequestTag)) == 0
        assert tag_sums() == before  # roll-ups outlive the rows
