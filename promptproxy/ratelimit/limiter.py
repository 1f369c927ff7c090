"""Rate limits, concurrency caps and budgets per user, per key and per group, shared between instances through
Redis (or between the worker processes of one `serve --workers N` through their shared file)."""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from ..alerts.events import BudgetSettled
from ..core.errors import ErrorCode, GatewayError
from ..core.state import State, make_state
from ..core.usage import prompt_tokens
from ..extensions import db
from ..models import BudgetUsage, utcnow
from .admission import Admission

log = logging.getLogger("promptproxy.limits")
STORE_ERRORS = (StorageError, OSError)  # plus the store's own errors (RedisError only once Redis is configured)
EPSILON = 1e-9  # float slack so a request costing exactly the remaining budget still fits
WHO = {"user": "your user", "key": "this API key"}


def who(kind: str, lim: dict) -> str:
    """The limit's owner as the 429 names it: your user, this API key, group 'research'."""
    return f"group '{lim.get('name')}'" if kind == "group" else WHO[kind]

# Atomic "take a slot if one is free": INCR, refresh the safety TTL, undo and refuse when over the cap.
ACQUIRE = """
local v = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if v > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
return v
"""
RELEASE = """
local v = redis.call('DECR', KEYS[1])
if v <= 0 then redis.call('DEL', KEYS[1]) end
return v
"""


IMAGE_TOKENS = 1600  # flat input tokens charged per image part (a large high-detail image costs about this)
MAX_ANSWERS = 128  # OpenAI's cap on `n`: beyond it the upstream refuses anyway


def _count(value, default: int) -> int:
    """A positive int from the body, else the default (bools and junk are the upstream's to refuse)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def answers(body: dict) -> int:
    """How many answers the upstream generates and bills: `n`, or `best_of` (completions) when larger."""
    return min(max(_count(body.get("n"), 1), _count(body.get("best_of"), 1)), MAX_ANSWERS)


def image_tokens(body: dict) -> int:
    """Input tokens for image parts, which prompt_tokens does not see: IMAGE_TOKENS each."""
    total = 0
    for message in body.get("messages") if isinstance(body.get("messages"), list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") in IMAGE_PARTS:
                total += IMAGE_TOKENS
    return total


IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})


class LimitsUnavailable(Exception):
    """The shared limit store (Redis) could not be reached."""


# -- periods ---------------------------------------------------------------------------------------
def period_start(period: str, now: datetime) -> datetime:
    """Start of the budget period holding `now` (naive UTC): midnight, Monday midnight or the 1st."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: str, start: datetime) -> datetime:
    """The first instant of the next period."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def duration(seconds: float) -> str:
    """OpenAI's reset format: `250ms`, `12s`, `6m0s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def retry_after(seconds: float) -> str:
    """Whole seconds, at least 1."""
    return str(max(math.ceil(seconds), 1))


# -- counters --------------------------------------------------------------------------------------
class MemoryCounters:
    """Concurrent-request counters for one process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def acquire(self, key: str, cap: int, ttl: int) -> bool:
        """Take a slot if fewer than `cap` are held."""
        with self._lock:
            held = self._counts.get(key, 0)
            if held >= cap:
                return False
            self._counts[key] = held + 1
            return True

    def release(self, key: str) -> None:
        """Give a slot back."""
        with self._lock:
            held = self._counts.get(key, 0) - 1
            if held > 0:
                self._counts[key] = held
            else:
                self._counts.pop(key, None)


class RedisCounters:
    """Concurrent-request counters shared through Redis; the TTL clears slots leaked by a crashed instance."""

    def __init__(self, client, prefix: str):
        self.prefix = prefix
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)

    def acquire(self, key: str, cap: int, ttl: int) -> bool:
        """Take a slot if fewer than `cap` are held (one atomic script)."""
        return bool(self._acquire([f"{self.prefix}:{key}"], [cap, ttl]))

    def release(self, key: str) -> None:
        """Give a slot back."""
        self._release([f"{self.prefix}:{key}"])


def slot_counters(state: State):
    """Concurrency slots in the state's own store: its Redis client, its shared file, or this process."""
    if state.kind == "redis":
        return RedisCounters(state.client, f"{state.prefix}:slots")
    if state.kind == "file":
        from ..core.sharedstore import SharedCounters

        return SharedCounters(state.shared)
    return MemoryCounters()


