"""Errors waitress answers itself (body or headers too large, malformed HTTP) as JSON in the caller's dialect."""
from __future__ import annotations

import uuid

import orjson
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.task import ErrorTask

from .api.errors import ApiError, anthropic_body, openai_body

MESSAGES = {
    413: ("The request body is too large.", "request_too_large"),
    431: ("The request headers are too large.", "request_header_fields_too_large"),
    400: ("The HTTP request is malformed.", "invalid_request"),
}


class JsonErrorTask(ErrorTask):
    """Like waitress's ErrorTask, but JSON for /v1 and when the path is unknown (431); plain text elsewhere."""

    def execute(self):
        """Write the error response; the app never saw this request, so no log row exists for it."""
        error = self.request.error
        # For 431 waitress never parsed the request line (it substitutes `GET /`): the path is unknown.
        path = "" if error.code == 431 else (getattr(self.request, "path", None) or "")
        if path and not (path == "/v1" or path.startswith("/v1/")):
            return super().execute()
        message, code = MESSAGES.get(error.code, (error.reason, "invalid_request"))
        err = ApiError(error.code, message, code=code)
        anthropic = path.startswith("/v1/messages")
        body = orjson.dumps(anthropic_body(err) if anthropic else openai_body(err))
        request_id = "req_" + uuid.uuid4().hex[:24]
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("x-request-id", request_id)])
        if anthropic:
            self.response_headers.append(("request-id", request_id))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    """An HTTP channel whose own errors are JSON on the API."""

    error_task_class = JsonErrorTask


def json_errors(server) -> None:
    """Make a waitress server (from create_server) answer its own errors with JsonErrorTask."""
    if isinstance(server, MultiSocketServer):
        for listener in server.map.values():
            if isinstance(listener, BaseWSGIServer):
                listener.channel_class = JsonErrorChannel
    else:
        server.channel_class = JsonErrorChannel
