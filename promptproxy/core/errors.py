"""One gateway error hierarchy with an error-code enum; the edge renders it in the caller's envelope."""
from __future__ import annotations

from enum import StrEnum

# OpenAI's error `type` for each status; the Anthropic envelope has its own table at the edge.
OPENAI_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
    404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
    415: "invalid_request_error", 429: "rate_limit_exceeded", 431: "invalid_request_error",
}


class ErrorCode(StrEnum):
    """The gateway's own error codes: in error bodies, the request log and metrics (docs/errors.md)."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MISSING_MODEL = "missing_model"
    INVALID_MODEL = "invalid_model"
    MODEL_NOT_FOUND = "model_not_found"
    PROMPT_NOT_FOUND = "prompt_not_found"
    RESPONSE_NOT_FOUND = "response_not_found"
    WRONG_MODEL_KIND = "wrong_model_kind"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    UNSUPPORTED_FOR_PROVIDER = "unsupported_for_provider"
    INVALID_PROMPT_REQUEST = "invalid_prompt_request"
    INVALID_TAGS = "invalid_tags"
    INVALID_API_KEY = "invalid_api_key"
    USER_DISABLED = "user_disabled"
    RATE_LIMITED = "rate_limit_exceeded"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    LIMITS_UNAVAILABLE = "limits_unavailable"
    PROVIDER_MISCONFIGURED = "provider_misconfigured"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_AUTH_FAILED = "upstream_auth_failed"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_DISCONNECT = "upstream_disconnect"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    BAD_UPSTREAM_RESPONSE = "bad_upstream_response"
    OVERLOADED = "overloaded"
    CLIENT_DISCONNECTED = "client_disconnected"
    INTERNAL_ERROR = "internal_error"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TOO_LARGE = "request_too_large"


# Upstream answers worth asking again: timeouts, rate limits, server errors (529: Anthropic's "overloaded").
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


class Fault(StrEnum):
    """How one upstream attempt failed, for retries, fallbacks and the circuit breaker."""

    CONNECT = "connect"  # refused, reset, connect timeout: the request never reached the upstream
    FIRST_BYTE = "first_byte"  # no answer in time
    STATUS = "status"  # an HTTP error answer
    BAD = "bad"  # a 2xx (or redirect) the gateway cannot use


class GatewayError(Exception):
    """An error answered to the client; `kind` is its short class in the request log and metrics."""

    def __init__(self, status: int, message: str, *, code: str | None = None, type: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type or OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.headers = headers or {}

    @property
    def kind(self) -> str:
        """Short error class for the log: the code, else the type."""
        return str(self.code or self.type)


class UpstreamError(GatewayError):
    """One upstream attempt failed; `fault` and `upstream_status` steer retries, fallbacks and the breaker."""

    def __init__(self, status: int, message: str, *, fault: Fault, upstream_status: int | None = None,
                 retry_after: float | None = None, **kwargs):
        kwargs.setdefault("type", "server_error" if status >= 500 else None)
        super().__init__(status, message, **kwargs)
        self.fault = fault
        self.upstream_status = upstream_status
        self.retry_after = retry_after

    @classmethod
    def mid_stream(cls, err: GatewayError) -> UpstreamError:
        """A stream's failure after its first byte, judged as an upstream answer with the error's status."""
        if isinstance(err, UpstreamError):
            return err
        return cls(err.status, err.message, fault=Fault.STATUS, upstream_status=err.status, code=err.code,
                   type=err.type)

    @property
    def retryable(self) -> bool:
        """May the same deployment be asked again? Connect failures and retryable statuses, never client errors."""
        if self.fault is Fault.CONNECT:
            return True
        return self.fault is Fault.STATUS and self.upstream_status in RETRYABLE_STATUSES

    @property
    def fallback_worthy(self) -> bool:
        """May the next target (another deployment, a fallback model) be tried? Also after a first-byte timeout."""
        return self.retryable or self.fault is Fault.FIRST_BYTE

    @property
    def throttled(self) -> bool:
        """An upstream 429: this deployment is up but busy; it waits out Retry-After and counts as no failure."""
        return self.fault is Fault.STATUS and self.upstream_status == 429

    @property
    def counts_against_health(self) -> bool:
        """The upstream's fault: connect failures, timeouts, unusable answers, 5xx and 408 (client 4xx never)."""
        if self.fault in (Fault.CONNECT, Fault.FIRST_BYTE, Fault.BAD):
            return True
        status = self.upstream_status or 0
        return self.fault is Fault.STATUS and (status >= 500 or status == 408)

    @property
    def host_down(self) -> bool:
        """A failure whatever was asked (connect failure, timeout): it counts for the whole provider, no quorum."""
        return self.fault in (Fault.CONNECT, Fault.FIRST_BYTE)


def model_not_found(name: str) -> GatewayError:
    """OpenAI's own words for an unknown or forbidden model."""
    return GatewayError(404, f"The model `{name}` does not exist or you do not have access to it.",
                        code=ErrorCode.MODEL_NOT_FOUND)


def prompt_not_found(name: str) -> GatewayError:
    """The same for a stored prompt."""
    return GatewayError(404, f"The prompt `{name}` does not exist or you do not have access to it.",
                        code=ErrorCode.PROMPT_NOT_FOUND)