# -- budgets ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class Reservation:
    """Money held for one call in one subject's period."""

    subject: str
    period_start: datetime
    amount: float
    period: str = "month"
    limit: float = 0.0


class Budgets:
    """Reserve-then-settle spend in the budget_usage table; a conditional UPDATE makes it race-free."""

    table = BudgetUsage.__table__

    def reserve(self, engine, subject: str, start: datetime, amount: float, limit: float) -> bool:
        """Hold `amount` if spent + reserved + amount stays within `limit`."""
        t = self.table
        with engine.begin() as conn:
            self._ensure_row(conn, subject, start)
            done = conn.execute(
                sa.update(t).where(t.c.subject == subject, t.c.period_start == start,
                                   t.c.spent + t.c.reserved + amount <= limit + EPSILON)
                .values(reserved=t.c.reserved + amount))
            return done.rowcount == 1

    def settle(self, engine, res: Reservation, actual: float) -> None:
        """Replace the reservation with the actual cost (0 releases it)."""
        t = self.table
        left = t.c.reserved - res.amount
        with engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.subject == res.subject, t.c.period_start == res.period_start)
                         .values(reserved=sa.case((left < EPSILON, 0.0), else_=left), spent=t.c.spent + actual))

    def usage(self, engine, subject: str, start: datetime) -> tuple[float, float]:
        """(spent, reserved) for a subject's period."""
        t = self.table
        with engine.connect() as conn:
            row = conn.execute(sa.select(t.c.spent, t.c.reserved).where(
                t.c.subject == subject, t.c.period_start == start)).first()
        return (row.spent, row.reserved) if row else (0.0, 0.0)

    def _ensure_row(self, conn, subject: str, start: datetime) -> None:
        values = {"subject": subject, "period_start": start, "spent": 0.0, "reserved": 0.0}
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif conn.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - other databases: plain insert, duplicate ignored
            try:
                conn.execute(sa.insert(self.table).values(**values))
            except sa.exc.IntegrityError:
                pass
            return
        conn.execute(insert(self.table).values(**values).on_conflict_do_nothing(
            index_elements=["subject", "period_start"]))


# -- admission -------------------------------------------------------------------------------------
@dataclass
class LimitAdmission(Admission):
    """What one call holds: concurrency slots, TPM windows to charge, budget reservations."""

    limiter: Limiter
    headers: dict = field(default_factory=dict)
    slots: list = field(default_factory=list)
    tpm: list = field(default_factory=list)  # (item, identifiers)
    reservations: list = field(default_factory=list)
    engine: object = None
    done: bool = False

    def finish(self, call) -> None:
        """Release slots, add the real tokens to TPM windows, settle the budgets (each step best effort)."""
        if self.done:
            return
        self.done = True
        self.limiter.finish(self, call)


