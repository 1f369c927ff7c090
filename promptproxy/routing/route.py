"""Routing as data: a model resolves to an ordered list of targets, and one loop walks it.

The targets are the model's deployments (by priority and weight, or least busy), then each fallback's, in order.
`walk` tries them in turn within the call's deadline: it retries a retryable failure on the same deployment with
backoff (unless another deployment of the same model is next), passes over deployments that wait out a 429 or
are at their own rpm/tpm, and over providers whose breaker is open. Health is noted as it goes: per deployment
after each attempt, per provider once per request (routing/breakers.py). The errors decide by themselves
(`UpstreamError.retryable`, `fallback_worthy`, `counts_against_health`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..core.catalog import ModelInfo
from ..core.errors import ErrorCode, GatewayError, UpstreamError


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send the call: a deployment of the model asked for or of one of its fallbacks."""

    dep: ModelInfo  # the deployment: the model with its provider and upstream model name
    model: ModelInfo  # the model it belongs to
    state: dict  # its health when the list was made
    spare: bool = False  # ejected or drained: tried only if no healthy deployment of its model was


def candidates(gw, model: ModelInfo, supports) -> list[ModelInfo]:
    """The model, then its fallbacks in order; only those of the same kind whose provider can serve the call."""
    out, seen = ([model] if supports(model) else []), {model.id}
    for slug in model.fallbacks:
        found = gw.catalog.model(slug)
        if found is None or found.id in seen or found.kind != model.kind or not supports(found):
            continue
        seen.add(found.id)
        out.append(found)
    return out


def targets(gw, models: list[ModelInfo]) -> list[Target]:
    """Every deployment of these models in the order to try them, with their health read in one go."""
    groups = [(m, list(m.deployments) or [m]) for m in models]
    states = iter(gw.deployments.read([d for _, deps in groups for d in deps]))
    out = []
    for model, deps in groups:
        ordered = gw.deployments.order(model, deps, [next(states) for _ in deps])
        out.extend(Target(dep, model, st, spare) for dep, st, spare in ordered)
    return out


@dataclass(slots=True)
class _Walk:
    """What one walk has learnt: the last failure, what it passed over and why, one outcome per provider."""

    last: UpstreamError | None = None
    failures: list = None  # (model slug, error kind) of each failed attempt
    skipped: list = None  # (reason, seconds until it may be tried)
    outcomes: dict = None  # provider id -> (provider, error or None for success, probe)
    tried: set = None  # ids of the models one of whose healthy deployments was tried

    def __post_init__(self):
        self.failures, self.skipped, self.outcomes, self.tried = [], [], {}, set()


def walk(gw, call, route: list[Target], attempt):
    """Send to the first target that answers; (target, attempt's result, failures) or the error to answer.

    `attempt(target, remaining seconds)` returns a result or raises GatewayError (UpstreamError for upstream
    faults). A 2xx leaves the deployment in flight until `gw.deployments.release`.
    """
    seen = _Walk()
    breakers = gw.breakers.read([t.dep.provider for t in route])
    try:
        for index, target in enumerate(route):
            found = _try(gw, call, route, index, target, breakers, seen, attempt)
            if found is not None:
                return target, found[0], seen.failures
        raise _nothing_served(gw, route, seen)
    finally:
        key = call.principal.key_id if call.principal else None
        for provider, err, probe in seen.outcomes.values():
            if err is None:
                gw.breakers.success(provider, None if probe else breakers.get(provider.id))
            elif err.counts_against_health:
                gw.breakers.failure(provider, err, key, probe=probe)
            else:  # a client error or a 429: the host is up
                gw.breakers.neutral(provider)


def _try(gw, call, route, index: int, target: Target, breakers: dict, seen: _Walk, attempt) -> tuple | None:
    """Attempts on one target, retried per the policy: (result,) or None to go on to the next target."""
    policy, dep, provider = gw.retry, target.dep, target.dep.provider
    if target.spare and target.model.id in seen.tried:
        return None
    now = gw.deployments.clock()
    for retry in range(policy.max_retries + 1):
        remaining = call.deadline - time.perf_counter()
        if remaining <= 0:
            raise seen.last or _deadline_error()
        waiting = gw.deployments.waiting(dep, target.state, now)
        if waiting:
            seen.skipped.append((waiting, max(target.state.get("busy_until", 0) - now, 0.0) if waiting ==
                                 "throttled" else gw.deployments.minute_left()))
            return None
        probing = seen.outcomes.get(provider.id, (None, None, False))[2]
        gate = None if probing else gw.breakers.admit(provider, breakers.get(provider.id, {}))
        if gate is None:  # open, or this request already is the probe (a probe is one attempt)
            seen.skipped.append(("paused", gw.breakers.retry_after(provider, breakers.get(provider.id, {}))))
            return None
        if not gw.deployments.begin(dep):
            seen.skipped.append(("limited", gw.deployments.minute_left()))
            return None
        if not target.spare:
            seen.tried.add(target.model.id)
        try:
            result = attempt(target, remaining)
        except UpstreamError as err:
            gw.deployments.failed(dep, target.model.deployments, err)
            seen.outcomes[provider.id] = (provider, err, gate == "probe")
            if not err.fallback_worthy:
                raise
            seen.last = err
            seen.failures.append((target.model.slug, err.kind))
            if gate == "probe" or not err.retryable or retry == policy.max_retries or _sibling_next(route, index):
                return None  # another deployment of the same model goes before a retry
            # A 429's Retry-After up to RETRY_AFTER_CAP is waited out here; others pass over the deployment.
            wait = policy.delay(retry + 1, err.retry_after)
            if wait is None or time.perf_counter() + wait >= call.deadline:
                return None
            time.sleep(wait)
            continue
        except BaseException:
            gw.deployments.abandoned(dep)
            raise
        gw.deployments.succeeded(dep, target.state)
        seen.outcomes[provider.id] = (provider, None, gate == "probe")
        return (result,)
    return None


def _sibling_next(route: list[Target], index: int) -> bool:
    """Is another deployment of the same model still ahead in the list?"""
    model_id = route[index].model.id
    return any(t.model.id == model_id for t in route[index + 1:])


def _nothing_served(gw, route: list[Target], seen: _Walk) -> GatewayError:
    """The error when no target answered: the last failure, else why every target was passed over."""
    if seen.last is not None:
        return seen.last
    reasons = {reason for reason, _ in seen.skipped}
    after = str(max(math.ceil(min(seconds for _, seconds in seen.skipped)), 1)) if seen.skipped else "1"
    if reasons == {"limited"}:
        return GatewayError(429, f"Every deployment of `{route[0].model.slug}` is at its own rate limit this "
                            "minute; try again later.", code=ErrorCode.RATE_LIMITED, type="requests",
                            headers={"Retry-After": after})
    if reasons <= {"throttled", "limited"}:
        return GatewayError(429, "The upstream asked the gateway to slow down; try again after the Retry-After "
                            "delay.", code=ErrorCode.RATE_LIMITED, type="requests", headers={"Retry-After": after})
    paused = min(seconds for reason, seconds in seen.skipped if reason == "paused")
    return GatewayError(503, "The upstream for this model is failing; the gateway paused requests to it. "
                        "Try again later.", code=ErrorCode.UPSTREAM_UNAVAILABLE, type="server_error",
                        headers={"Retry-After": str(max(math.ceil(paused), 1))})


def _deadline_error() -> GatewayError:
    return GatewayError(504, "The upstream did not answer within the total time limit.",
                        code=ErrorCode.UPSTREAM_TIMEOUT, type="server_error")
