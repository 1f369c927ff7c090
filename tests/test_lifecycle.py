"""The call lifecycle: features on named stages, each stage run once per call, nothing registered for a feature off."""
from __future__ import annotations

import ast
import json
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
import requests

from promptproxy.proxy.lifecycle import STAGES, Lifecycle

from .conftest import rows_when, wait_for
from .routing.test_cache import set_cache
from .upstream import chunk

PACKAGE = Path(__file__).resolve().parent.parent / "promptproxy"
HI = [{"role": "user", "content": "hi"}]
ASKED = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": HI}


class Spy:
    """A feature on every stage: counts, per request id, how often each stage saw the call."""

    def __init__(self, lifecycle: Lifecycle):
        self.seen: dict[str, Counter] = {}
        self.settled_status: dict[str, int] = {}
        note = self.note
        lifecycle.add("on_start", lambda call, body: note("on_start", call))
        lifecycle.add("before_plan", lambda call, dialect, body: note("before_plan", call))
        lifecycle.add("before_send", lambda call, dialect, plan: note("before_send", call))
        lifecycle.add("on_stream", lambda call, dialect, plan, encoder: note("on_stream", call) or encoder)
        lifecycle.add("around_attempt", self.attempt)
        lifecycle.add("on_answered", lambda call, answer: note("on_answered", call))
        lifecycle.add("on_settled", self.settled)
        lifecycle.add("on_recorded", lambda call: note("on_recorded", call))

    def note(self, stage: str, call) -> None:
        """Count one run of a stage for this call (returns None: a before_send hook that gives no answer)."""
        self.seen.setdefault(call.request_id, Counter())[stage] += 1

    @contextmanager
    def attempt(self, call, target, endpoint, request):
        self.note("around_attempt", call)
        try:
            yield
        finally:
            self.note("attempt_left", call)

    def settled(self, call, answer) -> None:
        self.note("on_settled", call)
        self.settled_status[call.request_id] = call.status

    def only(self) -> tuple[str, Counter]:
        """The one call seen, once it is recorded."""
        wait_for(lambda: len(self.seen) == 1 and "on_recorded" in next(iter(self.seen.values())))
        ((request_id, counts),) = self.seen.items()
        return request_id, counts


@pytest.fixture
def spy(app, seeded) -> Spy:
    """A Spy registered after the gateway's own features."""
    return Spy(app.extensions["promptproxy"].lifecycle)


def once(*stages: str) -> Counter:
    return Counter({stage: 1 for stage in stages})


PIPELINE = ("on_start", "before_plan", "before_send")
UPSTREAM = ("around_attempt", "attempt_left")
END = ("on_settled", "on_recorded")


def test_a_whole_call_runs_every_stage_once_but_on_stream(spy, live, seeded, upstream, app):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    answer = sdk.chat.completions.create(**ASKED)
    assert answer.choices[0].message.content == "Bonjour!"
    request_id, counts = spy.only()
    assert counts == once(*PIPELINE, *UPSTREAM, "on_answered", *END)
    (row,) = rows_when(app, 1)
    assert (row.request_id, row.status) == (request_id, 200) and spy.settled_status[request_id] == 200


def test_a_streamed_call_runs_every_stage_once(spy, live, seeded, upstream, app):
    sdk = openai.OpenAI(base_url=live + "/v1", api_key=seeded.key, max_retries=0)
    text = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(**ASKED, stream=True)
                   if c.choices)
    assert text == "Bonjour!"
    request_id, counts = spy.only()
    assert counts == once(*PIPELINE, "on_stream", *UPSTREAM, "on_answered", *END)
    assert rows_when(app, 1)[0].status == 200


def test_an_error_before_the_first_byte_is_settled_and_recorded_once_and_answered_never(spy, live, seeded, upstream,
                                                                                        app):
    upstream.handler = lambda req: (400, {"Content-Type": "application/json"},
                                    json.dumps({"error": {"message": "bad", "type": "invalid_request_error"}}))
    resp = requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": True},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["message"] == "bad"
    request_id, counts = spy.only()
    assert counts == once(*PIPELINE, "on_stream", *UPSTREAM, *END)
    assert spy.settled_status[request_id] == 400 and rows_when(app, 1)[0].status == 400


