"""Issue 14, data items: the request log never stops, SSE events are bounded, deleted things stay deleted."""
from __future__ import annotations

import json
import logging
import sys

import pytest
import sqlalchemy as sa

from promptproxy import manage
from promptproxy.core.sse import MAX_EVENT_BYTES, EventTooLarge, SSEParser
from promptproxy.extensions import db
from promptproxy.models import (
    ApiKey,
    BudgetUsage,
    Prompt,
    PromptVersion,
    RequestLog,
    UsageRollup,
    User,
    utcnow,
)
from promptproxy.observe import logwriter
from promptproxy.observe.logwriter import LogWriter

from ..admin.conftest import cheap_hash, login
from ..conftest import log_rows, wait_for
from ..ops.procs import Server, server_env

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
N = 5


def auth(key: str) -> dict:
    """Bearer header for a client key."""
    return {"Authorization": f"Bearer {key}"}


def error_object_upstream(req):
    """An upstream 400 whose `type` and `code` are JSON objects (seen from real OpenAI-compatible servers)."""
    body = {"error": {"message": "bad request", "type": {"kind": "weird", "x": list(range(40))},
                      "code": {"nested": {"deeper": "x" * 200}}}}
    return 400, {"Content-Type": "application/json"}, json.dumps(body)


def count_rows(app) -> int:
    """Rows in request_logs."""
    with app.app_context():
        try:
            return db.session.scalar(sa.select(sa.func.count()).select_from(RequestLog))
        finally:
            db.session.remove()


def row(i: int, **fields) -> dict:
    """A minimal log row as the request path builds it."""
    base = {"request_id": f"req_hd_{i}", "created_at": utcnow(), "endpoint": "/v1/chat/completions",
            "status": 200, "model": "m", "latency_ms": 12.0, "input_tokens": 3, "output_tokens": 4}
    base.update(fields)
    return base


# -- item 1: one bad row never stops the request log -----------------------------------------------
def test_two_unstorable_requests_then_n_more_give_n_plus_2_rows(app, client, seeded, upstream):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer a crash as production does (item 2 is another fix)
    ids = []
    r = client.post("/v1/chat/completions", json={"model": "m" * 300, **CHAT}, headers=auth(seeded.key))
    assert r.status_code == 404
    ids.append(r.headers["x-request-id"])
    upstream.handler = error_object_upstream
    r = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", **CHAT}, headers=auth(seeded.key))
    assert r.status_code >= 400
    ids.append(r.headers["x-request-id"])
    upstream.handler = upstream.default
    for _ in range(N):
        r = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", **CHAT}, headers=auth(seeded.key))
        assert r.status_code == 200
        ids.append(r.headers["x-request-id"])
    rows = log_rows(app)
    assert len(rows) == N + 2
    assert [r.request_id for r in rows] == ids
    assert rows[0].model == "m" * 256 and rows[0].status == 404
    assert isinstance(rows[1].error_type, str) and 0 < len(rows[1].error_type) <= 64
    assert rows[1].error_type == "upstream_error"  # an object is no identifier: the gateway's own code (issue 25)
    assert all(r.status == 200 for r in rows[2:])


def test_writer_fits_every_field_to_its_column(app):
    writer = LogWriter(app, interval=60)
    long = {c.name: "é" * (c.type.length + 40) for c in RequestLog.__table__.c
            if isinstance(c.type, sa.String) and c.type.length
            and c.name not in ("request_id", "error_type", "error_message")}
    writer.submit(row(1, **long, error_type={"code": {"deep": [1, 2, 3]}}, error_message=429,
                      input_tokens=2 ** 70, output_tokens="many", latency_ms=float("nan"), cost="free",
                      request_body="a\x00b\ud800c", stream=1))
    writer.close()
    (stored,) = log_rows(app)
    for name, value in long.items():
        assert getattr(stored, name) == value[:RequestLog.__table__.c[name].type.length], name
    assert stored.error_type == '{"code":{"deep":[1,2,3]}}'
    assert stored.error_message == "429"
    assert stored.input_tokens is None and stored.output_tokens is None
    assert stored.latency_ms is None and stored.cost is None
    assert stored.request_body == "a\ufffdb\ufffdc"
    assert stored.stream is True
    assert writer.written == 1 and writer.unstorable == 0


