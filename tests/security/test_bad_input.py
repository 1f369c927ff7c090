"""Bad input is refused in the caller's envelope: 400/413/415/431/404/405, never a 500, HTML or a traceback."""
from __future__ import annotations

import time

import pytest
import requests

from ..conftest import log_rows
from .helpers import raw_http, status_and_body

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LIMIT = 4096
UNKNOWN_KEY = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                         "code": "invalid_api_key"}}


def auth(seeded) -> dict:
    return {"Authorization": f"Bearer {seeded.key}"}


@pytest.fixture
def small_live(app, request):
    """The live server with a 4 KiB body limit (waitress and Flask share the value, as in server.py)."""
    app.config["MAX_BODY_BYTES"] = app.config["MAX_CONTENT_LENGTH"] = LIMIT
    return request.getfixturevalue("live")


def post_raw(base: str, path: str, headers: dict, body: bytes, chunked: bool = False) -> tuple[int, dict, bytes]:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", *(f"{k}: {v}" for k, v in headers.items())]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return status_and_body(raw_http(base, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload))


# -- size ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413_json_with_no_row_and_no_upstream_call(small_live, app, seeded, upstream, chunked):
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * (2 * LIMIT) + b'"}]}'
    status, headers, data = post_raw(small_live, "/v1/chat/completions",
                                     {**auth(seeded), "Content-Type": "application/json"}, body, chunked)
    assert status == 413
    assert headers["content-type"] == "application/json" and headers["x-request-id"].startswith("req_")
    assert requests.models.complexjson.loads(data) == {"error": {
        "message": "The request body is too large.", "type": "invalid_request_error", "param": None,
        "code": "request_too_large"}}
    assert upstream.requests == [] and log_rows(app) == []  # the HTTP server refused it before the app


def test_body_over_the_limit_on_messages_is_413_in_anthropic_shape(small_live, seeded):
    status, headers, data = post_raw(small_live, "/v1/messages", {"x-api-key": seeded.key,
                                                                  "Content-Type": "application/json"},
                                     b"{" + b" " * (2 * LIMIT) + b"}", chunked=True)
    assert status == 413 and headers["request-id"] == headers["x-request-id"]
    assert requests.models.complexjson.loads(data) == {"type": "error", "error": {
        "type": "request_too_large", "message": "The request body is too large."}}


def test_body_at_the_limit_is_served(small_live, seeded, upstream):
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(body) == LIMIT
    status, _, _ = post_raw(small_live, "/v1/chat/completions", {**auth(seeded), "Content-Type": "application/json"},
                            body)
    assert status == 200 and len(upstream.requests) == 1


def test_flask_alone_answers_the_same_413_json(app, client, seeded):
    app.config["MAX_CONTENT_LENGTH"] = LIMIT
    resp = client.post("/v1/chat/completions", data=b"{" + b" " * LIMIT + b"}", headers={
        **auth(seeded), "Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json["error"]["code"] == "request_too_large"


def test_oversized_headers_are_431_json(live, seeded):
    request = (f"GET /v1/models HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {seeded.key}\r\n"
               f"X-Padding: {'a' * 300_000}\r\n\r\n").encode()
    status, headers, data = status_and_body(raw_http(live, request))
    assert status == 431 and headers["content-type"] == "application/json"
    assert requests.models.complexjson.loads(data)["error"]["code"] == "request_header_fields_too_large"


# -- malformed bodies ------------------------------------------------------------------------------
NOT_JSON = {
    "empty": b"", "truncated": b'{"model": "gpt-4o-mini"', "trailing garbage": b'{"model": "x"} x',
    "bom": b'\xef\xbb\xbf{"model": "gpt-4o-mini"}', "not utf-8": b'{"model": "\xff\xfe"}',
    "lone surrogate": b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "nan": b'{"temperature": NaN}', "huge number": b'{"temperature": 1e999999}',
    "deep arrays": b"[" * 50_000 + b"]" * 50_000, "deep objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "single quotes": b"{'model': 'x'}",
}
NOT_OBJECT = {"array": b"[]", "string": b'"hello"', "number": b"42", "null": b"null", "true": b"true"}


@pytest.mark.parametrize("body", list(NOT_JSON.values()) + list(NOT_OBJECT.values()),
                         ids=list(NOT_JSON) + list(NOT_OBJECT))
def test_malformed_json_is_400_invalid_json(client, seeded, upstream, body):
    resp = client.post("/v1/chat/completions", data=body, headers={**auth(seeded), "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.data[:200]
    assert resp.json["error"]["code"] == "invalid_json" and resp.json["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_malformed_json_through_waitress(live, seeded, app):
    for body in (NOT_JSON["deep arrays"], NOT_JSON["bom"], NOT_JSON["huge number"]):
        resp = requests.post(live + "/v1/chat/completions", data=body, timeout=10,
                             headers={**auth(seeded), "Content-Type": "application/json"})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    assert [r.status for r in log_rows(app)] == [400, 400, 400]


WRONG_TYPES = [
    ({"model": 123}, "model"), ({"model": ""}, "model"), ({"model": ["gpt-4o-mini"]}, "model"),
    ({"messages": "hi"}, "messages"), ({"messages": []}, "messages"), ({"messages": [1]}, "messages.0"),
    ({"messages": [{"content": "no role"}]}, "messages.0"), ({"stream": "yes"}, "stream"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": "5"}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"), ({"model": "gpt-4o-mini:"}, "model"),
]


@pytest.mark.parametrize("change, param", WRONG_TYPES)
def test_wrong_types_are_400_with_param(client, seeded, upstream, change, param):
    resp = client.post("/v1/chat/completions", json={**CHAT, **change}, headers=auth(seeded))
    assert resp.status_code == 400, resp.json
    assert resp.json["error"]["param"] == param and resp.json["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_nul_bytes_pass_through_and_are_logged_safely(client, app, seeded, upstream):
    resp = client.post("/v1/chat/completions", headers=auth(seeded), json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a\u0000b"}], "user": "u\u0000"})
    assert resp.status_code == 200
    assert upstream.last["body"]["messages"][0]["content"] == "a\u0000b"
    resp = client.post("/v1/chat/completions", json={**CHAT, "model": "gpt\u0000-4o"}, headers=auth(seeded))
    assert resp.status_code == 404 and resp.json["error"]["code"] == "model_not_found"
    rows = log_rows(app)  # the database (PostgreSQL refuses NUL in text) still gets both rows
    assert [r.status for r in rows] == [200, 404]
    assert "\x00" not in rows[1].model


def test_a_one_megabyte_token_is_passed_through(client, seeded, upstream):
    resp = client.post("/v1/chat/completions", headers=auth(seeded), json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 1_000_000}]})
    assert resp.status_code == 200 and len(upstream.last["body"]["messages"][0]["content"]) == 1_000_000


# -- content type ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=" + "b" * 10_000,
    "application/xml", "image/png"])
def test_wrong_content_type_is_415_and_the_body_is_not_parsed(client, seeded, upstream, content_type):
    body = b"--" + b"b" * 10_000 + b"\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n"
    resp = client.post("/v1/chat/completions", data=body, headers={**auth(seeded), "Content-Type": content_type})
    assert resp.status_code == 415
    assert resp.json["error"]["code"] == "unsupported_media_type"
    assert upstream.requests == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json", None])
def test_json_content_types_are_accepted(client, seeded, upstream, content_type):
    import orjson

    headers = auth(seeded) | ({"Content-Type": content_type} if content_type else {})
    resp = client.post("/v1/chat/completions", data=orjson.dumps(CHAT), headers=headers)
    assert resp.status_code == 200


# -- routing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/chat/completions", 405), ("PUT", "/v1/embeddings", 405), ("DELETE", "/v1/models", 405),
    ("GET", "/v1/foo", 404), ("POST", "/v1/chat/completions/extra", 404), ("GET", "/v1", 404),
    ("POST", "/v1/", 404), ("PATCH", "/v1/models/x", 405)])
