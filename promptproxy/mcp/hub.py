"""The MCP gateway's state and methods: sessions bound to keys, tools and prompts of permitted servers, calls."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..core import prompts as P
from ..core.call import Call
from ..core.catalog import McpServerInfo, Principal
from ..core.errors import GatewayError
from ..proxy.send import scrub
from ..transport.guarded_http import guarded_session
from .client import LATEST, PROTOCOL_VERSIONS, McpClient, McpError, UpstreamSession

log = logging.getLogger("promptproxy.mcp")
SEP = "__"  # SERVER__TOOL: server names never hold "__", so the first one splits
MAX_SESSIONS = 10_000
MAX_PAGES = 20  # of one upstream's paginated tools/list or prompts/list
INVALID_PARAMS, NOT_FOUND, REFUSED, METHOD_NOT_FOUND = -32602, -32602, -32001, -32601


@dataclass
class SessionState:
    """One client session: whose it is, the negotiated version, and its sessions with each upstream."""

    key_id: int
    version: str
    upstreams: dict = field(default_factory=dict)  # (server id, url) -> UpstreamSession
    used: float = field(default_factory=time.monotonic)


class Hub:
    """Per-app MCP state; one instance lives on the Gateway's app as extensions["promptproxy.mcp"]."""

    def __init__(self, app):
        self.secret = hashlib.sha256(b"promptproxy mcp sessions\0" + app.config["SECRET_KEY"].encode()).digest()
        self.connect_timeout = app.config["CONNECT_TIMEOUT"]
        self.http = guarded_session(app.config["ALLOW_PRIVATE_UPSTREAMS"])
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    # -- sessions ----------------------------------------------------------------------------------
    def _mac(self, nonce: str, key_id: int) -> str:
        return hmac.new(self.secret, f"{nonce}:{key_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def open(self, principal: Principal, version: str) -> str:
        """A new session id: 192 random bits plus a MAC binding it to the key (valid on every instance)."""
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[nonce] = SessionState(principal.key_id, version)
            while len(self._sessions) > MAX_SESSIONS:
                self._drop(self._sessions.popitem(last=False)[1])
        return f"{nonce}.{self._mac(nonce, principal.key_id)}"

    def session(self, principal: Principal, session_id: str, version: str | None) -> SessionState | None:
        """The caller's session, or None when the id is unknown, ended or another key's."""
        nonce, _, mac = session_id.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(nonce, principal.key_id).encode()):
            return None
        with self._lock:
            if nonce in self._ended:
                return None
            state = self._sessions.get(nonce)
            if state is None:  # opened by another instance or before a restart: the MAC proves it is the key's
                state = self._sessions[nonce] = SessionState(principal.key_id, version or LATEST)
            self._sessions.move_to_end(nonce)
            state.used = time.monotonic()
            return state

    def end(self, session_id: str, gw) -> None:
        """Forget a session and end its upstream sessions."""
        nonce = session_id.partition(".")[0]
        with self._lock:
            state = self._sessions.pop(nonce, None)
            self._ended[nonce] = None
            while len(self._ended) > MAX_SESSIONS:
                self._ended.popitem(last=False)
        if state is not None:
            self._drop(state, gw)

    def _drop(self, state: SessionState, gw=None) -> None:
        servers = {(s.id, s.url): s for s in gw.catalog.mcp_servers.values()} if gw else {}
        for ref, upstream in state.upstreams.items():
            if ref in servers:
                self._client(servers[ref]).close(upstream)

    # -- access -------------------------------------------------------------------------------------
    @staticmethod
    def servers(gw, principal: Principal) -> list[McpServerInfo]:
        """The enabled servers the key may use (some of), by name."""
        return [s for name, s in sorted(gw.catalog.mcp_servers.items()) if principal.may_use_server(name)]

    @staticmethod
    def stored_prompts(gw, principal: Principal) -> list:
        """The stored prompts published over MCP that the key may use, by slug."""
        return [p for slug, p in sorted(gw.catalog.prompts.items()) if p.mcp and principal.may_use_prompt(slug)]

    def _client(self, server: McpServerInfo) -> McpClient:
        if server.broken:
            raise McpError(-32002, f"MCP server `{server.name}` is misconfigured; ask an administrator.",
                           status=502, kind="provider_misconfigured")
        return McpClient(server, self.http, self.connect_timeout)

    def _upstream(self, state: SessionState, server: McpServerInfo) -> UpstreamSession:
        with self._lock:
            return state.upstreams.setdefault((server.id, server.url), UpstreamSession())

    def _request(self, gw, call: Call, state: SessionState, server: McpServerInfo, method: str,
                 params: dict | None, deadline: float | None = None) -> dict:
        """One upstream request with the server's credentials, within its timeout: one attempt of the call.

        Whatever the server answers (results, descriptions, errors) is scrubbed of its secrets and URL: a caller
        granted one tool must never see the credential the administrator stored for the whole server.
        """
        deadline = deadline or time.perf_counter() + server.timeout
        client = self._client(server)
        try:
            with gw.lifecycle.attempt(call, server, method, None):  # e.g. a span
                result = client.request(self._upstream(state, server), method, params, deadline)
        except McpError as exc:
            exc.message = scrub(exc.message, server)
            exc.data = None if exc.data is None else scrub_value(exc.data, server)
            raise
        cursor = result.get("nextCursor")
        result = scrub_value(result, server)
        if cursor is not None:  # opaque, sent back only to the server that made it, never shown to the client
            result["nextCursor"] = cursor
        return result

    def _pages(self, gw, call: Call, state, server, method: str, key: str) -> list:
        """Every page of a list, all within the server's one timeout."""
        items, cursor = [], None
        deadline = time.perf_counter() + server.timeout
        for _ in range(MAX_PAGES):
            result = self._request(gw, call, state, server, method, {"cursor": cursor} if cursor else None,
                                   deadline)
            items.extend(i for i in result.get(key) or () if isinstance(i, dict) and isinstance(i.get("name"), str))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return items

    # -- the call lifecycle: limits, tags, traces and the log -----------------------------------------
    @staticmethod
    @contextmanager
    def _recorded(gw, call: Call):
        """The call's lifecycle around a method that reaches servers (proxy/lifecycle.py): started (tags, a trace),
        settled, and one request-log row whatever happens (an McpError's outcome written on it)."""
        try:
            try:
                gw.lifecycle.start(call, None)
            except GatewayError as exc:  # a malformed x-promptproxy-tags header
                raise McpError(INVALID_PARAMS, exc.message, {"status": exc.status, "type": exc.kind},
                               status=exc.status, kind=exc.kind) from None
            yield
        except McpError as exc:
            call.status, call.error_type, call.error_message = exc.status, exc.kind, exc.message[:500]
            raise
        finally:
            try:
                gw.lifecycle.settle(call)  # unless admitted and settled already
            finally:
                gw.record(call)

    @staticmethod
    @contextmanager
    def _admitted(gw, call: Call):
        """Admit the call by the caller's RPM, concurrency and budgets (a refusal is an McpError), then settle it."""
        try:
            admission = gw.limiter.admit(call, {})
        except GatewayError as exc:
            raise McpError(REFUSED, exc.message, {"status": exc.status, "retry_after": exc.headers.get("Retry-After")},
                           status=exc.status, kind=exc.kind) from None
        try:
            yield
        finally:
            call.usage, call.cost = {"input_tokens": 0, "output_tokens": 0}, 0.0  # the row says so, not "unknown"
            gw.lifecycle.settle(call, None, admission)

    def _fan_out(self, gw, call: Call, state: SessionState, method: str, key: str) -> list:
        """(server, items) of each permitted server that answered a list method; one admission and one row.

        A client's list is one request against its limits however many servers it reaches (docs/mcp.md);
        nothing is admitted or recorded when it reaches none. A server that fails is skipped and named on the row.
        """
        servers = self.servers(gw, call.principal)
        if not servers:
            return []
        answered, skipped = [], []
        with self._recorded(gw, call), self._admitted(gw, call):
            for server in servers:
                try:
                    answered.append((server, self._pages(gw, call, state, server, method, key)))
                except McpError as exc:  # many tool servers have no prompts (-32601): nothing to list there
                    quiet = exc.code == METHOD_NOT_FOUND
                    log.log(logging.INFO if quiet else logging.WARNING, "%s: MCP server %s skipped: %s", method,
                            server.name, exc.message)
                    if not quiet:
                        skipped.append(f"{server.name} ({exc.kind})")
            if skipped:
                call.note = "skipped: " + ", ".join(skipped)
        return answered

    # -- methods ----------------------------------------------------------------------------------
    def list_tools(self, gw, call: Call, state: SessionState) -> list:
        """Every permitted tool of every permitted server, as SERVER__TOOL; an unreachable server is skipped."""
        tools = []
        for server, found in self._fan_out(gw, call, state, "tools/list", "tools"):
            tools.extend({**t, "name": f"{server.name}{SEP}{t['name']}"} for t in found
                         if call.principal.may_use_tool(server.name, t["name"]))
        return tools

    def call_tool(self, gw, call: Call, state: SessionState, params: dict) -> dict:
        """Forward tools/call to its server; the call is admitted by the caller's limits and recorded."""
        call.model_name = str(params.get("name"))[:256]  # as the client named it, even when it is unknown
        with self._recorded(gw, call):
            server, tool = self._target(gw, call.principal, params.get("name"), "tool")
            with self._admitted(gw, call):
                result = self._request(gw, call, state, server, "tools/call", {**params, "name": tool})
            if result.get("isError"):
                call.error_type = "tool_error"
            return result

    def list_prompts(self, gw, principal: Principal, state: SessionState, call: Call) -> list:
        """Stored prompts (slug, description, variables as arguments), then upstream prompts as SERVER__NAME."""
        out = []
        for prompt in self.stored_prompts(gw, principal):
            version = gw.catalog.version(prompt, prompt.live)
            if version is None:
                continue
            defaults = version.variables or {}
            out.append({"name": prompt.slug, "description": prompt.description,
                        "arguments": [{"name": v, "required": v not in defaults}
                                      for v in P.variables_in(version.text)]})
        for server, found in self._fan_out(gw, call, state, "prompts/list", "prompts"):
            out.extend({**p, "name": f"{server.name}{SEP}{p['name']}"} for p in found
                       if principal.may_use_tool(server.name, p["name"]))
        return out

    def get_prompt(self, gw, principal: Principal, state: SessionState, params: dict, call: Call) -> dict:
        """A stored prompt filled literally as /v1 fills it, or an upstream prompt fetched from its server.

        Only the upstream case is admitted and recorded (on `call`): a stored prompt reaches no server.
        """
        name, args = params.get("name"), params.get("arguments")
        if args is not None and not isinstance(args, dict):
            raise McpError(INVALID_PARAMS, "`arguments` must be an object.", status=400, kind="invalid_request")
        prompt = gw.catalog.prompts.get(name) if isinstance(name, str) else None
        if prompt is not None and prompt.mcp and principal.may_use_prompt(prompt.slug):
            version = gw.catalog.version(prompt, prompt.live)
            try:
                text = P.render(version.text, args or {}, version.variables)
            except P.PromptError as exc:
                raise McpError(INVALID_PARAMS, str(exc), status=400, kind=exc.code) from None
            return {"description": prompt.description,
                    "messages": [{"role": "user", "content": {"type": "text", "text": text}}]}
        call.model_name = str(name)[:256]
        with self._recorded(gw, call):
            server, upstream_name = self._target(gw, principal, name, "prompt")
            with self._admitted(gw, call):
                return self._request(gw, call, state, server, "prompts/get", {**params, "name": upstream_name})

    def _target(self, gw, principal: Principal, name, what: str) -> tuple[McpServerInfo, str]:
        """The server and upstream name behind SERVER__NAME; unknown and forbidden look the same."""
        server_name, sep, inner = name.partition(SEP) if isinstance(name, str) else ("", "", "")
        server = gw.catalog.mcp_servers.get(server_name)
        if not sep or server is None or not inner or not principal.may_use_tool(server_name, inner):
            shown = name[:200] if isinstance(name, str) else name
            raise McpError(NOT_FOUND, f"Unknown {what}: {shown} (or this API key may not use it).", status=404,
                           kind=f"{what}_not_found")
        return server, inner


def negotiate(requested) -> str:
    """The client's protocol version when we speak it, else our newest (the client then decides)."""
    return requested if requested in PROTOCOL_VERSIONS else LATEST


def scrub_value(value, server: McpServerInfo):
    """proxy.send.scrub through a JSON value: every string, dict keys too, kept whole (never truncated)."""
    if isinstance(value, str):
        return scrub(value, server, limit=None)
    if isinstance(value, list):
        return [scrub_value(v, server) for v in value]
    if isinstance(value, dict):
        return {scrub(k, server, limit=None) if isinstance(k, str) else k: scrub_value(v, server)
                for k, v in value.items()}
    return value
