"""A native Responses upstream that reports `status: failed` (whole) or `response.failed` (streamed): the client gets
the Response as relayed (scrubbed), and the request-log row records the failure as the translated path does (502,
the scrubbed code or `upstream_error`, the scrubbed message). `completed` and `incomplete` stay 200."""
from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner
from flask.cli import ScriptInfo

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.extensions import db

from ..admin.conftest import MEMBER_PW, cheap_hash, login
from ..conftest import rows_when
from ..upstream import responses_answer, responses_events, responses_sse

SECRET = "sk-upstream-secret-1234"  # the seeded provider's key
CRASH = f"The model crashed (key {SECRET})."
SCRUBBED = "The model crashed (key [redacted])."


@pytest.fixture
def native(app, seeded):
    """The seeded `local` provider speaks the Responses API; alice can log in to the dashboard."""
    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), responses_api=True)
        manage.get_user("alice").password_hash = cheap_hash(MEMBER_PW)
        db.session.commit()
    app.extensions["promptproxy"].catalog.invalidate()
    return seeded


def failed(model: str, error) -> dict:
    return {**responses_answer(model), "status": "failed", "output": [], "error": error}


def incomplete(model: str) -> dict:
    return {**responses_answer(model), "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}


def whole(make):
    """The fake upstream answers one JSON Response built from the model it was asked for."""
    return lambda req: (200, {"Content-Type": "application/json"}, json.dumps(make(req["body"]["model"])))


def streamed(last=None):
    """The fake upstream streams some text, then `last(model)` as the closing event (default: response.completed)."""
    def respond(req):
        model = req["body"]["model"]
        events = responses_events(model)
        if last is not None:
            events = [*events[:5], {**last(model), "sequence_number": 5}]
        return 200, {"Content-Type": "text/event-stream"}, iter([*responses_sse(events), None])
    return respond


def post(live, key, stream: bool) -> requests.Response:
    return requests.post(live + "/v1/responses", json={"model": "gpt-4o-mini", "input": "Hi", "stream": stream},
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            out.append((lines.get("event"), json.loads(lines["data"])))
    return out


def the_row(app, resp: requests.Response):
    [row] = rows_when(app, 1)
    assert row.request_id == resp.headers["x-request-id"]
    return row


# -- a failed Response: relayed as it is, recorded as a failure --------------------------------------------------
def test_a_whole_failed_response_reaches_the_client_scrubbed_and_its_row_is_a_502(app, live, native, upstream):
    upstream.handler = whole(lambda model: failed(model, {"code": "server_error", "message": CRASH}))
    resp = post(live, native.key, stream=False)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "failed" and body["output"] == []
    assert body["error"] == {"code": "server_error", "message": SCRUBBED}
    assert body["id"].startswith("resp_") and body["model"] == "gpt-4o-mini"
    row = the_row(app, resp)
    assert (row.status, row.error_type, row.error_message, row.stream) == (502, "server_error", SCRUBBED, False)


def test_a_streamed_response_failed_reaches_the_client_scrubbed_and_its_row_is_a_502(app, live, native, upstream):
    upstream.handler = streamed(lambda model: {"type": "response.failed",
                                               "response": failed(model, {"code": "server_error", "message": CRASH})})
    resp = post(live, native.key, stream=True)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert SECRET not in resp.text
    events = sse_events(resp.text)
    assert [name for name, _ in events] == [e["type"] for e in responses_events("m")[:5]] + ["response.failed"]
    last = events[-1][1]
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "server_error", "message": SCRUBBED}
    assert [e for _, e in events].count(last) == 1  # relayed once; the gateway adds no second response.failed
    row = the_row(app, resp)
    assert (row.status, row.error_type, row.error_message, row.stream) == (502, "server_error", SCRUBBED, True)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("error", [{"code": SECRET, "message": CRASH}, {"message": CRASH},
                                   {"code": "not an identifier!", "message": CRASH}],
                         ids=["secret-code", "no-code", "sentence-code"])
def test_a_failure_without_a_usable_code_is_recorded_as_upstream_error(app, live, native, upstream, stream, error):
    make = lambda model: failed(model, error)  # noqa: E731
    upstream.handler = streamed(lambda model: {"type": "response.failed", "response": make(model)}) if stream \
        else whole(make)
    resp = post(live, native.key, stream=stream)
    assert resp.status_code == 200 and SECRET not in resp.text
    response = sse_events(resp.text)[-1][1]["response"] if stream else resp.json()
    assert response["status"] == "failed" and response["error"]["message"] == SCRUBBED
    row = the_row(app, resp)
    assert (row.status, row.error_type, row.error_message) == (502, "upstream_error", SCRUBBED)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_failure_with_no_message_is_recorded_with_the_gateways_words(app, live, native, upstream, stream):
    make = lambda model: failed(model, None)  # noqa: E731
    upstream.handler = streamed(lambda model: {"type": "response.failed", "response": make(model)}) if stream \
        else whole(make)
    resp = post(live, native.key, stream=stream)
    assert resp.status_code == 200
    row = the_row(app, resp)
    assert (row.status, row.error_type) == (502, "upstream_error")
    assert row.error_message == "The upstream reported that the response failed."


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_the_log_and_the_dashboard_list_a_failed_response_as_an_error(app, live, native, upstream, stream):
    make = lambda model: failed(model, {"code": "server_error", "message": CRASH})  # noqa: E731
    upstream.handler = streamed(lambda model: {"type": "response.failed", "response": make(model)}) if stream \
        else whole(make)
    resp = post(live, native.key, stream=stream)
    row = the_row(app, resp)
    out = CliRunner().invoke(cli, ["log", "--json"], obj=ScriptInfo(create_app=lambda: app))
    assert out.exit_code == 0, out.output
    [entry] = [json.loads(line) for line in out.output.splitlines()]
    assert (entry["status"], entry["error_type"]) == (502, "server_error")
    table = CliRunner().invoke(cli, ["log"], obj=ScriptInfo(create_app=lambda: app))
    assert table.exit_code == 0 and "502" in table.output and "server_error" in table.output, table.output
    web = app.test_client()
    assert login(web, "alice@example.com", MEMBER_PW).status_code in (302, 303)
    errors = web.get("/admin/requests?status=error")
    assert errors.status_code == 200 and f"/admin/requests/{row.id}" in errors.get_data(as_text=True)
    ok = web.get("/admin/requests?status=ok")
    assert ok.status_code == 200 and f"/admin/requests/{row.id}" not in ok.get_data(as_text=True)
    detail = web.get(f"/admin/requests/{row.id}").get_data(as_text=True)
    assert "server_error" in detail and SCRUBBED in detail and SECRET not in detail


# -- completed and incomplete Responses are not failures ---------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_completed_response_stays_a_200(app, live, native, upstream, stream):
    upstream.handler = streamed() if stream else whole(responses_answer)
    resp = post(live, native.key, stream=stream)
    assert resp.status_code == 200
    response = sse_events(resp.text)[-1][1]["response"] if stream else resp.json()
    assert response["status"] == "completed" and response.get("error") is None
    row = the_row(app, resp)
    assert (row.status, row.error_type, row.error_message) == (200, None, None)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_incomplete_response_is_not_a_failure(app, live, native, upstream, stream):
    upstream.handler = streamed(lambda model: {"type": "response.incomplete", "response": incomplete(model)}) \
        if stream else whole(incomplete)
    resp = post(live, native.key, stream=stream)
    assert resp.status_code == 200
    response = sse_events(resp.text)[-1][1]["response"] if stream else resp.json()
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    row = the_row(app, resp)
    assert (row.status, row.error_type, row.error_message) == (200, None, None)