def test_unknown_paths_and_methods_are_json(live, seeded, method, path, status):
    resp = requests.request(method, live + path, headers=auth(seeded), timeout=10)
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert error["code"] == ("method_not_allowed" if status == 405 else "not_found")
    if status == 405:
        assert "Allow" in resp.headers


@pytest.mark.parametrize("host", ["evil/#", "evil?x", "evil/v1/models?", "localhost/admin#", "", "a b"])
def test_host_header_does_not_change_auth(live, seeded, host):
    request = f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    status, _, data = status_and_body(raw_http(live, request))
    assert status in (400, 401) and b'"data"' not in data
    if status == 401:
        assert b"invalid_api_key" in data
    request = (f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {seeded.key}\r\n"
               "Connection: close\r\n\r\n").encode()
    status, _, data = status_and_body(raw_http(live, request))
    assert status in (200, 400)


@pytest.mark.parametrize("path", ["/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2E/v1/models", "//v1/models",
                                  "/v1//models", "/v1/models/", "/v1/./models", "/./v1/models", "/V1/models",
                                  "/v1/models%00", "/v1/models;x", "/admin/../v1/models", "/healthz/../v1/models"])
def test_path_tricks_never_bypass_auth(live, path):
    request = f"GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".encode()
    status, headers, data = status_and_body(raw_http(live, request))
    assert status in (301, 302, 308, 400, 401, 404), (status, data[:200])
    assert b'"object":"list"' not in data and b"gpt-4o-mini" not in data
    assert b"Traceback" not in data


# -- auth header oddities --------------------------------------------------------------------------
BAD_KEYS = ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token pp-abc", "Bearer " + "k" * 10_000,
"Bearer ' OR (SELECT pg_sleep(8)) IS NOT NULL --", "Bearer ' OR '1'='1",
            "Bearer pp-abc\"; DROP TABLE api_keys; --"]


@pytest.mark.parametrize("value", BAD_KEYS)
def test_bad_keys_get_the_same_fast_401(live, app, seeded, upstream, value, caplog):
    started = time.monotonic()
    resp = requests.post(live + "/v1/chat/completions", json=CHAT, headers={"Authorization": value}, timeout=10)
    # pg_sleep(8) would take 8 s if it ever reached SQL; a generous bound that no slow machine reaches.
    assert time.monotonic() - started < 4
    assert resp.status_code == 401 and resp.json() == UNKNOWN_KEY
    assert upstream.requests == []
    rows = log_rows(app)
    assert [r.status for r in rows] == [401]
    assert value[7:] not in caplog.text or len(value) < 10


def test_control_characters_in_the_key_are_refused_by_the_http_server_as_json(live, upstream):
    request = b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer pp-\x01abc\r\n\r\n"
    status, headers, data = status_and_body(raw_http(live, request))
    assert status == 400 and headers["content-type"] == "application/json"
    assert b"pp-" not in data and upstream.requests == []


def test_sql_injection_key_leaves_the_tables_intact(live, app, seeded):
    for value in BAD_KEYS[-3:]:
        requests.post(live + "/v1/chat/completions", json=CHAT, headers={"Authorization": value}, timeout=10)
    resp = requests.post(live + "/v1/chat/completions", json=CHAT, headers=auth(seeded), timeout=10)
    assert resp.status_code == 200
