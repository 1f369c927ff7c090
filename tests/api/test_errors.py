"""Every error under /v1 is an OpenAI error object with the right status, and the SDK raises its class."""
from __future__ import annotations

import json

import openai
import pytest

from ..conftest import log_rows


def error_of(resp):
    """The error object of a JSON error response."""
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post(client, key, body, path="/v1/chat/completions", **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, headers=headers, content_type=kw.pop("content_type", "application/json"), **kw)


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_missing_key_is_401_invalid_api_key(client, seeded, upstream):
    resp = post(client, None, CHAT)
    assert resp.status_code == 401
    err = error_of(resp)
    assert err["code"] == "invalid_api_key" and "didn't provide an API key" in err["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("header", ["Bearer pp-nope", "Bearer", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 10000,
                                    "Bearer ' OR (SELECT pg_sleep(8)) IS NOT NULL --"])
def test_bad_keys_are_401_with_one_message(client, seeded, upstream, header):
    resp = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": header})
    assert resp.status_code == 401
    assert error_of(resp) == {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}
    assert upstream.requests == []


def test_disabled_user_is_403(app, client, seeded, upstream):
    from promptproxy import manage
    from promptproxy.extensions import db

    with app.app_context():
        manage.update_user("t", manage.get_user("alice"), active=False)
        db.session.commit()
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == 403
    assert error_of(resp)["code"] == "user_disabled"
    assert upstream.requests == []


@pytest.mark.parametrize("model,code", [("nope", "model_not_found"), ("gpt-4o-mini:nope", "prompt_not_found"),
                                        ("gpt-4o-mini:translator@9", "prompt_not_found"),
                                        ("gpt-4o-mini:translator@prod", "prompt_not_found")])
def test_unknown_model_or_prompt_is_404_in_openai_words(client, seeded, upstream, model, code):
    resp = post(client, seeded.key, {**CHAT, "model": model})
    assert resp.status_code == 404
    err = error_of(resp)
    assert err["code"] == code
    assert "does not exist or you do not have access to it." in err["message"]
    assert upstream.requests == []


def test_model_outside_allow_list_looks_exactly_like_unknown(client, seeded, upstream):
    forbidden = post(client, seeded.other_key, {**CHAT, "model": "embed"})
    unknown = post(client, seeded.other_key, {**CHAT, "model": "zzz"})
    assert forbidden.status_code == unknown.status_code == 404
    assert error_of(forbidden)["message"] == "The model `embed` does not exist or you do not have access to it."
    assert error_of(unknown)["code"] == error_of(forbidden)["code"]
    no_prompt = post(client, seeded.other_key, {**CHAT, "model": "gpt-4o-mini:translator"})
    assert no_prompt.status_code == 404 and error_of(no_prompt)["code"] == "prompt_not_found"
    assert upstream.requests == []


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "gpt-4o-mini", "messages": []}, "messages"),
    ({"model": "gpt-4o-mini", "messages": "hi"}, "messages"),
    ({"model": "gpt-4o-mini", "messages": [{"content": "x"}]}, "messages.0"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "model": "a:b:c"}, "model"),
    ({**CHAT, "model": "gpt-4o-mini@3"}, "model"),
    ({**CHAT, "api_base": "http://evil"}, "api_base"),
    ({**CHAT, "metadata": {"user_config": {"api_base": "http://evil"}}}, "metadata.user_config"),
    ({**CHAT, "model": "embed"}, "model"),
    ({**CHAT, "prompt_variables": {"x": "y"}}, "prompt_variables"),
])
def test_bad_fields_are_400_with_param(client, seeded, upstream, body, param):
    resp = post(client, seeded.key, body)
    assert resp.status_code == 400
    assert error_of(resp)["param"] == param
    assert upstream.requests == []


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '{"a": 1} trailing', "\ufeff{}", "", "1e999999x",
                                 "[" * 50000 + "]" * 50000])
def test_invalid_json_is_400(client, seeded, raw):
    resp = post(client, seeded.key, raw)
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "invalid_json"


def test_wrong_content_type_is_415(client, seeded):
    resp = post(client, seeded.key, "model=x", content_type="text/plain")
    assert resp.status_code == 415
    assert error_of(resp)["code"] == "unsupported_media_type"


def test_body_over_limit_is_413(app, client, seeded, upstream):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    resp = post(client, seeded.key, {**CHAT, "pad": "x" * 2000})
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "request_too_large"
    assert upstream.requests == []