def test_a_row_the_database_refuses_is_written_reduced_and_counted(app, client, monkeypatch, caplog):
    writer = app.extensions["promptproxy"].logs
    fit = logwriter.fit_row
    # as if the coercion had missed a case: the error type goes to the database as it came
    monkeypatch.setattr(logwriter, "fit_row", lambda r: {**fit(r), "error_type": r.get("error_type")})
    writer.submit(row(1))
    writer.submit(row(2, status=502, user_id=7, key_id=9, error_type={"not": "a string"}))
    writer.submit(row(3))
    with caplog.at_level(logging.ERROR, "promptproxy.logwriter"):
        writer.flush()
    rows = {r.request_id: r for r in log_rows(app)}
    assert sorted(rows) == ["req_hd_1", "req_hd_2", "req_hd_3"]
    reduced = rows["req_hd_2"]
    assert (reduced.status, reduced.user_id, reduced.key_id) == (502, 7, 9)
    assert reduced.error_message == "row not storable" and reduced.error_type == "row_not_storable"
    assert rows["req_hd_1"].error_message is None
    assert writer.unstorable == 1
    assert "req_hd_2" in caplog.text and "not storable" in caplog.text
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "promptproxy_log_rows_unstorable_total 1.0" in metrics


def test_a_row_that_cannot_be_stored_at_all_is_dropped_and_the_thread_goes_on(app, caplog):
    writer = LogWriter(app, interval=0.01, batch_size=10)
    writer.submit(row(1))
    assert wait_for(lambda: count_rows(app) == 1)
    with caplog.at_level(logging.ERROR, "promptproxy.logwriter"):
        writer.submit(row(1, status=500))  # same request id: even the reduced form is refused
        for i in range(2, 2 + N):
            writer.submit(row(i))
        assert wait_for(lambda: count_rows(app) == N + 1 and writer.queued == 0)
    assert writer.dropped == 1 and writer._thread.is_alive()
    assert "req_hd_1" in caplog.text
    writer.close()
    assert count_rows(app) == N + 1


def test_a_database_outage_is_retried_not_reduced(app, monkeypatch):
    writer = LogWriter(app, interval=60)
    real = writer._insert
    calls = []

    def down_once(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        real(rows)

    monkeypatch.setattr(writer, "_insert", down_once)
    for i in range(3):
        writer.submit(row(i))
    writer.close()
    rows = log_rows(app)
    assert len(rows) == 3 and all(r.error_message is None for r in rows)
    assert writer.unstorable == 0 and writer.dropped == 0


def test_sigterm_writes_every_queued_row_even_after_an_unstorable_one(app, seeded, upstream, db_url, tmp_path):
    env = server_env(db_url, tmp_path / "instance", PROMPTPROXY_LOG_FLUSH_INTERVAL="3600")
    server = Server(env, tmp_path / "server.log")
    try:
        import requests

        url = server.url + "/v1/chat/completions"
        r = requests.post(url, json={"model": "m" * 300, **CHAT}, headers=auth(seeded.key), timeout=30)
        assert r.status_code == 404
        upstream.handler = error_object_upstream
        r = requests.post(url, json={"model": "gpt-4o-mini", **CHAT}, headers=auth(seeded.key), timeout=30)
        assert r.status_code >= 400
        upstream.handler = upstream.default
        for _ in range(N):
            r = requests.post(url, json={"model": "gpt-4o-mini", **CHAT}, headers=auth(seeded.key), timeout=30)
            assert r.status_code == 200
        assert log_rows(app) == []  # all still queued in the server process
    finally:
        assert server.stop() == 0
    assert len(log_rows(app)) == N + 2


# -- item 5: one SSE event is bounded, and parsing is linear --------------------------------------
CHUNK = 64 * 1024
BIG_LINE = 17_000_000


def scanned_by_bytes_methods(work) -> tuple[int, int]:
    """Run `work`; return the bytes examined by bytes methods (split, find, replace, ...) and the join calls.

    A profile hook sees each C method call with the object it is bound to, so this counts what any parser
    implementation scans, without timing anything.
    """
    scanned = joins = 0

    def hook(frame, event, arg):
        nonlocal scanned, joins
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), bytes):
            if arg.__name__ == "join":
                joins += 1
            elif arg.__name__ not in ("startswith", "endswith"):  # these look at a few bytes only
                scanned += len(arg.__self__)

    sys.setprofile(hook)
    try:
        work()
    finally:
        sys.setprofile(None)
    return scanned, joins


