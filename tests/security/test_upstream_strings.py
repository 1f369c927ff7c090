"""Issue 25, items 1 and 2: an upstream's key in an error's message, type, code or param reaches no one.

One table of cases: every inbound route that calls an upstream × every upstream kind that can serve it (OpenAI-
compatible, Anthropic, native Responses) × whole and streamed × how the upstream reports the error (an HTTP error,
or an error inside a 200 answer or stream: OpenAI `error` chunks, Anthropic `event: error`, Responses `error`,
`response.failed` and `response.incomplete`). The table is checked against the routes the app registers and the
provider kinds it knows, so a new dialect or provider kind without rows fails here.

Each case checks the client's answer (no key, not even 8 characters of it; the dialect's status and error shape),
the request-log row, the member's /admin/requests list, detail and CSV, `promptproxy log`, the access log and /metrics.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import requests
from click.testing import CliRunner
from flask.cli import ScriptInfo

from promptproxy import manage
from promptproxy.cli import cli
from promptproxy.dialects.envelopes import ANTHROPIC_TYPES
from promptproxy.extensions import db
from promptproxy.providers import ADAPTERS, KINDS
from promptproxy.routing.resilience import RetryPolicy

from ..admin.conftest import MEMBER_PW, cheap_hash, login
from ..anthropic_upstream import fixture_sse
from ..conftest import rows_when
from ..upstream import chunk, responses_answer, responses_events, responses_sse

# All lowercase, digits and dashes: it is itself a valid identifier, so only scrubbing keeps it out of `type`/`code`.
KEY = "sk-live-7f3k9q2m8x4v6b1n5c0z"
LEAK = f"Incorrect API key provided: {KEY} (also {KEY.upper()[3:21]})."
IDENTIFIER = re.compile(r"[a-z0-9_.-]{1,64}")
OPENAI_ERROR = {"message": LEAK, "type": KEY, "code": KEY, "param": KEY}
ANTHROPIC_ERROR = {"type": "error", "error": {"type": KEY, "message": LEAK}}
USER = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Route:
    """An inbound route: its path, error envelope, the adapter endpoint it needs, and who can serve it."""

    path: str
    envelope: str  # openai, anthropic or responses (OpenAI's envelope, response.failed in streams)
    endpoint: str  # the adapter endpoint a provider must serve for this route to reach it
    model: str  # the model slug the case asks for
    body: dict
    upstreams: tuple[str, ...]
    streams: bool


@dataclass(frozen=True)
class Upstream:
    """An upstream kind: the provider kind, whether it speaks the Responses API, its in-band error forms."""

    kind: str
    responses_api: bool
    inband: tuple[str, ...]


UPSTREAMS = {
    "openai": Upstream("openai", False, ("error",)),
    "anthropic": Upstream("anthropic", False, ("error",)),
    "responses": Upstream("openai", True, ("error", "failed", "incomplete")),
}
ROUTES = {
    "api.chat_completions": Route("/v1/chat/completions", "openai", "chat", "leaky-chat", {"messages": USER},
                                  ("openai", "anthropic"), True),
    "api.completions": Route("/v1/completions", "openai", "completion", "leaky-text",
                             {"prompt": "hi", "max_tokens": 5}, ("openai",), True),
    "api.embeddings": Route("/v1/embeddings", "openai", "embedding", "leaky-embed", {"input": "hi"}, ("openai",),
                            False),
    "api.messages": Route("/v1/messages", "anthropic", "chat", "leaky-chat", {"max_tokens": 20, "messages": USER},
                          ("openai", "anthropic"), True),
    "api.count_tokens": Route("/v1/messages/count_tokens", "anthropic", "count_tokens", "leaky-chat",
                              {"messages": USER}, ("anthropic",), False),
    "api.create_response": Route("/v1/responses", "responses", "chat", "leaky-chat", {"input": "hi"},
                                 ("openai", "anthropic", "responses"), True),
}
# POST routes under /v1 that never reach an upstream, and why.
LOCAL = {"api.input_tokens": "counted by the gateway itself (tiktoken); no upstream is called"}


@dataclass(frozen=True)
class Case:
    route: str
    upstream: str
    stream: bool
    form: str  # http (an HTTP 400), or an in-band form of the upstream kind

    @property
    def id(self) -> str:
        return f"{self.route.removeprefix('api.')}-{self.upstream}-{'stream' if self.stream else 'whole'}-{self.form}"


CASES = [Case(name, upstream, stream, form)
         for name, route in ROUTES.items() for upstream in route.upstreams
         for stream in ((False, True) if route.streams else (False,))
         for form in ("http", *UPSTREAMS[upstream].inband)]


# -- the table covers the app ----------------------------------------------------------------------
def test_the_table_covers_every_inbound_route_the_app_registers(app):
    posted = {rule.endpoint for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/v1/") and "POST" in rule.methods}
    assert posted == set(ROUTES) | set(LOCAL), "a new /v1 route needs rows in ROUTES (or a reason in LOCAL)"


def test_the_table_covers_every_provider_kind_on_every_route_it_can_serve():
    assert {u.kind for u in UPSTREAMS.values()} == set(KINDS)
    for name, route in ROUTES.items():
        served = {kind for kind in KINDS if route.endpoint in ADAPTERS[kind].endpoints}
        assert served <= {UPSTREAMS[u].kind for u in route.upstreams}, name
    assert len({case.id for case in CASES}) == len(CASES)


# -- what the upstream answers ---------------------------------------------------------------------
def sse(frames) -> tuple[int, dict, object]:
    return 200, {"Content-Type": "text/event-stream"}, iter(frames)


def data(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def answer(status: int, body) -> tuple[int, dict, str]:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


def failed_response(model: str) -> dict:
    return {**responses_answer(model), "status": "failed", "output": [], "error": {"code": KEY, "message": LEAK}}


def incomplete_response(model: str) -> dict:
    return {**responses_answer(model), "status": "incomplete", "incomplete_details": {"reason": KEY}}


def openai_stream(req) -> tuple:
    """A chat or completion stream that sends some text, then an error chunk carrying the key."""
    model = req["body"]["model"]
    if req["path"].endswith("/chat/completions"):
        head = [chunk(model, "", role=True), chunk(model, "Bon")]
    else:
        head = [{"id": "cmpl-1", "object": "text_completion", "model": model,
                 "choices": [{"index": 0, "text": "Bon", "finish_reason": None}]}]
    return sse([*map(data, head), data({"error": OPENAI_ERROR})])


def responses_stream(req, form: str) -> tuple:
    """A Responses stream that sends some text, then the form's closing event carrying the key."""
    model = req["body"]["model"]
    last = {"error": {"type": "error", "code": KEY, "message": LEAK, "param": KEY},
            "failed": {"type": "response.failed", "response": failed_response(model)},
            "incomplete": {"type": "response.incomplete", "response": incomplete_response(model)}}[form]
    return sse(responses_sse([*responses_events(model)[:5], {**last, "sequence_number": 5}]))


