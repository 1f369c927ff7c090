"""Whether a failure is the upstream's fault is decided once, by the error itself."""
from __future__ import annotations

import pytest

from promptproxy.core.errors import ErrorCode, Fault, GatewayError, UpstreamError


def status(code: int, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(502 if code >= 500 else code, "x", fault=Fault.STATUS, upstream_status=code,
                         retry_after=retry_after)


@pytest.mark.parametrize(("err", "retryable", "fallback", "health", "host_down", "throttled"), [
    (UpstreamError(502, "x", fault=Fault.CONNECT), True, True, True, True, False),
    (UpstreamError(504, "x", fault=Fault.FIRST_BYTE), False, True, True, True, False),
    (UpstreamError(502, "x", fault=Fault.BAD), False, False, True, False, False),
    (status(500), True, True, True, False, False),
    (status(529), True, True, True, False, False),
    (status(501), False, False, True, False, False),
    (status(408), True, True, True, False, False),
    (status(429, 5.0), True, True, False, False, True),
    (status(400), False, False, False, False, False),
    (status(404), False, False, False, False, False),
])
def test_each_fault_classifies_itself(err, retryable, fallback, health, host_down, throttled):
    assert (err.retryable, err.fallback_worthy, err.counts_against_health, err.host_down, err.throttled) == (
        retryable, fallback, health, host_down, throttled)


def test_a_mid_stream_failure_is_judged_by_its_status():
    cut = UpstreamError.mid_stream(GatewayError(502, "cut", code=ErrorCode.UPSTREAM_DISCONNECT))
    assert cut.counts_against_health and cut.kind == "upstream_disconnect"
    in_band = UpstreamError.mid_stream(GatewayError(400, "bad field", code="invalid_request_error"))
    assert not in_band.counts_against_health
