"""/mcp: the MCP streamable HTTP transport, authenticated with the gateway's API keys (JSON-RPC in, JSON out)."""
from __future__ import annotations

import logging

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from ..core.call import Call
from ..core.errors import GatewayError
from ..mcp.client import PROTOCOL_VERSIONS, McpError
from ..mcp.hub import REFUSED, Hub, negotiate
from ..proxy import tags
from .auth import authenticate
from .hooks import client_ip

bp = Blueprint("mcp", __name__)
log = logging.getLogger("promptproxy.mcp")
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
SERVER_INFO = {"name": "promptproxy", "title": "PromptProxy MCP gateway", "version": "1"}


@bp.record_once
def _install(state) -> None:
    """One MCP hub per app, made when the blueprint is registered (never raced by the first requests)."""
    state.app.extensions["promptproxy.mcp"] = Hub(state.app)


def hub() -> Hub:
    """The app's MCP hub."""
    return current_app.extensions["promptproxy.mcp"]


def rpc_error(code: int, message: str, status: int = 200, rid=None, data=None, headers=None) -> Response:
    """A JSON-RPC error object, with an HTTP status where the transport calls for one."""
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": error})
    return Response(body, status=status, mimetype="application/json", headers=headers or {})


def rpc_result(rid, result: dict, headers=None) -> Response:
    """A JSON-RPC result."""
    return Response(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": result}), mimetype="application/json",
                    headers=headers or {})


@bp.errorhandler(GatewayError)
def gateway_error(err: GatewayError):
    """Refused keys and the like, as JSON-RPC errors with their HTTP status; recorded like /v1 refusals."""
    call = Call(endpoint=f"mcp/{g.get('mcp_method') or 'request'}"[:64], inbound="mcp", client_ip=client_ip())
    call.principal = g.get("mcp_principal")
    call.fail(err)
    current_app.extensions["promptproxy"].record(call)
    headers = dict(err.headers)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="promptproxy"'
    return rpc_error(REFUSED, err.message, err.status, g.get("mcp_id"), {"type": err.kind}, headers)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    """413 and friends as JSON-RPC errors, never HTML."""
    return rpc_error(INVALID_REQUEST, exc.description or exc.name, exc.code or 400)


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    """A bug: logged, answered without a traceback."""
    log.exception("unhandled error on /mcp")
    return rpc_error(-32603, "The gateway hit an internal error.", 500, g.get("mcp_id"))


@bp.get("/mcp")
def listen():
    """No server-initiated stream: the transport lets a server answer GET with 405."""
    return rpc_error(METHOD_NOT_FOUND, "This gateway does not open a server-to-client stream; use POST.", 405,
                     headers={"Allow": "POST, DELETE"})


@bp.delete("/mcp")
def end_session():
    """End a session (and its upstream sessions)."""
    gw, principal = _caller()
    session_id = request.headers.get("Mcp-Session-Id") or ""
    if hub().session(principal, session_id, None) is None:
        return rpc_error(REFUSED, "Session not found.", 404)
    hub().end(session_id, gw)
    return Response(status=204)


@bp.post("/mcp")
def post():
    """One JSON-RPC message: initialize opens a session; everything else needs it."""
    gw, principal = _caller()
    message = _message()
    if isinstance(message, Response):
        return message
    rid, method = message.get("id"), message.get("method")
    g.mcp_id, g.mcp_method = rid, method
    if method == "initialize":
        return _initialize(gw, principal, rid, message.get("params") or {})
    session_id = request.headers.get("Mcp-Session-Id")
    if not session_id:
        return rpc_error(INVALID_REQUEST, "Missing Mcp-Session-Id header: send `initialize` first.", 400, rid)
    state = hub().session(principal, session_id, request.headers.get("MCP-Protocol-Version"))
    if state is None:
        return rpc_error(REFUSED, "Session not found: it ended or belongs to another key; initialize again.",
                         404, rid)
    if "id" not in message or method is None:  # a notification, or a response to a request we never send
        return Response(status=202)
    params = message.get("params", {})
    if not isinstance(params, dict):
        return rpc_error(INVALID_PARAMS, "`params` must be an object.", 200, rid)
    return _dispatch(gw, principal, state, rid, method, params)


