"""The alerts thread: turns queued events and periodic checks into outbox rows, then delivers due rows."""
from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ..config import ConfigError
from ..crypto import SecretError
from ..extensions import db
from ..models import ApiKey, BudgetUsage, Group, RequestLog, User, Webhook, WebhookDelivery, utcnow
from ..netguard import UnsafeURL, validate_base_url
from ..transport.guarded_http import guarded_session
from . import delivery, outbox
from .events import BudgetSettled, CircuitChanged, EventQueue

log = logging.getLogger("promptproxy.alerts")
FLAP_WINDOW = 300  # seconds: one open and one closed alert per provider per window (a flapping breaker, or
# two instances whose breakers open together, send one)
MAX_REMEMBERED = 50_000  # dedup keys this process knows are queued (saves a database round trip per request)


def thresholds(raw) -> tuple[float, ...]:
    """PROMPTPROXY_ALERT_BUDGET_THRESHOLDS ("50,80,100") as sorted percentages."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    try:
        values = sorted({float(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        raise ConfigError("PROMPTPROXY_ALERT_BUDGET_THRESHOLDS: expected percentages like 50,80,100, "
                          f"got {raw!r}") from None
    if any(v <= 0 for v in values):
        raise ConfigError("PROMPTPROXY_ALERT_BUDGET_THRESHOLDS: percentages must be positive")
    return tuple(values)


def _pct(value: float) -> str:
    return f"{value:g}%"


class AlertWorker:
    """One per app. Request threads only `events.put(...)`; everything else happens on this thread."""

    def __init__(self, app, box):
        cfg = app.config
        self.app, self.box = app, box
        # Events only make sure the thread runs: under load one pass per poll handles them all, not one per request.
        self.events = EventQueue(wake=self.start)
        self.thresholds = thresholds(cfg.get("ALERT_BUDGET_THRESHOLDS", "50,80,100"))
        self.error_rate = float(cfg.get("ALERT_ERROR_RATE", 0.2))
        self.error_window = float(cfg.get("ALERT_ERROR_WINDOW", 300.0))
        self.error_min = int(cfg.get("ALERT_ERROR_MIN_REQUESTS", 20))
        self.expiry_days = float(cfg.get("ALERT_KEY_EXPIRY_DAYS", 7))
        self.check_interval = float(cfg.get("ALERT_CHECK_INTERVAL", 60.0))
        self.poll = float(cfg.get("ALERT_POLL_INTERVAL", 1.0))
        self.max_attempts = int(cfg.get("ALERT_MAX_ATTEMPTS", 8))
        self.backoff = float(cfg.get("ALERT_RETRY_BACKOFF", 10.0))
        self.backoff_max = float(cfg.get("ALERT_RETRY_BACKOFF_MAX", 3600.0))
        self.timeout = float(cfg.get("ALERT_TIMEOUT", 10.0))
        self.lease = 2 * self.timeout + 10  # a claim older than this belongs to an instance that died mid-send
        self.allow_private = bool(cfg.get("ALLOW_PRIVATE_UPSTREAMS"))
        self.session = guarded_session(self.allow_private)
        self._remembered: set[str] = set()
        self._added: list[str] = []  # keys queued in the current pass (remembered once committed)
        self._checked_at: float | None = None
        self._lock = threading.Lock()  # one pass at a time (thread, CLI or test)
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- thread ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (`serve` does at start-up; a queued event does otherwise)."""
        if self._thread is None and not self._stop.is_set():  # a cheap check first: this runs on request threads
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="promptproxy-alerts", daemon=True)
                    self._thread.start()

    def wake(self) -> None:
        """Start the thread if needed and have it look at the queue now."""
        if self._thread is None:
            self.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep the thread alive; rows stay in the outbox and are retried
                log.exception("alerts pass failed; will retry")
            self._wake.wait(self.poll)
            self._wake.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (rows it had not sent stay in the outbox for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.session.close()

    def run_once(self, now: datetime | None = None, checks: bool | None = None) -> int:
        """One pass: queued events and (every check interval) the periodic checks to rows, then deliver due rows."""
        with self._lock, self.app.app_context():
            try:
                now = now or utcnow()
                events = self.events.drain()
                due_checks = checks if checks is not None else (
                    self._checked_at is None or time.monotonic() - self._checked_at >= self.check_interval)
                if events or due_checks:
                    try:
                        self._queue(events, now, due_checks)
                    except Exception:
                        self.events.requeue(events)  # the database is away: keep them for the next pass
                        raise
                return self.deliver_due(now)
            finally:
                db.session.remove()

    # -- events to outbox rows ---------------------------------------------------------------------
    def _queue(self, events: list, now: datetime, due_checks: bool) -> None:
        self._added: list[str] = []
        with db.engine.begin() as conn:
            hooks = outbox.subscribers(conn)
            if due_checks:
                self._checked_at = time.monotonic()
                if hooks["errors"]:
                    self.check_error_rates(conn, hooks["errors"], now)
                if hooks["key_expiry"]:
                    self.check_key_expiry(conn, hooks["key_expiry"], now)
            budgets = {e for e in events if isinstance(e, BudgetSettled)}
            if budgets and hooks["budget"]:
                for event in budgets:
                    self.check_budget(conn, hooks["budget"], event, now)
            for event in events:
                if isinstance(event, CircuitChanged) and hooks["provider"]:
                    self.circuit(conn, hooks["provider"], event, now)
        if len(self._remembered) + len(self._added) > MAX_REMEMBERED:
            self._remembered.clear()
        self._remembered.update(self._added)  # only once committed: a rolled-back row is tried again

    def _add(self, conn, hooks, event: str, key: str, text: str, data: dict, now: datetime) -> None:
        if key in self._remembered:
            return
        outbox.enqueue(conn, hooks, event, key, text, data, now)
        self._added.append(key)

    def check_budget(self, conn, hooks, ev: BudgetSettled, now: datetime) -> None:
        """Queue one alert for each threshold the subject's spend has reached in this period."""
        if ev.limit <= 0:
            return
        t = BudgetUsage.__table__
        spent = conn.scalar(sa.select(t.c.spent).where(t.c.subject == ev.subject,
                                                       t.c.period_start == ev.period_start)) or 0.0
        share = spent / ev.limit * 100
        for threshold in self.thresholds:
            if share + 1e-9 < threshold:
                break
            key = f"budget:{ev.subject}:{ev.period_start:%Y-%m-%d}:{threshold:g}"
            if key in self._remembered:
                continue
            who = self._who(conn, ev.subject)
            text = (f"Budget alert: {who} has spent ${spent:.2f} of its ${ev.limit:.2f} per-{ev.period} budget "
                    f"({share:.0f}%, threshold {_pct(threshold)}).")
            kind, _, ident = ev.subject.partition(":")
            data = {"subject": kind, "id": int(ident), "name": who, "threshold_percent": threshold,
                    "spent_usd": round(spent, 6), "budget_usd": ev.limit, "period": ev.period,
                    "period_start": ev.period_start.isoformat() + "Z"}
            self._add(conn, hooks, "budget.threshold", key, text, data, now)

    @staticmethod
    def _who(conn, subject: str) -> str:
        kind, _, ident = subject.partition(":")
        if kind == "user":
            name = conn.scalar(sa.select(User.name).where(User.id == int(ident)))
            return f"user {name or ident}"
        if kind == "group":
            name = conn.scalar(sa.select(Group.name).where(Group.id == int(ident)))
            return f"group {name or ident}"
        row = conn.execute(sa.select(ApiKey.name, ApiKey.prefix, ApiKey.last4).where(ApiKey.id == int(ident))).first()
        return f"key {row.name or ident} ({row.prefix}…{row.last4})" if row else f"key {ident}"

    def check_error_rates(self, conn, hooks, now: datetime) -> None:
        """Models whose share of answers with status >= 500 in the last window is over the threshold."""
        t = RequestLog.__table__
        since = now - timedelta(seconds=self.error_window)
        failed = sa.func.sum(sa.case((t.c.status >= 500, 1), else_=0))
        rows = conn.execute(sa.select(t.c.model, sa.func.count().label("n"), failed.label("failed"))
                            .where(t.c.created_at >= since, t.c.model_id.is_not(None)).group_by(t.c.model)).all()
        bucket = int(now.replace(tzinfo=UTC).timestamp() // self.error_window)
        for row in rows:
            failures = int(row.failed or 0)
            if row.n < self.error_min or failures < self.error_rate * row.n:
                continue
            minutes = self.error_window / 60
            text = (f"Error-rate alert: model {row.model} failed {failures} of {row.n} requests "
                    f"({failures / row.n:.0%}) in the last {minutes:g} minutes (threshold {self.error_rate:.0%}).")
            data = {"model": row.model, "requests": row.n, "errors": failures,
                    "error_rate": round(failures / row.n, 4), "threshold": self.error_rate,
                    "window_seconds": self.error_window}
            self._add(conn, hooks, "errors.rate", f"errors:{row.model}:{bucket}", text, data, now)

    def check_key_expiry(self, conn, hooks, now: datetime) -> None:
        """Keys (not revoked) that expire within the next ALERT_KEY_EXPIRY_DAYS: one alert per key and expiry."""
        soon = now + timedelta(days=self.expiry_days)
        rows = conn.execute(sa.select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.last4, ApiKey.expires_at,
                                      User.name.label("user")).join(User, User.id == ApiKey.user_id)
                            .where(ApiKey.revoked_at.is_(None), ApiKey.expires_at > now,
                                   ApiKey.expires_at <= soon)).all()
        for row in rows:
            days = (row.expires_at - now).total_seconds() / 86400
            text = (f"Key expiry alert: key {row.name or row.id} ({row.prefix}…{row.last4}) of user {row.user} "
                    f"expires at {row.expires_at.isoformat(timespec='minutes')}Z (in {days:.1f} days).")
            data = {"key_id": row.id, "key_name": row.name, "key": f"{row.prefix}…{row.last4}", "user": row.user,
                    "expires_at": row.expires_at.isoformat() + "Z"}
            key = f"key_expiry:{row.id}:{row.expires_at:%Y%m%dT%H%M%S}"
            self._add(conn, hooks, "key.expiring", key, text, data, now)

    def circuit(self, conn, hooks, ev: CircuitChanged, now: datetime) -> None:
        """A provider's breaker opened or closed."""
        if ev.state == "open":
            text = (f"Provider alert: the circuit for provider {ev.provider} opened; requests to it are paused "
                    f"({ev.reason or 'failures'}).")
        else:
            text = f"Provider alert: the circuit for provider {ev.provider} closed; it answers again."
        data = {"provider_id": ev.provider_id, "provider": ev.provider, "state": ev.state, "reason": ev.reason,
                "at": datetime.fromtimestamp(ev.at, UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"}
        key = f"provider:{ev.provider_id}:{ev.state}:{int(ev.at // FLAP_WINDOW)}"
        self._add(conn, hooks, f"provider.circuit_{ev.state}", key, text, data, now)

    # -- delivery ----------------------------------------------------------------------------------
    def deliver_due(self, now: datetime | None = None) -> int:
        """Send every due row this instance can claim; returns how many were delivered."""
        with db.engine.connect() as conn:
            ids = outbox.due(conn, now or utcnow())
        return sum(1 for i in ids if (self.deliver(i) or {}).get("status") == outbox.DELIVERED)

    def deliver(self, delivery_id: int) -> dict | None:
        """Claim and send one row; None when another instance has it (or it is not due)."""
        now = utcnow()
        with db.engine.begin() as conn:
            if not outbox.claim(conn, delivery_id, now, self.lease):
                return None
            row = conn.execute(sa.select(WebhookDelivery.__table__).where(
                WebhookDelivery.__table__.c.id == delivery_id)).first()
            hook = conn.execute(sa.select(Webhook.__table__).where(Webhook.__table__.c.id == row.webhook_id)).first()
        status, error, final = self._send(row, hook)
        retry_at = None
        if error is not None and not final and row.attempts < self.max_attempts:
            wait = min(self.backoff_max, self.backoff * 2 ** (row.attempts - 1))
            retry_at = utcnow() + timedelta(seconds=wait)
        with db.engine.begin() as conn:
            outbox.record(conn, delivery_id, utcnow(), status, error, retry_at)
        if error is not None:
            log.warning("webhook %s: delivery %s attempt %d failed: %s", hook.name, delivery_id, row.attempts, error)
        state = outbox.DELIVERED if error is None else outbox.PENDING if retry_at else outbox.FAILED
        return {"status": state, "http_status": status, "error": error, "attempts": row.attempts}

    def _send(self, row, hook) -> tuple[int | None, str | None, bool]:
        """(HTTP status, error, final): the address guard runs again here, so DNS changes are caught."""
        try:
            url = validate_base_url(hook.url, self.allow_private)
        except UnsafeURL as exc:
            return None, f"refused by the address guard: {exc}", True
        try:
            secret = self.box.decrypt(hook.secret_encrypted) if hook.secret_encrypted else None
        except SecretError as exc:
            return None, str(exc), True
        data = delivery.body(hook.format, row.id, row.event, row.created_at, row.payload)
        status, error = delivery.post(self.session, url, data, delivery.headers(row.id, row.event, data, secret),
                                      self.timeout)
        return status, error, False
