"""A small synchronous MCP client for upstream tool servers: streamable HTTP, JSON or SSE answers, sessions."""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import orjson
import requests
from urllib3.exceptions import HTTPError

from ..core.catalog import McpServerInfo
from ..core.deadline import chunks_until
from ..core.sse import SSEParser

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
LATEST = PROTOCOL_VERSIONS[0]
MAX_BODY_BYTES = 16 * 1024 * 1024  # one upstream answer; tool results are usually kilobytes
CLIENT_INFO = {"name": "promptproxy", "version": "1"}
# JSON-RPC error codes the gateway itself uses (the -32000..-32099 range is for implementations).
UPSTREAM_FAILED = -32002


class McpError(Exception):
    """A JSON-RPC error for the client: from the upstream (passed back) or about it (unreachable, bad answer).

    `status` is the HTTP-like outcome recorded on the request-log row.
    """

    def __init__(self, code: int, message: str, data=None, status: int = 502, kind: str = "mcp_upstream_error"):
        super().__init__(message)
        self.code, self.message, self.data, self.status, self.kind = code, message, data, status, kind


@dataclass
class UpstreamSession:
    """What one gateway session knows about one upstream: its session id and negotiated version."""

    session_id: str | None = None
    version: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_ids = itertools.count(1)


class McpClient:
    """Talks to one upstream MCP server with that server's own credentials (never the caller's)."""

    def __init__(self, server: McpServerInfo, http: requests.Session, connect_timeout: float):
        self.server = server
        self.http = http
        self.connect_timeout = connect_timeout

    def request(self, state: UpstreamSession, method: str, params: dict | None, deadline: float) -> dict:
        """Send one request on the (lazily initialised) upstream session; a lost session is renewed once.

        Everything, the handshake included, ends by `deadline` (perf_counter time): the server's `timeout` is a
        total limit, as a provider's `total_timeout` is on /v1.
        """
        with state.lock:
            if state.version is None:
                self._initialize(state, deadline)
        try:
            return self._exchange(state, method, params, deadline)
        except SessionLost:
            with state.lock:
                self._initialize(state, deadline)
            return self._exchange(state, method, params, deadline)

    def close(self, state: UpstreamSession) -> None:
        """End the upstream session (DELETE), ignoring failures: the server may not support it."""
        if state.session_id:
            try:
                self.http.delete(self.server.url, headers=self._headers(state), allow_redirects=False,
                                 timeout=(self.connect_timeout, 5))
            except requests.RequestException:
                pass
            state.session_id = None

    # -- internals -------------------------------------------------------------------------------
    def _initialize(self, state: UpstreamSession, deadline: float) -> None:
        state.session_id, state.version = None, None
        params = {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": CLIENT_INFO}
        result = self._exchange(state, "initialize", params, deadline, initializing=True)
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        if version not in PROTOCOL_VERSIONS:
            raise McpError(UPSTREAM_FAILED, f"MCP server `{self.server.name}` speaks an unsupported protocol "
                           "version.", status=502, kind="bad_upstream_response")
        state.version = version
        self._post(state, {"jsonrpc": "2.0", "method": "notifications/initialized"}, deadline)

    def _exchange(self, state: UpstreamSession, method: str, params, deadline: float,
                  initializing: bool = False) -> dict:
        rid = next(_ids)
        message = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        answer = self._post(state, message, deadline, initializing=initializing)
        reply = next((m for m in answer if isinstance(m, dict) and m.get("id") == rid and
                      ("result" in m or "error" in m)), None)
        if reply is None:
            raise self._bad("sent no answer to the request")
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            code = err.get("code") if isinstance(err.get("code"), int) else UPSTREAM_FAILED
            raise McpError(code, str(err.get("message") or "error"), err.get("data"))
        return reply["result"] if isinstance(reply["result"], dict) else {}

    def _headers(self, state: UpstreamSession) -> dict:
        headers = {**self.server.headers, "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json"}
        if self.server.api_key:
            headers["Authorization"] = f"Bearer {self.server.api_key}"
        if state.session_id:
            headers["Mcp-Session-Id"] = state.session_id
        if state.version:
            headers["MCP-Protocol-Version"] = state.version
        return headers

    def _post(self, state: UpstreamSession, message: dict, deadline: float, initializing: bool = False) -> list:
        """POST one message; returns the messages the server answered with (none for a notification)."""
        name = self.server.name
        left = deadline - time.perf_counter()
        if left <= 0:
            raise self._late()
        try:
            resp = self.http.post(self.server.url, data=orjson.dumps(message), headers=self._headers(state),
                                  stream=True, allow_redirects=False,
                                  timeout=(min(self.connect_timeout, left), left))
        except requests.exceptions.ConnectTimeout:
            raise McpError(UPSTREAM_FAILED, f"MCP server `{name}` did not accept the connection in time.",
                           status=504, kind="upstream_timeout") from None
        except requests.exceptions.Timeout:
            raise self._late() from None
        except (requests.RequestException, ValueError):
            raise McpError(UPSTREAM_FAILED, f"MCP server `{name}` could not be reached.", status=502,
                           kind="upstream_unavailable") from None
        with resp:
            try:
                return self._answer(state, message, resp, deadline, initializing)
            except TimeoutError:
                raise self._late() from None
            except (HTTPError, OSError, requests.RequestException):
                raise McpError(UPSTREAM_FAILED, f"MCP server `{name}` broke the connection mid-answer.",
                               status=502, kind="upstream_disconnect") from None

    def _answer(self, state: UpstreamSession, message: dict, resp: requests.Response, deadline: float,
                initializing: bool) -> list:
        """The messages of one HTTP answer, read by the deadline."""
        name = self.server.name
        if resp.status_code == 404 and state.session_id and not initializing:
            raise SessionLost
        if resp.status_code >= 300:
            raise McpError(UPSTREAM_FAILED, f"MCP server `{name}` answered HTTP {resp.status_code}.",
                           status=502, kind="upstream_auth_failed" if resp.status_code in (401, 403)
                           else "upstream_error")
        if initializing and resp.headers.get("Mcp-Session-Id"):
            state.session_id = resp.headers["Mcp-Session-Id"][:256]
        if resp.status_code == 202 or "id" not in message:
            return []
        kind = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind == "text/event-stream":
            return self._events(resp, message["id"], deadline)
        if kind != "application/json":
            raise self._bad(f"answered with Content-Type `{kind[:60]}`")
        body = self._read(resp, deadline)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise self._bad("answered with invalid JSON") from None
        return data if isinstance(data, list) else [data]

    def _read(self, resp: requests.Response, deadline: float) -> bytes:
        chunks, size = [], 0
        for chunk in chunks_until(resp, deadline):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise self._bad("sent an answer larger than the gateway's limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def _events(self, resp: requests.Response, rid, deadline: float) -> list:
        """Read SSE events until the answer to `rid`; keep-alive comments do not extend the deadline."""
        parser, out, size = SSEParser(MAX_BODY_BYTES), [], 0
        for chunk in chunks_until(resp, deadline):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise self._bad("sent an answer larger than the gateway's limit")
            for event in parser.feed(chunk):
                if not event.data:
                    continue
                try:
                    msg = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    raise self._bad("sent an event that is not JSON") from None
                out.append(msg)
                if isinstance(msg, dict) and msg.get("id") == rid and "method" not in msg:
                    return out
        return out

    def _late(self) -> McpError:
        return McpError(UPSTREAM_FAILED, f"MCP server `{self.server.name}` did not answer within its time limit "
                        f"({self.server.timeout:g} s).", status=504, kind="upstream_timeout")

    def _bad(self, what: str) -> McpError:
        return McpError(UPSTREAM_FAILED, f"MCP server `{self.server.name}` {what}.", status=502,
                        kind="bad_upstream_response")


class SessionLost(Exception):
    """The upstream no longer knows our session (HTTP 404): initialise again."""
