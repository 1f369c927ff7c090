"""The exact response cache: hits and misses, scopes, errors, Cache-Control, stream replay in both dialects, expiry."""
from __future__ import annotations

import anthropic
import openai
import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import ResponseCacheEntry

from ..conftest import log_rows
from .conftest import CHAT, chat

ERROR = (500, {"Content-Type": "application/json"}, '{"error": {"message": "boom"}}')


@pytest.fixture
def cached(app, seeded):
    """gpt-4o-mini with a 60 s cache, per user."""
    set_cache(app, ttl=60)
    return seeded


def set_cache(app, **fields):
    with app.app_context():
        manage.update_model("t", manage.get_model("gpt-4o-mini"), cache_ttl=fields.get("ttl"),
                            cache_scope=fields.get("scope"))
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()


def test_second_identical_call_is_a_hit_with_no_upstream_call_and_no_charge(client, cached, upstream, app):
    first = chat(client, cached.key)
    second = chat(client, cached.key, {**CHAT, "user": "someone-else-in-my-app"})  # `user` is not in the key
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json == first.json and len(upstream.requests) == 1
    miss, hit = log_rows(app)
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert hit.cost == 0 and hit.cost_saved == pytest.approx(miss.cost) and miss.cost > 0
    assert hit.input_tokens == miss.input_tokens and hit.status == 200


def test_a_different_body_or_no_ttl_is_a_miss(client, seeded, cached, upstream, app):
    chat(client, cached.key)
    other = chat(client, cached.key, {**CHAT, "temperature": 0.5})
    assert other.headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    set_cache(app, ttl=0)
    off = chat(client, cached.key)
    assert "x-cache" not in off.headers and len(upstream.requests) == 3


def test_users_do_not_see_each_others_answers_unless_shared(client, cached, upstream, app):
    chat(client, cached.key)
    bob = chat(client, cached.other_key)
    assert bob.headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    set_cache(app, scope="shared")
    chat(client, cached.key)
    assert chat(client, cached.other_key).headers["x-cache"] == "HIT" and len(upstream.requests) == 3


def test_errors_are_never_cached(client, cached, upstream, app):
    upstream.handler = lambda req: ERROR
    app.extensions["promptproxy"].retry = app.extensions["promptproxy"].retry.__class__(max_retries=0)
    assert chat(client, cached.key).status_code == 500
    upstream.handler = upstream.default
    again = chat(client, cached.key)
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ResponseCacheEntry)) == 1


def test_no_cache_skips_the_read_and_no_store_also_the_write(client, cached, upstream, app):
    chat(client, cached.key)
    fresh = chat(client, cached.key, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "MISS" and len(upstream.requests) == 2
    body = {**CHAT, "messages": [{"role": "user", "content": "secret"}]}
    chat(client, cached.key, body, headers={"Cache-Control": "no-store"})
    assert chat(client, cached.key, body).headers["x-cache"] == "MISS" and len(upstream.requests) == 4


def test_expired_entries_are_misses_and_pruned(client, cached, upstream, app):
    chat(client, cached.key)
    with app.app_context():
        db.session.execute(sa.update(ResponseCacheEntry).values(expires_at=ResponseCacheEntry.created_at))
        db.session.commit()
    assert chat(client, cached.key).headers["x-cache"] == "MISS"  # expired: not served even before pruning
    with app.app_context():
        db.session.execute(sa.update(ResponseCacheEntry).values(expires_at=ResponseCacheEntry.created_at))
        db.session.commit()
        assert app.extensions["promptproxy"].cache.prune() == 1
    assert chat(client, cached.key).headers["x-cache"] == "MISS" and len(upstream.requests) == 3


def test_entries_over_the_size_cap_are_not_stored(client, cached, upstream, app):
    app.extensions["promptproxy"].cache.max_entry = 100
    chat(client, cached.key)
    assert chat(client, cached.key).headers["x-cache"] == "MISS" and len(upstream.requests) == 2


def test_a_hit_replays_as_an_openai_stream(live, cached, upstream, app):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=cached.key, max_retries=0)
    whole = sdk.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"])
    with sdk.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=CHAT["messages"], stream=True,
            stream_options={"include_usage": True}) as resp:
        assert resp.headers["x-cache"] == "HIT"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(upstream.requests) == 1
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_a_hit_replays_as_an_anthropic_stream(live, cached, upstream, app):
    sdk = anthropic.Anthropic(base_url=live, api_key=cached.key, max_retries=0)
    asked = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    whole = sdk.messages.create(**asked)
    with sdk.messages.stream(**asked) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text and final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens and len(upstream.requests) == 1
    rows = log_rows(app)
    assert [(r.cache_hit, r.stream, r.inbound_format) for r in rows] == [(False, False, "anthropic"),
                                                                          (True, True, "anthropic")]


def test_cache_options_are_checked_on_create_and_update(app, seeded):
    with app.app_context():
        provider = manage.get_provider("local")
        with pytest.raises(manage.ManageError, match="cache TTL"):
            manage.update_model("t", manage.get_model("gpt-4o-mini"), cache_ttl=-1)
        with pytest.raises(manage.ManageError, match="cache scope"):
            manage.create_model("t", "other", provider, "m", cache_scope="everyone")
        db.session.rollback()
        assert manage.get_model("gpt-4o-mini").cache_ttl is None
