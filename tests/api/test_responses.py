"""The official openai SDK against /v1/responses: any model, stored prompts, streams, stored state, errors."""
from __future__ import annotations

import json

import openai
import pytest
import requests

from promptproxy import manage
from promptproxy.extensions import db

from ..admin import conftest as dashboard_fixtures
from ..conftest import log_rows
from ..upstream import chunk, responses_events, responses_sse
from .conftest import settled_rows

people = dashboard_fixtures.people  # the dashboard's users, for `dashboard` below


@pytest.fixture
def dashboard(app, people):
    """A dashboard session of the admin `root`."""
    return dashboard_fixtures._logged_in(app, "root@example.com", dashboard_fixtures.ADMIN_PW)


@pytest.fixture
def sdk(live, seeded):
    """The official OpenAI client pointed at the gateway."""
    client = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0, timeout=20)
    yield client
    client.close()


def test_create_on_chat_model_with_stored_prompt(sdk, upstream, app, seeded):
    resp = sdk.responses.create(model="gpt-4o-mini:translator", input="Good morning", instructions="Be brief.")
    assert resp.output_text == "Bonjour!" and resp.status == "completed" and resp.model == "gpt-4o-mini"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (11, 7)
    sent = upstream.last
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "real-model-name:latest"
    assert sent["body"]["messages"] == [{"role": "system", "content": "Translate the user's words into French."},
                                        {"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Good morning"}]
    [row] = settled_rows(app)
    assert (row.inbound_format, row.endpoint, row.status, row.prompt) == ("responses", "/v1/responses", 200,
                                                                          "translator")
    assert (row.input_tokens, row.output_tokens, row.user_id) == (11, 7, seeded.user_id)
    assert row.cost == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)