class Limiter:
    """RPM (moving window), TPM (fixed window of real usage), concurrency and budgets per user and per key."""

    def __init__(self, app, now=utcnow, state=None):
        cfg = app.config
        self.now = now  # injectable clock for budget periods
        self.fail_open = bool(cfg["LIMITS_FAIL_OPEN"])
        self.default_max_tokens = int(cfg["DEFAULT_MAX_TOKENS"])
        self.slot_ttl = int(cfg["TOTAL_TIMEOUT"]) + 60
        self.retry_seconds = float(cfg.get("LIMITS_RETRY_SECONDS", 5.0))
        # The gateway's one store (core/state.py); a limiter made alone (tests) picks its own from the config.
        self.state = state if state is not None else make_state(app)
        self.store_errors = (*STORE_ERRORS, *self.state.errors)
        self.storage = self.state.limits_storage()
        self.counters = slot_counters(self.state)
        self.requests = MovingWindowRateLimiter(self.storage)
        self.tokens = FixedWindowRateLimiter(self.storage)  # hit() always adds, so real usage is never dropped
        self.budgets = Budgets()
        self.alerts = None  # the gateway's alert event queue (budget thresholds)
        self._down_until = 0.0

    # -- admit -------------------------------------------------------------------------------------
    def admit(self, call, body: dict) -> LimitAdmission:
        """Check TPM, take an RPM hit and a concurrency slot, reserve budget; or raise a 429/503 GatewayError."""
        adm = LimitAdmission(self)
        subjects = self._subjects(call.principal)
        if any(lim.get("rpm") or lim.get("tpm") or lim.get("max_concurrent") for _, _, lim in subjects):
            try:
                self._shared(adm, subjects)
            except LimitsUnavailable:
                self._release_slots(adm)
                if not self.fail_open:
                    raise GatewayError(503, "Rate limits cannot be checked right now; please retry shortly.",
                                   code=ErrorCode.LIMITS_UNAVAILABLE, type="server_error",
                                   headers={"Retry-After": retry_after(self.retry_seconds)}) from None
                log.warning("limit store unreachable: admitting request %s without rate limits (fail open)",
                            call.request_id)
        try:
            self._reserve(adm, call, body, subjects)
        except BaseException:
            self._release_slots(adm)
            raise
        return adm

    def _subjects(self, principal) -> list[tuple[str, int, dict]]:
        limits = principal.limits or {}
        return [("key", principal.key_id, limits.get("key") or {}), ("user", principal.user_id,
                                                                     limits.get("user") or {}),
                *(("group", g["id"], g) for g in limits.get("groups") or ())]  # every group must pass too

    def _store(self, fn, *args, retry: bool = False, **kwargs):
        """Run one store operation; a failure marks the store down for a few seconds (checks skip it then)."""
        if not retry and self.state.kind == "redis" and time.monotonic() < self._down_until:
            raise LimitsUnavailable
        try:
            return fn(*args, **kwargs)
        except self.store_errors as exc:
            self._down_until = time.monotonic() + self.retry_seconds
            log.warning("limit store error: %s", type(exc).__name__)
            raise LimitsUnavailable from None

    def _shared(self, adm: LimitAdmission, subjects) -> None:
        tokens, requests = [], []
        for kind, ident, lim in subjects:
            ids = (kind, str(ident))
            if lim.get("tpm"):
                item = RateLimitItemPerMinute(lim["tpm"], namespace="tpm")
                stats = self._store(self.tokens.get_window_stats, item, *ids)
                tokens.append((who(kind, lim), item, stats))
                adm.tpm.append((item, ids))
        self._headers(adm.headers, "tokens", tokens)
        for owner, item, stats in tokens:
            if stats.remaining <= 0:
                raise self._too_many("tokens", owner, item.amount, stats.reset_time - time.time(), adm.headers)
        for kind, ident, lim in subjects:
            if lim.get("rpm"):
                item = RateLimitItemPerMinute(lim["rpm"], namespace="rpm")
                ids = (kind, str(ident))
                ok = self._store(self.requests.hit, item, *ids)
                stats = self._store(self.requests.get_window_stats, item, *ids)
                requests.append((who(kind, lim), item, stats))
                if not ok:
                    self._headers(adm.headers, "requests", requests)
                    raise self._too_many("requests", who(kind, lim), item.amount, stats.reset_time - time.time(),
                                         adm.headers)
        self._headers(adm.headers, "requests", requests)
        for kind, ident, lim in subjects:
            cap = lim.get("max_concurrent")
            if cap:
                key = f"{kind}:{ident}"
                if not self._store(self.counters.acquire, key, cap, self.slot_ttl):
                    raise GatewayError(429, f"Too many concurrent requests for {who(kind, lim)}: the limit is {cap}. "
                                        "Retry when one of them has finished.", code=ErrorCode.RATE_LIMITED,
                                   type="requests", headers={**adm.headers, "Retry-After": "1"})
                adm.slots.append(key)

    @staticmethod
    def _headers(headers: dict, what: str, entries) -> None:
        """The tightest subject's limit, remaining and reset, OpenAI's header names."""
        if not entries:
            return
        _, item, stats = min(entries, key=lambda e: (e[2].remaining, e[1].amount))
        headers[f"x-ratelimit-limit-{what}"] = str(item.amount)
        headers[f"x-ratelimit-remaining-{what}"] = str(max(stats.remaining, 0))
        headers[f"x-ratelimit-reset-{what}"] = duration(max(stats.reset_time - time.time(), 0))

    @staticmethod
    def _too_many(what: str, owner: str, amount: int, wait: float, headers: dict) -> GatewayError:
        short = "RPM" if what == "requests" else "TPM"
        return GatewayError(429, f"Rate limit reached for {owner} on {what} per min ({short}): Limit {amount}. "
                             f"Please try again in {duration(max(wait, 0))}.", code=ErrorCode.RATE_LIMITED,
                        type=what, headers={**headers, "Retry-After": retry_after(wait)})

    def _reserve(self, adm: LimitAdmission, call, body: dict, subjects) -> None:
        budgeted = [(kind, ident, lim) for kind, ident, lim in subjects if lim.get("budget_usd")]
        if not budgeted:
            return
        adm.engine = db.engine
        amount = self.estimate(call, body)
        now = self.now()
        for kind, ident, lim in budgeted:
            period = lim.get("budget_period") or "month"
            start = period_start(period, now)
            subject = f"{kind}:{ident}"
            if not self.budgets.reserve(adm.engine, subject, start, amount, lim["budget_usd"]):
                self._settle_budgets(adm, 0.0)
                wait = (period_end(period, start) - now).total_seconds()
                raise GatewayError(429, f"The budget of ${lim['budget_usd']:.2f} per {period} for {who(kind, lim)} is "
                                    f"used up or too small for this request; it resets at "
                                    f"{period_end(period, start).isoformat()}Z.",
                               code=ErrorCode.INSUFFICIENT_QUOTA, type="insufficient_quota",
                               headers={**adm.headers, "Retry-After": retry_after(wait)})
            adm.reservations.append(Reservation(subject, start, amount, period, lim["budget_usd"]))

    def estimate(self, call, body: dict) -> float:
        """Worst-case cost of the call as the upstream will bill it (see docs/limits.md, "What is estimated").

        Input: the prompt's tokens (tiktoken), plus the JSON of `tools`/`functions`, plus IMAGE_TOKENS per image
        part. Output: max_tokens (or the default cap) for every answer asked for: `n` (or `best_of`) of them.
        """
        model = call.model
        if model is None:  # an MCP tool call: no tokens, so only an exhausted budget refuses it
            return 0.0
        if not (model.input_price or model.output_price or model.cached_input_price):
            return 0.0
        tokens_in = prompt_tokens(body) + image_tokens(body)  # the built body: the stored prompt is in it
        tokens_out = 0
        if model.kind != "embedding":
            cap = body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
            tokens_out = _count(cap, 1) * answers(body)
        return (tokens_in * model.input_price + tokens_out * model.output_price) / 1_000_000

    # -- finish ------------------------------------------------------------------------------------
    def finish(self, adm: LimitAdmission, call) -> None:
        """Release, charge tokens, settle money; failures are logged, never raised into the response."""
        self._release_slots(adm)
        used = call.usage or {}
        total = (used.get("input_tokens") or 0) + (used.get("output_tokens") or 0)
        if total and adm.tpm:
            try:
                for item, ids in adm.tpm:
                    self._store(self.tokens.hit, item, *ids, cost=total, retry=True)
            except LimitsUnavailable:
                log.warning("limit store unreachable: tokens of request %s not counted", call.request_id)
        if adm.reservations:
            settled = adm.reservations
            # Spend is exactly the logged cost, so the budget equals the sum of the request log's costs.
            self._settle_budgets(adm, call.cost or 0.0)
            if call.cost and self.alerts is not None:  # the alerts thread compares spend with the thresholds
                for res in settled:
                    self.alerts.put(BudgetSettled(res.subject, res.period, res.period_start, res.limit))

    def _settle_budgets(self, adm: LimitAdmission, actual: float) -> None:
        for res in adm.reservations:
            try:
                self.budgets.settle(adm.engine, res, actual)
            except sa.exc.SQLAlchemyError:
                log.exception("budget settlement failed for %s", res.subject)
        adm.reservations = []

    def _release_slots(self, adm: LimitAdmission) -> None:
        for key in adm.slots:
            try:
                self._store(self.counters.release, key, retry=True)
            except LimitsUnavailable:
                log.warning("limit store unreachable: slot %s not released (expires by TTL)", key)
        adm.slots = []
