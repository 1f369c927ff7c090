"""Deliveries: real POSTs to a real receiver, signed, retried from the outbox, also across a restart."""
from __future__ import annotations

import hashlib
import hmac
import threading
import time

import sqlalchemy as sa

from promptproxy import create_app
from promptproxy.alerts import webhooks
from promptproxy.extensions import db
from promptproxy.models import Webhook

from ..conftest import base_config, wait_for
from .conftest import deliveries, make_hook, worker


def verify(secret: str, headers: dict, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as docs/alerts.md shows it."""
    stamp = headers["X-PromptProxy-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(stamp)) <= tolerance  # refuse replays of old deliveries
    return hmac.compare_digest(expected, headers["X-PromptProxy-Signature"]) and fresh


def queue_test(app, hook_id: int) -> int:
    with app.app_context():
        delivery_id = webhooks.send_test("test", db.session.get(Webhook, hook_id))
        db.session.commit()
        return delivery_id


def test_json_delivery_is_signed_and_verifiable_with_the_secret(app, receiver):
    hook = make_hook(app, receiver.url, secret="whsec-test-0123456789")
    queued = queue_test(app, hook)
    with app.app_context():
        result = worker(app).deliver(queued)
    assert result["status"] == "delivered" and result["http_status"] == 200
    sent = receiver.requests[0]
    assert sent["path"] == "/hook/secret-path"
    assert verify("whsec-test-0123456789", sent["headers"], sent["body"])
    assert not verify("another-secret", sent["headers"], sent["body"])
    assert not verify("whsec-test-0123456789", sent["headers"], sent["body"] + b" ")  # a changed body fails
    body = receiver.json()
    assert body["event"] == "test" and body["id"] == f"dlv_{queued}" and body["text"].startswith("Test alert")
    assert body["created_at"].endswith("Z") and body["data"] == {"webhook": "ops"}
    assert sent["headers"]["X-PromptProxy-Event"] == "test"


def test_without_a_secret_no_signature_is_sent(app, receiver):
    hook = make_hook(app, receiver.url)
    with app.app_context():
        worker(app).deliver(queue_test(app, hook))
    assert "X-PromptProxy-Signature" not in receiver.requests[0]["headers"]


def test_slack_format_posts_only_text(app, receiver):
    hook = make_hook(app, receiver.url, fmt="slack")
    with app.app_context():
        worker(app).deliver(queue_test(app, hook))
    assert receiver.json() == {"text": "Test alert from PromptProxy for webhook ops."}


def test_retried_after_a_receiver_failure(app, receiver):
    receiver.statuses = [500]
    hook = make_hook(app, receiver.url)
    queued = queue_test(app, hook)
    worker(app).wake()  # the background thread delivers, fails, backs off and retries
    assert wait_for(lambda: deliveries(app)[0].status == "delivered")
    row = deliveries(app)[0]
    assert row.id == queued and row.attempts == 2 and row.response_status == 200 and row.last_error is None
    assert len(receiver.requests) == 2 and receiver.requests[0]["body"] == receiver.requests[1]["body"]


def test_gives_up_after_the_maximum_attempts(app, receiver):
    receiver.statuses = [500] * 10
    w = worker(app)
    w.max_attempts = 3
    queue_test(app, make_hook(app, receiver.url))
    w.wake()
    assert wait_for(lambda: deliveries(app)[0].status == "failed")
    row = deliveries(app)[0]
    assert row.attempts == 3 and row.last_error == "HTTP 500" and len(receiver.requests) == 3


def test_a_connection_failure_is_recorded_without_the_url(app, receiver):
    from ..limits.conftest import closed_port

    hook = make_hook(app, f"http://127.0.0.1:{closed_port()}/hooks/T000/very-secret-token")
    with app.app_context():
        result = worker(app).deliver(queue_test(app, hook))
    row = deliveries(app)[0]
    assert result["status"] == "pending" and row.status == "pending" and row.attempts == 1
    assert row.last_error.startswith("connection failed") and "very-secret-token" not in row.last_error


def test_retried_after_a_restart_by_a_new_instance(app, db_url, tmp_path, receiver):
    receiver.statuses = [503]
    hook = make_hook(app, receiver.url)
    queued = queue_test(app, hook)
    with app.app_context():
        assert worker(app).deliver(queued)["status"] == "pending"
    app.extensions["promptproxy"].close()  # the first instance stops; the row stays in the outbox
    assert deliveries(app)[0].status == "pending"

    second = create_app(base_config(db_url, tmp_path))
    try:
        worker(second).start()  # as `serve` does
        assert wait_for(lambda: deliveries(second)[0].status == "delivered")
    finally:
        second.extensions["promptproxy"].close()
        with second.app_context():
            db.engine.dispose()
    assert deliveries(second)[0].attempts == 2 and len(receiver.requests) == 2


def test_two_instances_claiming_one_row_send_it_once(app, db_url, tmp_path, receiver):
    queued = queue_test(app, make_hook(app, receiver.url))
    second = create_app(base_config(db_url, tmp_path))
    results, barrier = [], threading.Barrier(2)

    def claim(instance):
        barrier.wait()
        with instance.app_context():
            results.append(worker(instance).deliver(queued))

    try:
        threads = [threading.Thread(target=claim, args=(a,)) for a in (app, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        second.extensions["promptproxy"].close()
    assert sorted(r is None for r in results) == [False, True]
    assert len(receiver.requests) == 1 and deliveries(app)[0].attempts == 1


def test_delivery_time_guard_refuses_a_private_address(app, receiver):
    hook = make_hook(app, receiver.url)  # allowed when created (private upstreams allowed in tests)
    w = worker(app)
    w.allow_private = False  # as in production: the address guard runs again before each delivery
    with app.app_context():
        result = w.deliver(queue_test(app, hook))
    assert result["status"] == "failed" and "address guard" in result["error"]
    assert receiver.requests == []


def test_deleting_a_webhook_removes_its_deliveries(app, receiver):
    hook = make_hook(app, receiver.url)
    queue_test(app, hook)
    with app.app_context():
        webhooks.delete_webhook("test", db.session.get(Webhook, hook))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Webhook)) == 0
    assert deliveries(app) == []
