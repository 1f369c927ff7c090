"""Request tags end to end: the x-promptproxy-tags header and metadata.tags through the official SDKs, key defaults,
the stored rows and tag table, the 400s for refused tags, and what never reaches the upstream."""
from __future__ import annotations

import anthropic
import openai
import pytest
import requests
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.extensions import db
from promptproxy.models import RequestTag, UsageRollup

from ..conftest import log_rows, rows_when
from .conftest import settled_rows

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def sdk(live, seeded):
    """The official OpenAI client pointed at the gateway."""
    return openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)


def tag_table(app) -> dict[str, set[str]]:
    """request_id -> its tags, from the request_tags table."""
    with app.app_context():
        out: dict[str, set[str]] = {}
        for request_id, tag in db.session.execute(sa.select(RequestTag.request_id, RequestTag.tag)):
            out.setdefault(request_id, set()).add(tag)
        return out


def test_header_and_metadata_tags_are_stored_and_metadata_tags_never_reach_the_upstream(sdk, upstream, app):
    sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, metadata={"tags": "exp-1, team-a"},
                                extra_headers={"x-promptproxy-tags": "team-a,feature-x"})
    sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, metadata={"tags": "exp-2", "purpose": "eval"})
    first, second = (r["body"] for r in upstream.requests)
    assert "metadata" not in first  # only tags were in it: the whole field goes
    assert second["metadata"] == {"purpose": "eval"}  # the client's other metadata passes through untouched
    assert all("x-promptproxy-tags" not in {k.lower() for k in r["headers"]} for r in upstream.requests)
    rows = log_rows(app)
    assert [r.tags for r in rows] == ["team-a,feature-x,exp-1", "exp-2"]
    assert tag_table(app) == {rows[0].request_id: {"team-a", "feature-x", "exp-1"}, rows[1].request_id: {"exp-2"}}


def test_streamed_call_and_responses_api_carry_tags(sdk, upstream, app):
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True,
                                         extra_headers={"x-promptproxy-tags": "stream-tag"})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Bonjour!"
    sdk.responses.create(model="gpt-4o-mini", input="hi", metadata={"tags": "resp-tag"})
    assert "metadata" not in upstream.requests[-1]["body"]
    rows = rows_when(app, 2)
    assert sorted(r.tags for r in rows) == ["resp-tag", "stream-tag"]


def test_anthropic_sdk_metadata_tags_stay_out_of_a_native_claude_call(live, seeded, claude_model, claude, app):
    client = anthropic.Anthropic(base_url=live, api_key=seeded.key, max_retries=0)
    client.messages.create(model="claude", max_tokens=50, messages=HI,
                           metadata={"user_id": "u-42", "tags": ["support", "ticket-9"]},
                           extra_headers={"x-promptproxy-tags": "web"})
    assert claude.requests[-1]["body"]["metadata"] == {"user_id": "u-42"}  # Anthropic refuses unknown fields
    (row,) = settled_rows(app)
    assert row.status == 200 and row.tags == "web,support,ticket-9"


def test_anthropic_refusal_is_in_the_anthropic_envelope_and_nothing_is_sent(live, seeded, claude_model, claude, app):
    client = anthropic.Anthropic(base_url=live, api_key=seeded.key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="claude", max_tokens=50, messages=HI,
                               metadata={"tags": [f"t{i}" for i in range(11)]})
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "Too many tags: at most 10 per request, got 11."
    assert claude.requests == []
    (row,) = settled_rows(app)
    assert (row.status, row.error_type, row.tags, row.cost) == (400, "invalid_tags", None, None)


@pytest.mark.parametrize(("headers", "metadata", "param", "message"), [
    ({"x-promptproxy-tags": "ok,has space"}, None, "x-promptproxy-tags",
     "The tag `has space` is not valid: a tag is 1 to 64 letters, digits or _ . : / @ = + -, starting with a "
     "letter or digit."),
    ({"x-promptproxy-tags": ",".join(f"t{i}" for i in range(8))}, {"tags": ["a", "b", "c"]}, "x-promptproxy-tags",
     "Too many tags: at most 10 per request, got 11."),
    (None, {"tags": ["x" * 65]}, "metadata.tags", None),
    (None, {"tags": 7}, "metadata.tags", "`metadata.tags` must be a list of strings or a comma-separated string."),
    (None, {"tags": ["ok", 3]}, "metadata.tags", None),
    (None, {"tags": "-leading-dash"}, "metadata.tags", None),
    ({"x-promptproxy-tags": "ümlaut"}, None, "x-promptproxy-tags", None),
], ids=["space", "eleven-in-all", "too-long", "not-a-list", "not-a-string", "leading-dash", "non-ascii"])
def test_refused_tags_are_a_400_naming_the_source_and_change_nothing(live, seeded, upstream, app, headers, metadata,
                                                                        param, message):
    body = {"model": "gpt-4o-mini", "messages": HI, **({"metadata": metadata} if metadata else {})}
    raw_headers = {"Authorization": f"Bearer {seeded.key}",
                   **{k: v.encode() for k, v in (headers or {}).items()}}
    resp = requests.post(live + "/v1/chat/completions", json=body, headers=raw_headers, timeout=10)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_tags", param)
    if message:
        assert error["message"] == message
    assert upstream.requests == []
    (row,) = log_rows(app)
    assert (row.status, row.error_type, row.tags) == (400, "invalid_tags", None)
    assert tag_table(app) == {}


def test_duplicates_and_empty_items_are_dropped(sdk, upstream, app):
    sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, metadata={"tags": "a,,b, a"},
                                extra_headers={"x-promptproxy-tags": "b , ,c"})
    (row,) = log_rows(app)
    assert row.tags == "b,c,a"


def test_key_default_tags_come_first_and_count_apart_from_the_clients(live, seeded, upstream, app):
    with app.app_context():
        user = manage.get_user("alice")
        key, raw = manage.create_key("t", user, tags=["team-search", "svc:indexer"])
        db.session.commit()
        key_id = key.id
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=raw, max_retries=0)
    ten = ",".join(f"c{i}" for i in range(10))  # the client's own limit is untouched by the key's two
    sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers={"x-promptproxy-tags": ten})
    sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers={"x-promptproxy-tags": "team-search"})
    rows = log_rows(app)
    assert rows[0].tags == "team-search,svc:indexer," + ten
    assert rows[1].tags == "team-search,svc:indexer"
    with app.app_context():
        manage.update_key("t", manage.get_key(str(key_id)), tags=[])
        db.session.commit()
    sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert log_rows(app)[-1].tags is None


def test_spend_by_tag_is_summed_in_the_rollups(sdk, upstream, app, seeded):
    for tags in ("a,b", "a", "b,c"):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, extra_headers={"x-promptproxy-tags": tags})
    rows = log_rows(app)
    cost = rows[0].cost
    assert cost > 0
    with app.app_context():
        sums = dict(db.session.execute(sa.select(UsageRollup.value, sa.func.sum(UsageRollup.cost)).where(
            UsageRollup.dim == "tag", UsageRollup.user_id == seeded.user_id).group_by(UsageRollup.value)).all())
    assert sums == pytest.approx({"a": 2 * cost, "b": 2 * cost, "c": cost})