def test_a_giant_event_line_is_parsed_in_linear_work():
    parser = SSEParser(max_event_bytes=32 * 1024 * 1024)
    line = b"data: " + b"x" * BIG_LINE
    events = []

    def feed_all():
        for i in range(0, len(line), CHUNK):
            events.extend(parser.feed(line[i:i + CHUNK]))
        events.extend(parser.feed(b"\r\n\r\n"))

    scanned, joins = scanned_by_bytes_methods(feed_all)
    assert len(events) == 1 and len(events[0].data) == BIG_LINE
    assert scanned <= 4 * len(line)  # a fixed number of passes over each byte, not one per chunk received
    assert joins <= 2


def test_an_event_over_the_limit_is_refused_as_soon_as_it_crosses_it():
    assert MAX_EVENT_BYTES == 8 * 1024 * 1024
    parser = SSEParser()
    fed = 0
    with pytest.raises(EventTooLarge) as caught:
        for _ in range(BIG_LINE // CHUNK + 1):
            parser.feed(b"x" * CHUNK)
            fed += CHUNK
    assert MAX_EVENT_BYTES < fed + CHUNK <= MAX_EVENT_BYTES + CHUNK  # the chunk that crossed it, not the end
    err = caught.value
    assert err.status == 502 and err.code == "bad_upstream_response"
    assert "larger than the gateway's limit of 8 MiB" in err.message
    assert parser.pending == b""  # what it held is let go


def test_the_limit_is_configurable_and_counts_whole_events():
    parser = SSEParser(max_event_bytes=1000)
    assert [e.data for e in parser.feed(b"data: " + b"a" * 900 + b"\n\n")] == ["a" * 900]
    with pytest.raises(EventTooLarge, match="1000 bytes"):
        parser.feed(b"data: ok\n\ndata: " + b"b" * 1200 + b"\n\n")  # arrives whole, in one read


def test_a_giant_upstream_event_answers_a_clear_502(client, seeded, upstream):
    def giant(req):
        line = b"data: " + b"x" * (MAX_EVENT_BYTES + CHUNK)
        return 200, {"Content-Type": "text/event-stream"}, (line[i:i + CHUNK] for i in range(0, len(line), CHUNK))

    upstream.handler = giant
    r = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "stream": True, **CHAT},
                    headers=auth(seeded.key))
    assert r.status_code == 502
    err = r.get_json()["error"]
    assert err["code"] == "bad_upstream_response"
    assert "server-sent event larger than the gateway's limit of 8 MiB" in err["message"]


# -- item 9: a new prompt never serves a deleted prompt's text --------------------------------------
def system_text(upstream) -> str:
    """The system message of the last upstream request."""
    return upstream.requests[-1]["body"]["messages"][0]["content"]


def chat(client, key: str, model: str):
    """One small chat completion through the gateway (a small max_tokens keeps budget estimates small)."""
    return client.post("/v1/chat/completions", json={"model": model, "max_tokens": 5, **CHAT}, headers=auth(key))