def test_stream_event_sequence_and_stored_response(sdk, upstream, app):
    with sdk.responses.stream(model="gpt-4o-mini", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and final.output_text == "Bonjour!"
    again = sdk.responses.retrieve(final.id)
    assert again.output_text == "Bonjour!" and again.id == final.id
    follow = sdk.responses.create(model="gpt-4o-mini", input="And again?", previous_response_id=final.id)
    assert follow.previous_response_id == final.id
    assert upstream.last["body"]["messages"] == [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Bonjour!"},
                                                 {"role": "user", "content": "And again?"}]
    rows = settled_rows(app, 3)
    assert sorted((r.endpoint, r.stream, r.status) for r in rows) == [
        ("/v1/responses", False, 200), ("/v1/responses", True, 200), (f"/v1/responses/{final.id}", False, 200)]


def test_another_users_response_is_not_found(sdk, live, seeded, upstream):
    mine = sdk.responses.create(model="gpt-4o-mini", input="Hi")
    other = openai.OpenAI(base_url=live + "/v1", api_key=seeded.other_key, max_retries=0, timeout=20)
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.retrieve(mine.id)
    assert info.value.body["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-4o-mini", input="x", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)
    other.close()


def test_hosted_tool_is_a_400_naming_it(sdk, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model="gpt-4o-mini", input="x", tools=[{"type": "file_search", "vector_store_ids": []}])
    assert info.value.body["param"] == "tools[0].type" and "file_search" in info.value.body["message"]
    assert upstream.requests == []


# -- helpers -------------------------------------------------------------------------------------------
def _change(app, fn) -> None:
    """Change the configuration as the CLI and the dashboard do."""
    with app.app_context():
        fn()
        db.session.commit()


def native(app) -> None:
    """The `local` provider speaks the Responses API."""
    _change(app, lambda: manage.update_provider("t", manage.get_provider("local"), responses_api=True))


def post(client, key, body, path="/v1/responses"):
    return client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    """(event name, data) pairs of a Responses stream."""
    out = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            out.append((lines.get("event"), json.loads(lines["data"])))
    return out


def error(code, message, param=None, kind="invalid_request_error") -> dict:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# -- native passthrough -------------------------------------------------------------------------------
def test_native_passthrough_whole(sdk, upstream, app, seeded):
    native(app)
    first = sdk.responses.create(model="gpt-4o-mini:translator", input="Good morning", instructions="Be brief.",
                                 temperature=0.3)
    assert first.output_text == "Bonjour!" and first.model == "gpt-4o-mini"
    assert first.id.startswith("resp_") and first.id != "resp_upstream_1"
    sent = upstream.last
    assert sent["path"] == "/v1/responses"
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret-1234"
    assert sent["body"] == {"model": "real-model-name:latest", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Good morning"}]}],
        "instructions": "Translate the user's words into French.\n\nBe brief.", "temperature": 0.3,
        "store": False}
    follow = sdk.responses.create(model="gpt-4o-mini", input="And again?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id
    body = upstream.last["body"]
    assert "previous_response_id" not in body and body["store"] is False and "instructions" not in body
    assert [(i.get("role"), i.get("type")) for i in body["input"]] == [
        ("user", "message"), ("assistant", "message"), ("user", "message")]
    assert body["input"][1]["content"][0]["text"] == "Bonjour!"
    assert body["input"][2]["content"] == [{"type": "input_text", "text": "And again?"}]
    rows = settled_rows(app, 2)
    assert [(r.endpoint, r.status, r.prompt, r.input_tokens, r.output_tokens) for r in rows] == [
        ("/v1/responses", 200, "translator", 13, 5), ("/v1/responses", 200, None, 13, 5)]
    assert rows[0].cost == pytest.approx((13 * 1.0 + 5 * 2.0) / 1e6) and not rows[0].usage_estimated


def test_native_passthrough_streamed(sdk, upstream, app):
    native(app)
    with sdk.responses.stream(model="gpt-4o-mini:translator", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert final.output_text == "Bonjour!" and final.model == "gpt-4o-mini" and final.id != "resp_upstream_1"
    sent = upstream.last["body"]
    assert sent["stream"] is True and sent["store"] is False
    assert sent["instructions"] == "Translate the user's words into French."
    assert sdk.responses.retrieve(final.id).output_text == "Bonjour!"
    [row, _] = settled_rows(app, 2)
    assert (row.stream, row.status, row.input_tokens, row.output_tokens) == (True, 200, 13, 5)


# -- stored prompts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("passthrough", [False, True], ids=["chat", "native"])
def test_reject_mode_refuses_instructions(app, client, seeded, upstream, passthrough):
    if passthrough:
        native(app)
    _change(app, lambda: manage.update_prompt("t", manage.get_prompt("translator"), mode="reject"))
    body = {"model": "gpt-4o-mini:translator", "input": "x", "instructions": "mine"}
    resp = post(client, seeded.key, body)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "system_not_allowed"
    assert resp.get_json()["error"]["param"] == ("instructions" if passthrough else "messages")
    assert upstream.requests == []
    body.pop("instructions")
    assert post(client, seeded.key, body).status_code == 200


def test_replace_mode_drops_the_clients_instructions(app, client, seeded, upstream):
    _change(app, lambda: manage.update_prompt("t", manage.get_prompt("translator"), mode="replace"))
    resp = post(client, seeded.key, {"model": "gpt-4o-mini:translator", "input": "x", "instructions": "mine"})
    assert resp.status_code == 200
    assert upstream.last["body"]["messages"] == [
        {"role": "system", "content": "Translate the user's words into French."}, {"role": "user", "content": "x"}]
    native(app)
    post(client, seeded.key, {"model": "gpt-4o-mini:translator", "input": "x", "instructions": "mine"})
    assert upstream.last["body"]["instructions"] == "Translate the user's words into French."


def test_prompt_variables_fill_the_stored_prompt(app, client, seeded, upstream):
    _change(app, lambda: manage.create_prompt("t", "tr", "Translate into {{lang}}.", variables={"lang": "French"}))
    body = {"model": "gpt-4o-mini:tr", "input": "x", "prompt_variables": {"lang": "German"}}
    assert post(client, seeded.key, body).status_code == 200
    assert upstream.last["body"]["messages"][0] == {"role": "system", "content": "Translate into German."}
    assert "prompt_variables" not in upstream.last["body"]
    native(app)
    post(client, seeded.key, body)
    assert upstream.last["body"]["instructions"] == "Translate into German."
    assert "prompt_variables" not in upstream.last["body"]
    body.pop("prompt_variables")
    post(client, seeded.key, body)
    assert upstream.last["body"]["instructions"] == "Translate into French."


# -- stored state --------------------------------------------------------------------------------------
def test_store_false_is_not_kept(sdk, upstream):
    resp = sdk.responses.create(model="gpt-4o-mini", input="Hi", store=False)
    assert resp.output_text == "Bonjour!" and resp.store is False
    with pytest.raises(openai.NotFoundError) as info:
        sdk.responses.retrieve(resp.id)
    assert info.value.status_code == 404
    assert info.value.body == {"message": f"Response with id '{resp.id}' not found.", "type": "invalid_request_error",
                               "param": "response_id", "code": "response_not_found"}
    with pytest.raises(openai.NotFoundError) as info:
        sdk.responses.create(model="gpt-4o-mini", input="x", previous_response_id=resp.id)
    assert info.value.body["param"] == "previous_response_id"
    assert info.value.body["message"] == f"Previous response with id '{resp.id}' not found."


def test_input_items_order_and_limit(client, seeded, upstream):
    items = [{"role": "user", "content": f"line {n}"} for n in range(3)]
    resp = post(client, seeded.key, {"model": "gpt-4o-mini", "input": items})
    rid = resp.get_json()["id"]
    auth = {"Authorization": f"Bearer {seeded.key}"}
    listed = client.get(f"/v1/responses/{rid}/input_items", headers=auth).get_json()
    texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in listed["data"]]
    assert texts == ["line 2", "line 1", "line 0"]
    assert listed["object"] == "list" and listed["has_more"] is False
    assert (listed["first_id"], listed["last_id"]) == (listed["data"][0]["id"], listed["data"][-1]["id"])
    asc = client.get(f"/v1/responses/{rid}/input_items?order=asc&limit=2", headers=auth).get_json()
    assert [i["id"] for i in asc["data"]] == [listed["data"][2]["id"], listed["data"][1]["id"]]
    missing = client.get("/v1/responses/resp_nope/input_items", headers=auth)
    assert missing.status_code == 404
    assert missing.get_json() == error("response_not_found", "Response with id 'resp_nope' not found.",
                                       "response_id")


def test_delete_answers_deleted_then_404(client, seeded, upstream):
    rid = post(client, seeded.key, {"model": "gpt-4o-mini", "input": "x"}).get_json()["id"]
    auth = {"Authorization": f"Bearer {seeded.key}"}
    resp = client.delete(f"/v1/responses/{rid}", headers=auth)
    assert resp.status_code == 200 and resp.get_json() == {"id": rid, "object": "response", "deleted": True}
    again = client.delete(f"/v1/responses/{rid}", headers=auth)
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "response_not_found"


def test_stored_routes_need_a_key(client, seeded):
    for method, path in (("get", "/v1/responses/resp_x"), ("delete", "/v1/responses/resp_x"),
                         ("get", "/v1/responses/resp_x/input_items")):
        resp = getattr(client, method)(path)
        assert resp.status_code == 401, path
        assert resp.get_json()["error"]["type"] == "invalid_request_error"


# -- input_tokens --------------------------------------------------------------------------------------
def test_input_tokens_counts_the_stored_prompt(client, seeded, upstream):
    bare = post(client, seeded.key, {"model": "gpt-4o-mini", "input": "Good morning"}, "/v1/responses/input_tokens")
    with_prompt = post(client, seeded.key, {"model": "gpt-4o-mini:translator", "input": "Good morning"},
                       "/v1/responses/input_tokens")
    assert bare.status_code == with_prompt.status_code == 200
    assert bare.get_json()["object"] == "response.input_tokens"
    assert with_prompt.get_json()["input_tokens"] > bare.get_json()["input_tokens"] > 0
    assert upstream.requests == []


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,param,message", [
    ({"model": "gpt-4o-mini"}, "input", "You must provide an `input` (a string or an array of items)."),
    ({"model": "gpt-4o-mini", "input": 5}, "input", "You must provide an `input` (a string or an array of items)."),
    ({"model": "gpt-4o-mini", "input": "x", "previous_response_id": 7}, "previous_response_id",
     "`previous_response_id` must be a string."),
])
def test_bad_request_is_400_naming_the_param(client, seeded, upstream, app, body, param, message):
    resp = post(client, seeded.key, body)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["param"] == param and resp.get_json()["error"]["message"] == message
    assert resp.get_json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []
    [row] = log_rows(app)
    assert (row.status, row.endpoint) == (400, "/v1/responses")


