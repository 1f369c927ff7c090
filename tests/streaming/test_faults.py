"""Upstream faults before and after the first byte: the exact bytes the client gets and the row written."""
from __future__ import annotations

import json

import pytest

from promptproxy.core.usage import count_tokens

from ..faults import blackhole, refused_url
from ..upstream import chunk
from .conftest import events, one_row, post, tune

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


def error_body(message: str, code: str, typ: str = "server_error") -> dict:
    """The OpenAI error object the client must receive."""
    return {"error": {"message": message, "type": typ, "param": None, "code": code}}


def in_band(message: str, code: str) -> bytes:
    """The in-band error event followed by the end marker."""
    return b"data: " + json.dumps(error_body(message, code), separators=(",", ":")).encode() + \
        b"\n\ndata: [DONE]\n\n"


def sse(*parts):
    """A streaming handler answering these raw parts (str, sleeps as numbers, None to abort)."""
    return lambda req: (200, {"Content-Type": "text/event-stream"}, iter(parts))


def frame(model: str, text: str) -> str:
    return f"data: {json.dumps(chunk(model, text))}\n\n"


@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["json", "stream"])
def test_refused_connection_is_502_upstream_unavailable_after_retries(live, seeded, app, body):
    tune(app, base_url=refused_url(), api_key="sk-x")
    resp = post(live, seeded.key, body)
    assert resp.status_code == 502
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == error_body("The upstream could not be reached.", "upstream_unavailable")
    row = one_row(app)
    assert (row.status, row.error_type, row.stream) == (502, "upstream_unavailable", body is STREAM)
    assert row.input_tokens is None and row.output_tokens is None and row.cost is None


def test_connect_timeout_is_504(live, seeded, app):
    with blackhole() as url:
        tune(app, base_url=url, api_key="sk-x", connect_timeout=0.2)
        app.extensions["promptproxy"].retry = type(app.extensions["promptproxy"].retry)(max_retries=0)
        resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 504
    assert resp.json() == error_body("The upstream did not accept the connection in time.", "upstream_timeout")
    assert (one_row(app).status, one_row(app).error_type) == (504, "upstream_timeout")


def test_slow_first_byte_is_504_and_not_retried(live, seeded, upstream, app):
    tune(app, first_byte_timeout=0.2)
    upstream.delay = 1.0
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 504
    assert resp.json() == error_body("The upstream did not answer in time.", "upstream_timeout")
    assert len(upstream.requests) == 1  # the upstream may still be working on it: no duplicate spend
    row = one_row(app)
    assert (row.status, row.error_type, row.input_tokens) == (504, "upstream_timeout", None)


def test_stall_mid_stream_ends_with_an_in_band_error_and_partial_usage(live, seeded, upstream, app):
    tune(app, idle_timeout=0.2)
    upstream.handler = sse(frame("m", "Bon"), frame("m", "jour"), 2.0, frame("m", "late"), "data: [DONE]\n\n")
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 200
    first, second = (json.dumps({**chunk("gpt-4o-mini", t)}, separators=(",", ":")) for t in ("Bon", "jour"))
    assert resp.content == (f"data: {first}\n\ndata: {second}\n\n".encode()
                            + in_band("The upstream stopped sending in the middle of the stream.",
                                      "upstream_timeout"))
    row = one_row(app)
    assert (row.status, row.error_type, row.usage_estimated) == (504, "upstream_timeout", True)
    assert row.output_tokens == count_tokens("Bonjour") and row.input_tokens > 0


def test_total_deadline_ends_a_trickling_stream(live, seeded, upstream, app):
    tune(app, total_timeout=2.0, idle_timeout=5)  # 2 s: a loaded machine may take 1 s to first byte
    upstream.handler = sse(*([frame("m", "x"), 0.1] * 50), "data: [DONE]\n\n")
    resp = post(live, seeded.key, STREAM)
    assert resp.content.endswith(in_band("The upstream stream exceeded the total time limit.", "upstream_timeout"))
    assert one_row(app).error_type == "upstream_timeout"


def test_5xx_is_retried_then_passed_on(live, seeded, upstream, app):
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"},
                                    json.dumps({"error": {"message": "boom at http://10.0.0.5 sk-upstream-secret-1234",
                                                          "type": "server_error"}}))
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 500
    assert resp.json() == {"error": {"message": "boom at http://10.0.0.5 [redacted]", "type": "server_error",
                                     "param": None, "code": "upstream_error"}}
    assert len(upstream.requests) == 3  # one try and two retries
    assert (one_row(app).status, one_row(app).error_type) == (500, "upstream_error")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529, 408])
def test_one_retryable_failure_then_success(live, seeded, upstream, app, status):
    default = upstream.default
    answers = iter([(status, {"Content-Type": "application/json"}, "{}")])
    upstream.handler = lambda req: next(answers, None) or default(req)
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 200 and events(resp.content)[-1] == "[DONE]"
    assert len(upstream.requests) == 2
    assert (one_row(app).status, one_row(app).error_type) == (200, None)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_never_retried(live, seeded, upstream, app, status):
    upstream.handler = lambda req: (status, {"Content-Type": "application/json"},
                                    json.dumps({"error": {"message": "nope", "type": "invalid_request_error"}}))
    resp = post(live, seeded.key, STREAM)
    assert len(upstream.requests) == 1
    if status in (401, 403):
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] == "upstream_auth_failed"
    else:
        assert resp.status_code == status
        assert resp.json() == {"error": {"message": "nope", "type": "invalid_request_error", "param": None,
                                         "code": "upstream_error"}}
    assert one_row(app).status == resp.status_code