def test_a_new_prompt_on_a_deleted_prompts_id_sends_its_own_text(app, client, seeded, upstream):
    with app.app_context():
        manage.create_prompt("t", "temp", "TEMP: the old, deleted text.")
        db.session.commit()
    assert chat(client, seeded.key, "gpt-4o-mini:temp").status_code == 200
    assert system_text(upstream) == "TEMP: the old, deleted text."
    with app.app_context():
        manage.delete_prompt("t", manage.get_prompt("temp"))
        db.session.commit()
        manage.create_prompt("t", "fresh", "FRESH: the new prompt's own text.")
        db.session.commit()
    assert chat(client, seeded.key, "gpt-4o-mini:fresh").status_code == 200
    assert system_text(upstream) == "FRESH: the new prompt's own text."
    assert chat(client, seeded.key, "gpt-4o-mini:temp").status_code == 404


def test_a_prompt_deleted_and_recreated_with_the_same_slug_sends_the_new_text(app, client, seeded, upstream):
    with app.app_context():
        manage.create_prompt("t", "temp", "OLD text of temp.")
        db.session.commit()
    assert chat(client, seeded.key, "gpt-4o-mini:temp@1").status_code == 200
    assert system_text(upstream) == "OLD text of temp."
    with app.app_context():
        manage.delete_prompt("t", manage.get_prompt("temp"))
        db.session.commit()
        manage.create_prompt("t", "temp", "NEW text of temp.")
        db.session.commit()
    for model in ("gpt-4o-mini:temp", "gpt-4o-mini:temp@1"):
        assert chat(client, seeded.key, model).status_code == 200
        assert system_text(upstream) == "NEW text of temp.", model


def test_the_version_cache_survives_a_database_that_hands_out_an_old_id_again(app, client, seeded, upstream):
    """Ids can come back (a restored backup, a reset sequence): the cache must not trust them alone."""
    with app.app_context():
        old_id = manage.create_prompt("t", "temp", "TEMP text.").id
        db.session.commit()
    assert chat(client, seeded.key, "gpt-4o-mini:temp").status_code == 200
    with app.app_context():
        manage.delete_prompt("t", manage.get_prompt("temp"))
        db.session.commit()
        db.session.add(Prompt(id=old_id, slug="temp", mode="prepend", description="", latest_version=1))
        db.session.add(PromptVersion(prompt_id=old_id, version=1, text="REUSED id, new text."))
        db.session.commit()
    assert chat(client, seeded.key, "gpt-4o-mini:temp").status_code == 200
    assert system_text(upstream) == "REUSED id, new text."


# -- item 10: ids are never reused; deleting a user with history keeps attribution ----------------------
def new_user(app, name: str, **limits) -> tuple[int, str]:
    """A member with a dashboard password and a key; returns (id, raw key)."""
    with app.app_context():
        user = manage.create_user("t", name, email=f"{name}@example.com", all_models=True, **limits)
        user.password_hash = cheap_hash(f"{name}-password-1")
        key, raw = manage.create_key("t", user)
        db.session.commit()
        return user.id, raw