def test_unknown_model_is_404(client, seeded, upstream):
    resp = post(client, seeded.key, {"model": "nope", "input": "x"})
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "model_not_found"


def test_mid_stream_upstream_failure_is_response_failed(live, seeded, upstream, app):
    frame = f"data: {json.dumps(chunk('m', 'Bon'))}\n\n"
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"}, iter([frame, None]))
    resp = requests.post(live + "/v1/responses", json={"model": "gpt-4o-mini", "input": "Hi", "stream": True},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=30)
    assert resp.status_code == 200
    events = sse_events(resp.content)
    names = [name for name, _ in events]
    assert names[0] == "response.created" and names.count("response.output_text.delta") == 1
    assert "response.completed" not in names
    name, last = events[-1]
    assert name == last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "upstream_disconnect",
                                         "message": "The upstream connection failed in the middle of the stream."}
    [row] = settled_rows(app)
    assert (row.status, row.error_type, row.stream, row.usage_estimated) == (502, "upstream_disconnect", True, True)


def test_rpm_limit_applies(client, seeded, upstream, app):
    _change(app, lambda: manage.update_user("t", manage.get_user("alice"), rpm=1))
    assert post(client, seeded.key, {"model": "gpt-4o-mini", "input": "x"}).status_code == 200
    resp = post(client, seeded.key, {"model": "gpt-4o-mini", "input": "x"})
    assert resp.status_code == 429
    err = resp.get_json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("requests", "rate_limit_exceeded", None)
    assert err["message"].startswith("Rate limit reached for your user on requests per min (RPM): Limit 1.")
    assert resp.headers["x-ratelimit-remaining-requests"] == "0" and "Retry-After" in resp.headers
    assert len(upstream.requests) == 1


