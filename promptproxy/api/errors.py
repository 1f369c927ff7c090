"""Error envelopes: OpenAI's on OpenAI routes, Anthropic's on /v1/messages."""
from __future__ import annotations

import orjson
from flask import Response

ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 415: "invalid_request_error",
    429: "rate_limit_error", 431: "request_too_large", 500: "api_error", 502: "api_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
}
OPENAI_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
    404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
    415: "invalid_request_error", 429: "rate_limit_exceeded", 431: "invalid_request_error",
}


class ApiError(Exception):
    """An error answered to the client; `kind` is our error class, recorded in the request log."""

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
        return self.code or self.type


def openai_body(err: ApiError) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def anthropic_body(err: ApiError) -> dict:
    """The Anthropic error object."""
    kind = ANTHROPIC_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def error_response(err: ApiError, dialect: str = "openai") -> Response:
    """Render an ApiError as JSON in the caller's dialect."""
    body = anthropic_body(err) if dialect == "anthropic" else openai_body(err)
    resp = Response(orjson.dumps(body), status=err.status, mimetype="application/json")
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


def model_not_found(name: str) -> ApiError:
    """OpenAI's own words for an unknown or forbidden model."""
    return ApiError(404, f"The model `{name}` does not exist or you do not have access to it.",
                    code="model_not_found")


def prompt_not_found(name: str) -> ApiError:
    """The same for a stored prompt."""
    return ApiError(404, f"The prompt `{name}` does not exist or you do not have access to it.",
                    code="prompt_not_found")