def handler(case: Case):
    """The fake upstream's answer for the case."""
    def respond(req):
        upstream, form, stream = case.upstream, case.form, case.stream
        if form == "http":
            return answer(400, ANTHROPIC_ERROR if upstream == "anthropic" else {"error": OPENAI_ERROR})
        if upstream == "anthropic":
            if stream:
                return sse([*fixture_sse("anthropic_stream_text.sse")[:4],
                            f"event: error\ndata: {json.dumps(ANTHROPIC_ERROR)}\n\n"])
            return answer(200, ANTHROPIC_ERROR)
        if upstream == "responses" and form != "error" and not stream:
            make = failed_response if form == "failed" else incomplete_response
            return answer(200, make(req["body"]["model"]))
        if not stream:
            return answer(200, {"error": OPENAI_ERROR})
        return responses_stream(req, form) if upstream == "responses" else openai_stream(req)
    return respond


# -- what the client, the log and the dashboard must show ------------------------------------------
def leaks(text: str) -> list[str]:
    """Every 8-character run of the key found in the text, in any letter case."""
    low = text.lower()
    return [KEY[i:i + 8] for i in range(len(KEY) - 7) if KEY[i:i + 8].lower() in low]


def assert_clean(text: str, where: str) -> None:
    found = leaks(text)
    assert not found, f"{where} shows the upstream key ({found[:3]}): {text[:2000]}"


