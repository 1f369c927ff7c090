"""App-wide hooks for /v1: a Call per request, JSON errors for everything, one log row each."""
from __future__ import annotations

import logging

from flask import current_app, g, request
from werkzeug.exceptions import HTTPException

from ..core.call import Call
from ..core.errors import GatewayError
from ..errors import html_error
from ..extensions import db
from .errors import error_response

log = logging.getLogger("promptproxy.api")
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
              431: "request_header_fields_too_large", 400: "invalid_request"}


def is_api() -> bool:
    """True for requests under /v1 (decided by the path, never the Host header)."""
    return request.path == "/v1" or request.path.startswith("/v1/")


def dialect() -> str:
    """The caller's error dialect."""
    return "anthropic" if request.path.startswith("/v1/messages") else "openai"


def inbound() -> str:
    """The inbound format recorded on the row."""
    return "responses" if request.path.startswith("/v1/responses") else dialect()


def start_call() -> None:
    """Open a Call for every /v1 request."""
    if is_api():
        g.call = Call(endpoint=request.path[:64], inbound=inbound(), client_ip=client_ip())


def client_ip() -> str | None:
    """The peer address (X-Forwarded-For is honoured only through ProxyFix when configured)."""
    return request.remote_addr


def finish_call(response):
    """Add x-request-id and limit headers; record calls the pipeline never took (auth, JSON, unknown paths)."""
    call = g.get("call")
    if call is None:
        return response
    response.headers["x-request-id"] = call.request_id
    if call.inbound == "anthropic":
        response.headers["request-id"] = call.request_id
    for name, value in call.headers.items():
        response.headers.setdefault(name, value)
    if not call.in_pipeline:
        if response.status_code >= 400 and call.status < 400:
            call.status = response.status_code
        current_app.extensions["promptproxy"].record(call)
    return response


def handle_api_error(err: GatewayError):
    """Our own errors, in the caller's dialect."""
    call = g.get("call")
    if call is not None:
        call.fail(err)
    return error_response(err, dialect())


def handle_http_error(exc: HTTPException):
    """Flask's own 404/405/413/... as JSON under /v1; HTML elsewhere."""
    if not is_api():
        return html_error(exc.code or 500, exc)
    if g.get("call") is None:
        start_call()
    status = exc.code or 500
    message = {404: "Unknown request URL: {method} {path}. Please check the URL and method.",
               405: "Method {method} is not allowed for {path}.",
               413: "The request body is too large."}.get(status, exc.description or exc.name)
    err = GatewayError(status, message.format(method=request.method, path=request.path[:200]),
                   code=HTTP_CODES.get(status, exc.name.lower().replace(" ", "_")))
    response = handle_api_error(err)
    if status == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def handle_unexpected(exc: Exception):
    """Anything unexpected: logged with the request id, answered without a traceback."""
    if isinstance(exc, HTTPException):
        return handle_http_error(exc)
    call = g.get("call")
    log.exception("unhandled error in request %s", call.request_id if call else "-")
    db.session.rollback()
    if not is_api():
        return html_error(500)
    if call is None:
        start_call()
    return handle_api_error(GatewayError(500, "The gateway hit an internal error. Quote the request id "
                                          "(x-request-id) when reporting it.", code="internal_error",
                                     type="server_error"))


def install(app) -> None:
    """Register the hooks on the app."""
    app.before_request(start_call)
    app.after_request(finish_call)
    app.register_error_handler(GatewayError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