def test_a_deleted_user_with_history_is_kept_for_attribution_and_a_new_user_starts_clean(app, client, seeded):
    with app.app_context():
        manage.update_user("t", manage.get_user("bob"), budget=0.00003)
        db.session.commit()
    bob_id = seeded.user_id + 1
    statuses = [chat(client, seeded.other_key, "gpt-4o-mini").status_code for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses  # bob spent his budget
    bob_rows = [r for r in log_rows(app) if r.user_id == bob_id]
    assert len(bob_rows) == 3
    with app.app_context():
        result = manage.delete_user("t", manage.get_user("bob"))
        db.session.commit()
    assert result == "deactivated"
    assert chat(client, seeded.other_key, "gpt-4o-mini").status_code == 401  # his keys no longer work
    with app.app_context():
        bob = db.session.scalar(sa.select(User).where(User.name == "bob"))
        assert bob.id == bob_id and not bob.active and bob.password_hash is None and bob.email is None
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey).where(
            ApiKey.user_id == bob_id, ApiKey.revoked_at.is_(None))) == 0

    carol_id, carol_key = new_user(app, "carol", budget=0.00003)
    assert carol_id != bob_id
    assert chat(client, carol_key, "gpt-4o-mini").status_code == 200  # a fresh budget, not bob's spent one
    web = app.test_client()
    assert login(web, "carol@example.com", "carol-password-1").status_code == 303
    page = web.get("/admin/requests").get_data(as_text=True)
    assert not any(r.request_id in page for r in bob_rows)
    assert login(app.test_client(), "bob@example.com", "x" * 12).status_code != 303

    root_id, _ = new_user(app, "root")
    with app.app_context():
        manage.update_user("t", db.session.get(User, root_id), role="admin")
        db.session.commit()
    admin = app.test_client()
    assert login(admin, "root@example.com", "root-password-1").status_code == 303
    detail = admin.get(f"/admin/requests/{bob_rows[0].id}").get_data(as_text=True)
    assert "bob" in detail and "carol" not in detail


def test_a_user_without_history_is_deleted_outright(app, seeded):
    dan_id, _ = new_user(app, "dan")
    with app.app_context():
        assert manage.delete_user("t", db.session.get(User, dan_id)) == "deleted"
        db.session.commit()
        assert db.session.get(User, dan_id) is None
        assert db.session.scalar(sa.select(ApiKey).where(ApiKey.user_id == dan_id)) is None


def test_a_hard_delete_removes_or_anonymises_everything_keyed_by_the_id(app, client, seeded):
    eve_id, eve_key = new_user(app, "eve", budget=5.0)
    for _ in range(2):
        assert chat(client, eve_key, "gpt-4o-mini").status_code == 200
    eve_rows = [r.request_id for r in log_rows(app) if r.user_id == eve_id]
    assert len(eve_rows) == 2
    with app.app_context():
        key_id = db.session.scalar(sa.select(ApiKey.id).where(ApiKey.user_id == eve_id))
        assert manage.delete_user("t", db.session.get(User, eve_id), hard=True) == "deleted"
        db.session.commit()
        assert db.session.get(User, eve_id) is None
        rows = db.session.scalars(sa.select(RequestLog).where(RequestLog.request_id.in_(eve_rows))).all()
        assert len(rows) == 2  # totals stay right, the person is gone from them
        assert all(r.user_id is None and r.key_id is None and r.client_ip is None for r in rows)
        assert db.session.scalar(sa.select(BudgetUsage).where(
            BudgetUsage.subject.in_([f"user:{eve_id}", f"key:{key_id}"]))) is None
        assert db.session.scalar(sa.select(UsageRollup).where(UsageRollup.user_id == eve_id)) is None
        assert db.session.scalar(sa.select(UsageRollup).where(UsageRollup.dim == "key",
                                                              UsageRollup.value == str(key_id))) is None
    fred_id, _ = new_user(app, "fred")
    assert fred_id > eve_id


def test_ids_are_never_reused_after_a_delete(app, seeded, upstream):
    with app.app_context():
        provider = manage.create_provider("t", "spare", "openai", upstream.url + "/v1")
        model = manage.create_model("t", "spare-model", provider, "x")
        prompt = manage.create_prompt("t", "spare-prompt", "Text.")
        user = manage.create_user("t", "spare-user")
        key, _ = manage.create_key("t", user)
        db.session.commit()
        old = {"provider": provider.id, "model": model.id, "prompt": prompt.id, "user": user.id, "key": key.id,
               "version": db.session.scalar(sa.select(sa.func.max(PromptVersion.id)))}
        manage.delete_model("t", model)
        manage.delete_prompt("t", prompt)
        manage.delete_user("t", user)
        db.session.commit()
        manage.delete_provider("t", provider)
        db.session.commit()
        provider = manage.create_provider("t", "spare", "openai", upstream.url + "/v1")
        model = manage.create_model("t", "spare-model", provider, "x")
        prompt = manage.create_prompt("t", "spare-prompt", "Text.")
        user = manage.create_user("t", "spare-user")
        key, _ = manage.create_key("t", user)
        db.session.commit()
        new = {"provider": provider.id, "model": model.id, "prompt": prompt.id, "user": user.id, "key": key.id,
               "version": db.session.scalar(sa.select(sa.func.max(PromptVersion.id)))}
    for name in old:
        assert new[name] > old[name], name