def test_unknown_path_and_wrong_method_are_json(client, seeded):
    resp = client.get("/v1/foo")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    resp = client.get("/v1/chat/completions")
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def test_every_response_has_a_request_id_that_matches_its_row(app, client, seeded):
    ok = post(client, seeded.key, CHAT)
    bad = client.get("/v1/nowhere")
    ids = [ok.headers["x-request-id"], bad.headers["x-request-id"]]
    assert all(i.startswith("req_") for i in ids) and ids[0] != ids[1]
    assert [r.request_id for r in log_rows(app)] == ids


@pytest.mark.parametrize("status,expected_status,code", [(400, 400, "bad_thing"), (404, 404, "upstream_error"),
                                                          (500, 500, "upstream_error"), (503, 503, "upstream_error"),
                                                          (401, 502, "upstream_auth_failed"),
                                                          (529, 503, "overloaded")])
def test_upstream_errors_pass_through_in_our_envelope(client, seeded, upstream, status, expected_status, code):
    payload = {"error": {"message": "upstream says no (key sk-upstream-secret-1234)", "type": "x",
                         "code": "bad_thing" if status == 400 else None}}
    upstream.handler = lambda req: (status, {"Content-Type": "application/json"}, json.dumps(payload))
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == expected_status
    err = error_of(resp)
    assert err["code"] == code
    assert "sk-upstream-secret-1234" not in resp.get_data(as_text=True)


def test_upstream_rate_limit_headers_pass_through(client, seeded, upstream):
    resp = post(client, seeded.key, CHAT)
    assert resp.headers["x-ratelimit-remaining-requests"] == "99"


def test_upstream_unreachable_is_502(app, client, seeded):
    from promptproxy import manage
    from promptproxy.extensions import db

    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), base_url="http://127.0.0.1:9/v1", api_key="k")
        db.session.commit()
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == 502
    assert error_of(resp)["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in resp.get_data(as_text=True)


def test_upstream_nonsense_is_502(client, seeded, upstream):
    upstream.handler = lambda req: (200, {"Content-Type": "text/html"}, "<html>bad gateway</html>")
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == 502 and error_of(resp)["code"] == "bad_upstream_response"
    upstream.handler = lambda req: (200, {"Content-Type": "application/json"}, '{"id": "x"}')
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == 502 and error_of(resp)["code"] == "bad_upstream_response"


def test_upstream_too_slow_is_504(app, client, seeded, upstream):
    from promptproxy import manage
    from promptproxy.extensions import db

    with app.app_context():
        manage.update_provider("t", manage.get_provider("local"), first_byte_timeout=0.2)
        db.session.commit()
    upstream.delay = 1.0
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == 504 and error_of(resp)["code"] == "upstream_timeout"


def test_internal_error_is_json_without_traceback(app, client, seeded, monkeypatch):
    from promptproxy.proxy import send

    def boom(*a, **k):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(send, "complete", boom)
    resp = post(client, seeded.key, CHAT)
    assert resp.status_code == 500
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and "/etc/passwd" not in text
    assert error_of(resp)["code"] == "internal_error"
    assert log_rows(app)[-1].status == 500


class TestSDKErrorClasses:
    """The official SDK maps our statuses to its exception classes."""

    def test_classes(self, live, seeded, upstream):
        good = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
        bad = openai.OpenAI(base_url=live + "/v1", api_key="pp-wrong", max_retries=0)
        msgs = [{"role": "user", "content": "x"}]
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        with pytest.raises(openai.NotFoundError) as exc:
            good.chat.completions.create(model="nope", messages=msgs)
        assert exc.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            good.chat.completions.create(model="gpt-4o-mini", messages=[])
        upstream.handler = lambda req: (503, {"Content-Type": "application/json"}, '{"error": {"message": "busy"}}')
        with pytest.raises(openai.InternalServerError):
            good.chat.completions.create(model="gpt-4o-mini", messages=msgs)


def test_a_row_for_every_failure_class(app, client, seeded, upstream):
    post(client, None, CHAT)                                   # 401
    post(client, seeded.key, {**CHAT, "model": "nope"})        # 404
    post(client, seeded.key, {**CHAT, "messages": []})         # 400
    upstream.handler = lambda req: (500, {"Content-Type": "application/json"}, '{"error": {"message": "x"}}')
    post(client, seeded.key, CHAT)                             # upstream 5xx
    rows = log_rows(app)
    assert [(r.status, r.error_type) for r in rows] == [
        (401, "invalid_api_key"), (404, "model_not_found"), (400, "invalid_request_error"), (500, "upstream_error")]
    assert rows[0].user_id is None and rows[1].user_id == seeded.user_id
    assert rows[3].model == "gpt-4o-mini" and rows[3].input_tokens is None
