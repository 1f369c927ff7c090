"""The response cache's memory front: hits served from memory keep every rule of the store behind it."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from promptproxy import create_app
from promptproxy.cache import response_cache
from promptproxy.extensions import db
from promptproxy.models import ResponseCacheEntry, utcnow

from ..conftest import REDIS_URL, base_config
from ..upstream import chat_response
from .conftest import CHAT, chat
from .test_cache import set_cache

FRESH = 30.0  # CACHE_TTL of these tests: how long a process may serve what it read without asking the store


class Clock:
    """The cache module's wall clock and database clock, moved forward together by the test."""

    def __init__(self):
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def utcnow(self):
        return utcnow() + timedelta(seconds=self.offset)


@pytest.fixture
def clock(monkeypatch):
    """Time as the response cache sees it; `clock.offset += s` lets s seconds pass."""
    clock = Clock()
    monkeypatch.setattr(response_cache, "time", type("Time", (), {"time": staticmethod(clock.time)}))
    monkeypatch.setattr(response_cache, "utcnow", clock.utcnow)
    return clock


@pytest.fixture
def cached(app, seeded, clock):
    """gpt-4o-mini with a 60 s cache per user, and the memory front on as under `serve` (CACHE_TTL > 0)."""
    set_cache(app, ttl=60)
    app.extensions["promptproxy"].cache.front.fresh = FRESH
    return seeded


def delete_entries(app) -> None:
    """Empty the store behind the app's back, as another process's prune or an operator would."""
    with app.app_context():
        db.session.execute(sa.delete(ResponseCacheEntry))
        db.session.commit()


def test_a_hit_is_served_from_memory_without_the_store(client, cached, upstream, app):
    chat(client, cached.key)
    delete_entries(app)
    again = chat(client, cached.key)
    assert again.headers["x-cache"] == "HIT" and len(upstream.requests) == 1


def test_an_entry_is_not_served_from_memory_after_its_ttl(client, cached, upstream, app, clock):
    set_cache(app, ttl=5)  # shorter than FRESH: the entry's own expiry decides
    chat(client, cached.key)
    clock.offset += 4
    assert chat(client, cached.key).headers["x-cache"] == "HIT"
    clock.offset += 2
    assert chat(client, cached.key).headers["x-cache"] == "MISS" and len(upstream.requests) == 2


def test_an_entry_deleted_from_the_store_stops_being_served_within_cache_ttl(client, cached, upstream, app, clock):
    chat(client, cached.key)
    delete_entries(app)
    clock.offset += FRESH - 1
    assert chat(client, cached.key).headers["x-cache"] == "HIT"
    clock.offset += 2
    assert chat(client, cached.key).headers["x-cache"] == "MISS" and len(upstream.requests) == 2


def test_pruning_over_the_size_cap_drops_the_entries_from_memory_too(client, cached, upstream, app):
    chat(client, cached.key)
    cache = app.extensions["promptproxy"].cache
    cache.max_total = 1
    with app.app_context():
        assert cache.prune() == 1
    assert chat(client, cached.key).headers["x-cache"] == "MISS" and len(upstream.requests) == 2


def test_users_do_not_see_each_others_answers_from_memory_unless_shared(client, cached, upstream, app):
    chat(client, cached.key)
    assert chat(client, cached.other_key).headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    set_cache(app, scope="shared")
    first = chat(client, cached.key)
    shared = chat(client, cached.other_key)
    assert (first.headers["x-cache"], shared.headers["x-cache"]) == ("MISS", "HIT")
    assert shared.json == first.json and len(upstream.requests) == 3


def test_no_cache_skips_memory_and_refreshes_it(client, cached, upstream, app):
    chat(client, cached.key)
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"},
                                    json.dumps(chat_response(req["body"]["model"], "a newer answer")))
    fresh = chat(client, cached.key, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    assert fresh.json["choices"][0]["message"]["content"] == "a newer answer"
    again = chat(client, cached.key)
    assert again.headers["x-cache"] == "HIT" and again.json == fresh.json


def test_no_store_is_kept_neither_in_the_store_nor_in_memory(client, cached, upstream, app):
    body = {**CHAT, "messages": [{"role": "user", "content": "secret"}]}
    chat(client, cached.key, body, headers={"Cache-Control": "no-store"})
    assert chat(client, cached.key, body).headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ResponseCacheEntry)) == 1


def test_another_app_on_the_same_database_sees_what_the_first_stored(client, cached, upstream, app, db_url, tmp_path):
    other = create_app(base_config(db_url, tmp_path) | {"CACHE_TTL": FRESH})
    try:
        first = chat(client, cached.key)
        seen = chat(other.test_client(), cached.key)
        assert seen.headers["x-cache"] == "HIT" and seen.json == first.json and len(upstream.requests) == 1
        body = {**CHAT, "temperature": 0.2}
        chat(other.test_client(), cached.key, body)
        assert chat(client, cached.key, body).headers["x-cache"] == "HIT" and len(upstream.requests) == 2
    finally:
        other.extensions["promptproxy"].close()
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


def test_with_redis_memory_never_outlives_the_keys_ttl(client, cached, upstream, app, clock, redis_prefix):
    """redis_prefix (tests/routing/conftest.py) skips without PROMPTPROXY_TEST_REDIS_URL."""
    gw = app.extensions["promptproxy"]
    gw.cache = response_cache.ResponseCache({"REDIS_URL": REDIS_URL, "REDIS_PREFIX": redis_prefix,
                                             "CACHE_TTL": FRESH})
    chat(client, cached.key)
    store = redis.Redis.from_url(REDIS_URL)
    (key,) = store.scan_iter(match=f"{redis_prefix}:cache:*")
    store.expire(key, 5)  # someone shortened it: the next read from Redis learns the new TTL
    gw.cache.front.discard()
    assert chat(client, cached.key).headers["x-cache"] == "HIT"
    clock.offset += 6
    store.delete(key)  # what Redis does at the TTL
    assert chat(client, cached.key).headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    store.close()


def test_memory_keeps_the_most_recently_used_entries_within_its_byte_cap():
    front = response_cache.Front(max_bytes=10, fresh=60)
    front.put("a", b"aaaa", expires=200, now=100)
    front.put("b", b"bbbb", expires=200, now=100)
    assert front.get("a", now=101) == b"aaaa"  # a is now the most recently used
    front.put("c", b"cccc", expires=200, now=101)
    assert (front.get("a", 102), front.get("b", 102), front.get("c", 102)) == (b"aaaa", None, b"cccc")
    assert front.size == 8
    front.put("big", b"x" * 11, expires=200, now=102)
    assert front.get("big", 103) is None and front.size == 8


def test_memory_is_off_when_cache_ttl_is_zero():
    front = response_cache.Front(max_bytes=10, fresh=0)
    front.put("a", b"aaaa", expires=200, now=100)
    assert front.get("a", now=100) is None and front.size == 0