def expected_status(case: Case) -> int:
    if case.form == "http":
        return 400  # the upstream's own status
    if case.stream or case.form in ("failed", "incomplete"):
        return 200  # the error travels inside the answer
    return 502  # a 200 whose body is an error is an answer the gateway cannot use


def events(text: str) -> list[tuple[str | None, object]]:
    """(event name, data) of an SSE body; data is JSON, or the string [DONE]."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            out.append((fields.get("event"), fields["data"] if fields["data"] == "[DONE]"
                        else json.loads(fields["data"])))
    return out


def check_openai_error(err: dict) -> None:
    assert set(err) == {"message", "type", "param", "code"}, err
    assert IDENTIFIER.fullmatch(err["type"]) and (err["code"] is None or IDENTIFIER.fullmatch(err["code"])), err


def check_anthropic_error(body: dict) -> None:
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] in ANTHROPIC_TYPES.values(), body


def check_response_error(response: dict, form: str) -> None:
    """A Response that failed (or stopped) carries only the gateway's codes and scrubbed words."""
    if form == "incomplete":
        assert response["status"] == "incomplete"
        reason = (response.get("incomplete_details") or {}).get("reason")
        assert reason is None or IDENTIFIER.fullmatch(reason), response["incomplete_details"]
        return
    assert response["status"] == "failed" and set(response["error"]) == {"code", "message"}, response
    assert IDENTIFIER.fullmatch(response["error"]["code"]), response["error"]


def check_shape(resp: requests.Response, case: Case) -> None:
    """The status and error shape are the dialect's."""
    envelope = ROUTES[case.route].envelope
    assert resp.status_code == expected_status(case), resp.text[:2000]
    if resp.status_code != 200:
        assert resp.headers["content-type"].startswith("application/json")
        body = resp.json()
        check_anthropic_error(body) if envelope == "anthropic" else check_openai_error(body["error"])
    elif case.stream:
        assert resp.headers["content-type"].startswith("text/event-stream")
        seen = [(name, value) for name, value in events(resp.text) if value != "[DONE]"]
        name, last = seen[-1]
        if envelope == "openai":
            check_openai_error(last["error"])
        elif envelope == "anthropic":
            assert name == "error"
            check_anthropic_error(last)
        else:
            assert name == last["type"] == ("response.incomplete" if case.form == "incomplete" else "response.failed")
            check_response_error(last["response"], case.form)
    else:
        check_response_error(resp.json(), case.form)
    if case.form == "http" or case.form == "failed" or (case.stream and case.form == "error"):
        # The upstream's words still reach the client, with the key cut out (scrubbed, not dropped).
        assert "Incorrect API key provided: [redacted]" in resp.text, resp.text[:2000]


def check_log(app, case: Case, request_id: str) -> None:
    """The row, the member's dashboard pages and CSV, and `promptproxy log` show no key."""
    [row] = rows_when(app, 1)
    assert row.request_id == request_id
    for column in row.__table__.columns:
        value = getattr(row, column.name)
        if isinstance(value, str):
            assert_clean(value, f"request log column {column.name}")
    assert row.error_type is None or IDENTIFIER.fullmatch(row.error_type), row.error_type
    if case.form not in ("failed", "incomplete"):
        assert row.status >= 400 and row.error_type and row.error_message
    web = app.test_client()
    assert login(web, "alice@example.com", MEMBER_PW).status_code in (302, 303)
    for url in ("/admin/requests", f"/admin/requests/{row.id}", "/admin/requests.csv"):
        page = web.get(url)
        assert page.status_code == 200, url
        text = page.get_data(as_text=True)
        assert (f"/admin/requests/{row.id}" if url == "/admin/requests" else ROUTES[case.route].model) in text, url
        assert_clean(text, url)
    runner = CliRunner()
    for args in (["log"], ["log", "--json"]):
        out = runner.invoke(cli, args, obj=ScriptInfo(create_app=lambda: app))
        assert out.exit_code == 0 and ROUTES[case.route].model in out.output, out.output
        assert_clean(out.output, "promptproxy " + " ".join(args))


