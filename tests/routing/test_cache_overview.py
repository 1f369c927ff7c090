"""The overview's Cache card: hit rate and money saved over the window, from the roll-ups and from the raw log."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from promptproxy import stats
from promptproxy.admin.overview import money
from promptproxy.extensions import db
from promptproxy.models import UsageRollup, utcnow
from promptproxy.rollups import fill_cache_columns

from ..admin.conftest import admin_web, people  # noqa: F401 - dashboard fixtures
from ..conftest import log_rows
from .conftest import CHAT, chat
from .test_cache import set_cache


@pytest.fixture
def traffic(client, seeded, upstream, app):
    """5 calls, 3 of them cache hits: (hits, requests, saved)."""
    set_cache(app, ttl=60)
    for body in (CHAT, CHAT, CHAT, CHAT, {**CHAT, "temperature": 0}):
        chat(client, seeded.key, body)
    rows = log_rows(app)
    hits = [r for r in rows if r.cache_hit]
    assert (len(hits), len(rows), len(upstream.requests)) == (3, 5, 2)
    return 3, 5, sum(r.cost_saved for r in hits)


def cache_card(page: str) -> str:
    found = re.search(r'data-stat="cache">(.*?)</span></div>', page, re.S)
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_the_overview_shows_the_hit_rate_and_the_money_saved(admin_web, traffic, app):  # noqa: F811
    hits, requests, saved = traffic
    assert saved > 0
    card = cache_card(admin_web.get("/admin/?range=24h").get_data(as_text=True))
    assert card == f"60.0% hits (3 of 5), {money(saved)} saved"
    assert (hits, requests) == (3, 5)
    partial = admin_web.hx_get("/admin/?range=7d", "charts").get_data(as_text=True)  # the range switch's fragment
    assert cache_card(partial) == card


def test_totals_agree_from_the_rollups_and_from_the_raw_log(app, traffic):
    hits, requests, saved = traffic
    with app.app_context():
        since, until, _ = stats.window("24h")
        rolled = stats.totals(since, until)
        raw = stats.totals(utcnow() - timedelta(minutes=5), utcnow() + timedelta(minutes=1))  # unaligned: the log
    for totals in (rolled, raw):
        assert (totals["cache_hits"], totals["requests"]) == (hits, requests)
        assert totals["cost_saved"] == pytest.approx(saved) and totals["hit_rate"] == pytest.approx(0.6)


def test_rollups_written_before_the_cache_columns_are_filled_from_the_log(app, traffic):
    hits, _, saved = traffic
    with app.app_context():
        db.session.execute(sa.update(UsageRollup).values(cache_hits=0, cost_saved=0.0))  # as migration 0012 adds them
        db.session.commit()
        with db.engine.begin() as conn:
            assert fill_cache_columns(conn) == hits
        since, until, _ = stats.window("24h")
        totals = stats.totals(since, until)
        by_model = db.session.execute(sa.select(UsageRollup.cache_hits).where(
            UsageRollup.dim == "model", UsageRollup.value == "gpt-4o-mini", UsageRollup.user_id == -1)).scalars().all()
    assert (totals["cache_hits"], sum(by_model)) == (hits, hits) and totals["cost_saved"] == pytest.approx(saved)


def test_no_traffic_shows_a_zero_hit_rate(admin_web):  # noqa: F811
    assert cache_card(admin_web.get("/admin/").get_data(as_text=True)) == "0.0% hits (0 of 0), $0.00 saved"