# -- Anthropic upstream --------------------------------------------------------------------------------
def test_anthropic_provider_through_responses(sdk, claude, claude_model, app):
    resp = sdk.responses.create(model=f"{claude_model}:translator", input="Good morning", instructions="Be brief.")
    assert resp.status == "completed" and resp.output_text and resp.model == "claude"
    sent = claude.last
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"][0]["text"] == "Translate the user's words into French."
    assert sent["body"]["messages"][-1]["role"] == "user"
    [row] = settled_rows(app)
    assert (row.status, row.model, row.endpoint) == (200, "claude", "/v1/responses")
    assert row.input_tokens and row.output_tokens and row.cost


# -- dashboard -----------------------------------------------------------------------------------------
def test_dashboard_request_detail_shows_a_responses_row(dashboard, client, seeded, upstream, app):
    post(client, seeded.key, {"model": "gpt-4o-mini:translator", "input": "Good morning"})
    [row] = log_rows(app)
    page = dashboard.get(f"/admin/requests/{row.id}")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "/v1/responses" in body and "translator" in body and "gpt-4o-mini" in body



def _native_stream_cut(live, seeded, upstream, app) -> list[tuple[str, dict]]:
    """A native stream whose upstream connection drops after the first text delta."""
    native(app)
    events = responses_events("m")[:5]
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"}, iter([*responses_sse(events), None]))
    resp = requests.post(live + "/v1/responses", json={"model": "gpt-4o-mini", "input": "Hi", "stream": True},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=30)
    assert resp.status_code == 200
    [row] = settled_rows(app)
    assert (row.status, row.error_type, row.stream) == (502, "upstream_disconnect", True)
    return sse_events(resp.content)


def test_native_mid_stream_error_carries_its_code(live, seeded, upstream, app):
    name, data = _native_stream_cut(live, seeded, upstream, app)[-1]
    assert name == data["type"] == "response.failed"
    assert data["response"]["status"] == "failed" and data["response"]["error"]["code"] == "upstream_disconnect"


def test_native_mid_stream_failure_is_response_failed(live, seeded, upstream, app):
    events = _native_stream_cut(live, seeded, upstream, app)
    assert events[0][0] == "response.created" and events[-1][0] == "response.failed"


# -- what the docs promise about translation -----------------------------------------------------------
def test_reasoning_effort_only_with_the_provider_flag(app, client, seeded, upstream):
    body = {"model": "gpt-4o-mini", "input": "x", "reasoning": {"effort": "high"}}
    assert post(client, seeded.key, body).status_code == 200
    assert "reasoning_effort" not in upstream.last["body"] and "reasoning" not in upstream.last["body"]
    _change(app, lambda: manage.update_provider("t", manage.get_provider("local"), reasoning_effort=True))
    assert post(client, seeded.key, body).status_code == 200
    assert upstream.last["body"]["reasoning_effort"] == "high"


def test_web_search_is_dropped_while_optional_and_refused_when_forced(client, seeded, upstream):
    tools = [{"type": "web_search"}, {"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    resp = post(client, seeded.key, {"model": "gpt-4o-mini", "input": "x", "tools": tools})
    assert resp.status_code == 200
    assert [t["function"]["name"] for t in upstream.last["body"]["tools"]] == ["lookup"]
    sent = len(upstream.requests)
    resp = post(client, seeded.key, {"model": "gpt-4o-mini", "input": "x", "tools": tools,
                                     "tool_choice": {"type": "web_search"}})
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["param"] == "tools[0].type" and "web_search" in err["message"]
    assert len(upstream.requests) == sent


def test_native_provider_gets_every_tool_as_sent(app, client, seeded, upstream):
    native(app)
    tools = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]
    assert post(client, seeded.key, {"model": "gpt-4o-mini", "input": "x", "tools": tools}).status_code == 200
    assert upstream.last["body"]["tools"] == tools