def test_an_error_after_the_first_byte_is_settled_and_recorded_once_and_answered_never(spy, live, seeded, upstream,
                                                                                       app):
    events = [chunk("m", "", role=True), chunk("m", "Bon"), {"error": {"message": "overloaded", "type": "x"}}]
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                    iter(f"data: {json.dumps(e)}\n\n" for e in events))
    resp = requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": True},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10)
    assert resp.status_code == 200 and "overloaded" in resp.text and resp.text.endswith("data: [DONE]\n\n")
    request_id, counts = spy.only()
    assert counts == once(*PIPELINE, "on_stream", *UPSTREAM, *END)
    assert spy.settled_status[request_id] >= 500 and rows_when(app, 1)[0].status == spy.settled_status[request_id]


def test_a_refusal_before_any_upstream_is_settled_and_recorded_once(spy, live, seeded, upstream, app):
    resp = requests.post(live + "/v1/chat/completions", json={"model": "no-such-model", "messages": HI},
                         headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    _, counts = spy.only()
    assert counts == once("on_start", *END)
    assert upstream.requests == []


def test_a_client_that_hangs_up_mid_stream_is_settled_and_recorded_once(spy, live, seeded, upstream, app):
    events = [chunk("m", "", role=True), chunk("m", "Bon"), 1.0, chunk("m", "jour", finish="stop")]
    upstream.handler = lambda req: (200, {"Content-Type": "text/event-stream"},
                                    iter(f"data: {json.dumps(e)}\n\n" if isinstance(e, dict) else e for e in events))
    with requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": True}, stream=True,
                       headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10) as resp:
        for line in resp.iter_lines():
            if b"Bon" in line:
                break  # hang up before the end
    (row,) = rows_when(app, 1)
    request_id, counts = spy.only()
    assert counts == once(*PIPELINE, "on_stream", *UPSTREAM, *END)  # no end came: never answered
    assert row.status == 499 and spy.settled_status[request_id] == 499


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_cache_hit_is_answered_at_before_send_and_still_settled_and_recorded_once(spy, live, seeded, upstream,
                                                                                    app, stream):
    set_cache(app, ttl=60)
    first = requests.post(live + "/v1/chat/completions", json=ASKED, headers={"Authorization": f"Bearer {seeded.key}"},
                          timeout=10)
    rows_when(app, 1)
    spy.seen.clear()
    hit = requests.post(live + "/v1/chat/completions", json={**ASKED, "stream": stream},
                        headers={"Authorization": f"Bearer {seeded.key}"}, timeout=10)
    assert (first.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert ("Bonjour!" in hit.text) and len(upstream.requests) == 1
    _, counts = spy.only()
    # The cache's before_send hook answered, so the spy's (registered after it) never ran; nothing went upstream.
    assert counts == once("on_start", "before_plan", *END)
    assert rows_when(app, 2)[1].cache_hit


# -- what registers where -----------------------------------------------------------------------------------------
def owners(lifecycle: Lifecycle) -> dict[str, list[str]]:
    """The module of each stage's hooks (a bound method's or a closure's)."""
    return {stage: [getattr(h, "__module__", None) or type(h).__module__ for h in hooks]
            for stage, hooks in lifecycle.registered().items()}


def test_each_feature_registers_on_its_stages_and_tracing_off_registers_nothing(app):
    found = owners(app.extensions["promptproxy"].lifecycle)
    assert app.extensions["promptproxy"].tracer is None
    assert not any("tracing" in module for modules in found.values() for module in modules)
    assert found["around_attempt"] == [] and found["on_close"] == []
    assert found["on_start"] == ["promptproxy.proxy.tags"]
    assert found["before_plan"] == found["before_send"] == found["on_stream"] == ["promptproxy.cache.response_cache"]
    assert found["on_answered"] == ["promptproxy.dialects.responses_store"]
    assert found["on_settled"] == ["promptproxy.proxy.gateway", "promptproxy.cache.response_cache"]
    assert found["on_recorded"] == ["promptproxy.proxy.gateway", "promptproxy.ops", "promptproxy.ops"]


def test_with_otel_set_tracing_registers_on_start_attempt_record_and_close(monkeypatch, db_url, tmp_path):
    from promptproxy import create_app

    from .conftest import base_config

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    app = create_app(base_config(db_url, tmp_path))
    try:
        found = owners(app.extensions["promptproxy"].lifecycle)
        traced = {stage for stage, modules in found.items() if "promptproxy.observe.tracing" in modules}
        assert traced == {"on_start", "around_attempt", "on_recorded", "on_close"}
    finally:
        app.extensions["promptproxy"].close()


def test_an_empty_stage_is_a_no_op_and_an_unknown_stage_is_refused():
    lifecycle = Lifecycle()
    assert all(hooks == () for hooks in lifecycle.registered().values()) and set(lifecycle.registered()) == set(STAGES)
    with lifecycle.attempt(None, None, "chat", None):
        pass
    assert lifecycle.answer(None, None, None) is None
    with pytest.raises(ValueError, match="unknown lifecycle stage 'after_everything'"):
        lifecycle.add("after_everything", print)


def test_several_attempt_hooks_nest_in_registration_order():
    lifecycle, trail = Lifecycle(), []

    def hook(name):
        @contextmanager
        def around(call, target, endpoint, request):
            trail.append(f"{name} in")
            yield
            trail.append(f"{name} out")
        return around

    lifecycle.add("around_attempt", hook("a"))
    lifecycle.add("around_attempt", hook("b"))
    with lifecycle.attempt(None, None, "chat", None):
        trail.append("send")
    assert trail == ["a in", "b in", "send", "b out", "a out"]


class Settles:
    """A call-like object and an admission for settle()."""

    settled = False
    status = 200

    def finish(self, call):
        self.finished = getattr(self, "finished", 0) + 1


def test_settle_runs_once_and_settles_the_admission_even_when_a_hook_fails():
    lifecycle, call = Lifecycle(), Settles()
    lifecycle.add("on_settled", lambda call, answer: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        lifecycle.settle(call, None, call)
    lifecycle.settle(call, None, call)
    assert call.finished == 1 and call.settled


# -- the pipeline names no feature; shared code does not branch on dialect names ----------------------------------
FEATURE_WORDS = re.compile(r"\b(cache[ds]?|caching|tracer|tracing|trace|spans?|tags?|responses?|metrics|"
                           r"deployments?|assemble|filling)\b", re.IGNORECASE)


def test_the_pipeline_names_no_feature():
    source = (PACKAGE / "proxy" / "pipeline.py").read_text()
    assert FEATURE_WORDS.findall(source) == []
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "collections.abc", "dataclasses", "typing", "core.errors", "extensions", None,
                        "resolve"}


def test_the_check_sees_a_feature_name():
    assert FEATURE_WORDS.findall("hit = gw.cache.get(key)\nif gw.tracer is not None:") == ["cache", "tracer"]


def dialect_branches(source: str) -> list[int]:
    """Lines comparing a dialect (a `dialect` name, a `.name` or `.inbound`) with a dialect's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            named = {getattr(p, "id", None) or getattr(p, "attr", None) for p in parts}
            values = {getattr(p, "value", None) for p in parts}
            if named & {"dialect", "name", "inbound"} and values & {"openai", "anthropic", "responses"}:
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("folder", ["proxy", "cache", "observe"])
def test_shared_code_does_not_branch_on_dialect_names(folder):
    for path in (PACKAGE / folder).glob("*.py"):
        assert dialect_branches(path.read_text()) == [], path.name


def test_the_branch_check_sees_one():
    assert dialect_branches('x = 1\nif dialect.name == "openai" and dialect.kind == "chat":\n    pass') == [2]