def _caller():
    gw = current_app.extensions["promptproxy"]
    gw.catalog.refresh()
    g.mcp_principal = authenticate(gw.catalog)
    return gw, g.mcp_principal


def _message():
    """The body as one JSON-RPC message, or an error response."""
    version = request.headers.get("MCP-Protocol-Version")
    if version is not None and version not in PROTOCOL_VERSIONS:
        return rpc_error(INVALID_REQUEST, f"Unsupported MCP-Protocol-Version `{version[:40]}`; supported: "
                         f"{', '.join(PROTOCOL_VERSIONS)}.", 400)
    try:
        message = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError:
        return rpc_error(PARSE_ERROR, "Parse error: the body is not valid JSON.", 400)
    if isinstance(message, list):
        return rpc_error(INVALID_REQUEST, "JSON-RPC batches are not supported; send one message per request.", 400)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not (
            isinstance(message.get("method"), str) or "result" in message or "error" in message):
        return rpc_error(INVALID_REQUEST, "Invalid request: expected a JSON-RPC 2.0 message.", 400,
                         message.get("id") if isinstance(message, dict) else None)
    return message


def _initialize(gw, principal, rid, params) -> Response:
    """Refuse a key with no MCP access at once (403), never with an empty tool list; else open a session."""
    servers, prompts = hub().servers(gw, principal), hub().stored_prompts(gw, principal)
    if not servers and not prompts:
        raise GatewayError(403, "This API key has no MCP access: it may use no MCP server and no stored prompt "
                           "offered over MCP. Ask an administrator to grant some (promptproxy user update NAME "
                           "--allow-mcp SERVER).",
                           code="mcp_access_denied", type="permission_error")
    version = negotiate(params.get("protocolVersion") if isinstance(params, dict) else None)
    capabilities = {"prompts": {"listChanged": False}}
    if servers:
        capabilities["tools"] = {"listChanged": False}
    result = {"protocolVersion": version, "capabilities": capabilities, "serverInfo": SERVER_INFO,
              "instructions": "Tools are named SERVER__TOOL after the MCP server that provides them."}
    return rpc_result(rid, result, {"Mcp-Session-Id": hub().open(principal, version)})


def _dispatch(gw, principal, state, rid, method: str, params: dict) -> Response:
    """Run one method; errors about tools and prompts are JSON-RPC errors the client shows."""
    try:
        if method == "ping":
            return rpc_result(rid, {})
        if method == "tools/list":
            if not hub().servers(gw, principal):
                return rpc_error(REFUSED, "This API key may use no MCP server, so it has no tools.", 200, rid)
            return rpc_result(rid, {"tools": hub().list_tools(gw, _call(principal, method), state)})
        if method == "tools/call":
            return rpc_result(rid, hub().call_tool(gw, _call(principal, method), state, params))
        if method == "prompts/list":
            return rpc_result(rid, {"prompts": hub().list_prompts(gw, principal, state, _call(principal, method))})
        if method == "prompts/get":
            return rpc_result(rid, hub().get_prompt(gw, principal, state, params, _call(principal, method)))
    except McpError as exc:
        return rpc_error(exc.code, exc.message, 200, rid, exc.data)
    return rpc_error(METHOD_NOT_FOUND, f"Method not found: {method[:100]}.", 200, rid)


def _call(principal, method: str) -> Call:
    """The request-log row of a method that may reach upstream servers; the hub runs its lifecycle if it does."""
    return Call(endpoint=f"mcp/{method}", inbound="mcp", client_ip=client_ip(), principal=principal,
                tag_header=request.headers.get(tags.HEADER))