def test_429_with_a_long_retry_after_is_passed_on_at_once(live, seeded, upstream, app):
    upstream.handler = lambda req: (429, {"Content-Type": "application/json", "Retry-After": "30"},
                                    json.dumps({"error": {"message": "slow down", "type": "rate_limit_exceeded"}}))
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "30"
    assert resp.json()["error"]["message"] == "slow down"
    assert len(upstream.requests) == 1
    assert one_row(app).status == 429


def test_429_with_a_short_retry_after_is_retried(live, seeded, upstream, app):
    default = upstream.default
    answers = iter([(429, {"retry-after-ms": "20", "Retry-After": "1"}, "{}")])
    upstream.handler = lambda req: next(answers, None) or default(req)
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 200
    assert "Retry-After" not in resp.headers  # only the answer that served is passed on
    assert len(upstream.requests) == 2


def test_malformed_json_mid_stream_is_an_in_band_error(live, seeded, upstream, app):
    upstream.handler = sse(frame("m", "Bon"), "data: {not json\n\n", "data: [DONE]\n\n")
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 200
    assert resp.content.endswith(in_band("The upstream sent a stream the gateway could not understand.",
                                         "bad_upstream_response"))
    assert events(resp.content)[0]["choices"][0]["delta"]["content"] == "Bon"
    row = one_row(app)
    assert (row.status, row.error_type, row.output_tokens) == (502, "bad_upstream_response", 1)


def test_malformed_first_event_is_a_plain_json_error(live, seeded, upstream, app):
    upstream.handler = sse("data: <html>\n\n")
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 502
    assert resp.json() == error_body("The upstream sent a stream the gateway could not understand.",
                                     "bad_upstream_response")


def test_malformed_json_body_is_502(live, seeded, upstream, app):
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"}, '{"choices": [')
    resp = post(live, seeded.key, CHAT)
    assert resp.status_code == 502
    assert resp.json() == error_body("The upstream sent a response the gateway could not understand.",
                                     "bad_upstream_response")
    row = one_row(app)
    assert (row.error_type, row.input_tokens, row.output_tokens) == ("bad_upstream_response", None, None)


@pytest.mark.parametrize("ending", ["eof", "reset"])
def test_truncated_stream_is_an_in_band_upstream_disconnect(live, seeded, upstream, app, ending):
    parts = [frame("m", "Bon")] + ([None] if ending == "reset" else [])
    upstream.handler = sse(*parts)
    resp = post(live, seeded.key, STREAM)
    message = ("The upstream ended the stream before it was complete." if ending == "eof"
               else "The upstream connection failed in the middle of the stream.")
    assert resp.content.endswith(in_band(message, "upstream_disconnect"))
    row = one_row(app)
    assert (row.status, row.error_type, row.output_tokens, row.usage_estimated) == \
        (502, "upstream_disconnect", 1, True)


def test_in_band_upstream_error_is_relayed_scrubbed(live, seeded, upstream, app):
    upstream.handler = sse(frame("m", "Bon"), 'data: {"error": {"message": "overloaded sk-upstream-secret-1234"}}\n\n')
    resp = post(live, seeded.key, STREAM)
    assert resp.content.endswith(in_band("overloaded [redacted]", "upstream_error"))


@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["json", "stream"])
def test_wrong_content_type_is_502(live, seeded, upstream, app, body):
    upstream.handler = lambda req: (200, {"Content-Type": "text/html"}, "<html><body>Bad gateway</body></html>")
    resp = post(live, seeded.key, body)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "bad_upstream_response"
    assert b"<html>" not in resp.content
    assert len(upstream.requests) == 1
    assert (one_row(app).status, one_row(app).error_type) == (502, "bad_upstream_response")


def test_oversized_stream_is_cut_with_an_in_band_error(live, seeded, upstream, app):
    app.extensions["promptproxy"].max_response_bytes = 4000
    upstream.handler = sse(*[frame("m", "x" * 100) for _ in range(200)], "data: [DONE]\n\n")
    resp = post(live, seeded.key, STREAM)
    assert len(resp.content) < 8000
    assert resp.content.endswith(in_band("The upstream stream exceeded the gateway's response size limit.",
                                         "bad_upstream_response"))
    row = one_row(app)
    assert (row.status, row.error_type) == (502, "bad_upstream_response") and row.output_tokens > 0


def test_oversized_body_is_502(live, seeded, upstream, app):
    app.extensions["promptproxy"].max_response_bytes = 4000
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"},
                                    json.dumps({"choices": [{"message": {"content": "x" * 10000}}]}))
    resp = post(live, seeded.key, CHAT)
    assert resp.status_code == 502
    assert resp.json() == error_body("The upstream response was too large.", "bad_upstream_response")


def test_upstream_redirect_is_not_followed(live, seeded, upstream, app):
    upstream.handler = lambda req: (302, {"Location": "http://169.254.169.254/"}, "")
    resp = post(live, seeded.key, STREAM)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "bad_upstream_response"
    assert len(upstream.requests) == 1


def test_sse_parser_survives_utf8_split_across_reads(live, seeded, upstream, app):
    data = ("data: " + json.dumps(chunk("m", "héllo"), ensure_ascii=False) + "\n\n").encode()
    cut = data.index("é".encode()) + 1
    upstream.handler = sse(data[:cut], 0.05, data[cut:], "data: [DONE]\n\n")
    resp = post(live, seeded.key, STREAM)
    assert events(resp.content)[0]["choices"][0]["delta"]["content"] == "héllo"
