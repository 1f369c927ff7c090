"""Fuzzing: /v1 against openapi.yaml with schemathesis; the SSE parser with hypothesis. No 500, no traceback."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptproxy.core.sse import SSEParser

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_json_is_the_shipped_yaml(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.json == yaml.safe_load((ROOT / "openapi.yaml").read_text())
    paths = set(resp.json["paths"])
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/models/{model}",
            "/v1/messages", "/healthz"} <= paths


def test_every_v1_route_is_documented(app):
    documented = set(yaml.safe_load((ROOT / "openapi.yaml").read_text())["paths"])
    aliases = {"/v1/chat/completion", "/v1/completion"}  # the original project's singular spellings
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule).replace("<path:model_id>", "{model}"))
        if path.startswith("/v1/") and path not in aliases:
            assert path in documented, path


SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
OPERATIONS = [(method.upper(), path) for path, item in SPEC["paths"].items() for method in item
              if path.startswith("/v1")]


# schemathesis's own pytest plugin (from_fixture) does not support pytest 9 yet, so each operation's strategy is
# driven by hypothesis directly: positive (schema-valid) and negative (schema-violating) examples, in-process WSGI.
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_v1_never_500s_or_leaks_a_traceback(app, seeded, upstream, caplog, method, path, mode):
    caplog.set_level(logging.ERROR)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {seeded.key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call(headers={**headers, **(case.headers or {})})
        body = response.text
        assert response.status_code < 500 or response.status_code in (502, 503, 504), body[:300]
        assert "Traceback" not in body and "<html" not in body.lower() and "sqlalchemy" not in body.lower()
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith(("application/json", "text/event-stream")), response.headers
        assert response.headers.get("x-request-id")

    check()
    assert not [r for r in caplog.records if r.name.startswith("promptproxy") and r.levelno >= logging.ERROR]


# -- SSE parser ------------------------------------------------------------------------------------
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
events = st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["message", "content_block_delta", "ping"])),
                            st.lists(text, min_size=1, max_size=3)), min_size=1, max_size=8)


def encode(evs, newline: str, comments: bool) -> bytes:
    out = []
    for i, (name, lines) in enumerate(evs):
        block = []
        if comments and i % 2 == 0:
            block.append(": keep-alive")
        if name:
            block.append(f"event: {name}")
        block += [f"data: {line}" for line in lines]
        out.append(newline.join(block) + newline + newline)
    return "".join(out).encode()


def parse(data: bytes, cuts: list[int]) -> list[tuple]:
    parser = SSEParser()
    got, last = [], 0
    for cut in [*sorted(cuts), len(data)]:
        got += parser.feed(data[last:cut])
        last = cut
    assert parser.pending == b""
    return [(e.event, e.data) for e in got if e.data is not None or e.event is not None]


@given(evs=events, newline=st.sampled_from(["\n", "\r\n"]), comments=st.booleans(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_any_byte_split_yields_the_same_events(evs, newline, comments, data):
    raw = encode(evs, newline, comments)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    expected = [(name, "\n".join(lines)) for name, lines in evs]
    assert parse(raw, []) == expected
    assert parse(raw, cuts) == expected


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
@settings(max_examples=150, deadline=None)
def test_arbitrary_bytes_never_crash_the_parser(raw, cuts):
    parser = SSEParser()
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(raw)), len(raw)]:
        for event in parser.feed(raw[last:cut]):
            assert event.data is not None or event.event is not None or event.comment is not None
        last = cut


def test_split_utf8_and_comments_and_crlf():
    payload = json.dumps({"choices": [{"delta": {"content": "héllo 👋"}}]}, ensure_ascii=False)
    raw = f": ping\r\n\r\ndata: {payload}\r\n\r\n".encode()
    parser = SSEParser()
    got = []
    for i in range(len(raw)):  # one byte at a time: every multi-byte character is split
        got += parser.feed(raw[i:i + 1])
    assert [e.comment for e in got] == ["ping", None]
    assert json.loads(got[1].data)["choices"][0]["delta"]["content"] == "héllo 👋"