def test_the_migration_keeps_every_row_and_counts_past_ids_only_the_log_remembers(tmp_path):
    from flask_migrate import downgrade, upgrade

    from promptproxy import create_app

    from ..conftest import base_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    app = create_app(base_config(url, tmp_path))
    with app.app_context():
        upgrade(revision="0002_ops")
        with db.engine.begin() as conn:
            for sql in (
                "INSERT INTO users (id, name, role, active, all_models, all_prompts, session_version, created_at)"
                " VALUES (1, 'ann', 'member', 1, 1, 1, 0, '2025-01-01')",
                "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, last4, created_at)"
                " VALUES (1, 1, 'k', 'h1', 'pp-abcd', 'wxyz', '2025-01-01')",
                "INSERT INTO providers (id, name, kind, base_url, stream_usage, enabled, created_at)"
                " VALUES (1, 'p', 'openai', 'http://x/v1', 1, 1, '2025-01-01')",
                "INSERT INTO models (id, slug, provider_id, upstream_model, kind, input_price, output_price, enabled,"
                " created_at) VALUES (1, 'm', 1, 'u', 'chat', 0, 0, 1, '2025-01-01')",
                "INSERT INTO prompts (id, slug, description, mode, latest_version, created_at, updated_at)"
                " VALUES (1, 'pr', '', 'prepend', 1, '2025-01-01', '2025-01-01')",
                "INSERT INTO prompt_versions (id, prompt_id, version, text, note, created_at)"
                " VALUES (1, 1, 1, 'T', '', '2025-01-01')",
                "INSERT INTO prompt_labels (id, prompt_id, label, version) VALUES (1, 1, 'production', 1)",
                # a user (9) and a key (7) deleted before the upgrade: only the log still has their ids
                "INSERT INTO request_logs (request_id, created_at, user_id, key_id, endpoint, inbound_format,"
                " stream, status, usage_estimated) VALUES ('r1', '2025-01-01', 9, 7, '/v1/x', 'openai', 0, 200, 0)",
            ):
                conn.execute(sa.text(sql))
        upgrade()
        with db.engine.connect() as conn:
            for table in ("users", "api_keys", "providers", "models", "prompts", "prompt_versions", "prompt_labels"):
                assert conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) == 1, table
                ddl = conn.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table})
                assert ("AUTOINCREMENT" in ddl) == (table != "prompt_labels"), table
            assert conn.scalar(sa.text("PRAGMA foreign_keys")) == 1  # pooled connections still enforce them
        user = manage.create_user("t", "bo")
        key, _ = manage.create_key("t", user)
        db.session.commit()
        assert (user.id, key.id) == (10, 8)
        with db.engine.begin() as conn:  # foreign keys still cascade after the rebuild
            conn.execute(sa.text("DELETE FROM prompts WHERE id = 1"))
            assert conn.scalar(sa.text("SELECT count(*) FROM prompt_versions")) == 0
        db.session.remove()
        downgrade(revision="0002_ops")
        with db.engine.connect() as conn:
            assert "AUTOINCREMENT" not in conn.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = 'users'"))
            assert conn.scalar(sa.text("SELECT count(*) FROM users")) == 2
        db.engine.dispose()