@pytest.fixture
def leaky(request, app, seeded):
    """Provider `leaky` of the case's upstream kind (key KEY), its models, and alice able to log in."""
    case: Case = request.param
    kind = UPSTREAMS[case.upstream]
    server = request.getfixturevalue("claude" if kind.kind == "anthropic" else "upstream")
    base = server.url if kind.kind == "anthropic" else server.url + "/v1"
    with app.app_context():
        provider = manage.create_provider("t", "leaky", kind.kind, base, api_key=KEY,
                                          responses_api=kind.responses_api)
        manage.create_model("t", "leaky-chat", provider, "upstream-chat")
        if kind.kind == "openai":
            manage.create_model("t", "leaky-text", provider, "upstream-text", kind="completion")
            manage.create_model("t", "leaky-embed", provider, "upstream-embed", kind="embedding")
        manage.get_user("alice").password_hash = cheap_hash(MEMBER_PW)
        db.session.commit()
    app.extensions["promptproxy"].retry = RetryPolicy(max_retries=0)  # one upstream call per request
    server.handler = handler(case)
    request.node.fake_upstream = server  # for tests that answer differently
    return case


@pytest.mark.parametrize("leaky", CASES, ids=[case.id for case in CASES], indirect=True)
def test_an_upstream_key_in_an_error_reaches_no_client_and_no_log(app, live, seeded, leaky, caplog):
    case, route = leaky, ROUTES[leaky.route]
    body = {"model": route.model, **route.body, **({"stream": True} if case.stream else {})}
    resp = requests.post(live + route.path, json=body, headers={"Authorization": f"Bearer {seeded.key}"},
                         timeout=30)
    assert_clean(resp.text, "the client's answer")
    assert_clean(json.dumps(dict(resp.headers)), "the client's headers")
    check_shape(resp, case)
    check_log(app, case, resp.headers["x-request-id"])
    assert_clean(caplog.text, "the gateway's own log lines (access log)")
    metrics = requests.get(live + "/metrics", timeout=30)
    assert metrics.status_code == 200 and "promptproxy_requests" in metrics.text
    assert_clean(metrics.text, "/metrics")


NOT_NAMES = {"openai": {"error": {"message": "The upstream says no.", "type": {"kind": KEY, "n": [1, 2]},
                                  "code": f"Not a name {KEY}", "param": ["list"]}},
             "anthropic": {"type": "error", "error": {"type": {"kind": KEY}, "message": "The upstream says no."}}}


@pytest.mark.parametrize("leaky", [Case("api.chat_completions", "openai", False, "http"),
                                   Case("api.chat_completions", "anthropic", False, "http")],
                         ids=["openai", "anthropic"], indirect=True)
def test_error_names_that_are_not_identifiers_give_way_to_the_gateways_own(request, app, live, seeded, leaky):
    request.node.fake_upstream.handler = lambda req: answer(400, NOT_NAMES[leaky.upstream])
    resp = requests.post(live + "/v1/chat/completions", json={"model": "leaky-chat", "messages": USER},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": {"message": "The upstream says no.", "type": "invalid_request_error",
                                     "param": None, "code": "upstream_error"}}
    [row] = rows_when(app, 1)
    assert (row.status, row.error_type, row.error_message) == (400, "upstream_error", "The upstream says no.")
