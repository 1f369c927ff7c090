"""/mcp at the transport level: sessions bound to keys, version negotiation, bad JSON-RPC, every refusal's body."""
from __future__ import annotations

from .conftest import INIT, open_session, rpc

LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def test_initialize_negotiates_the_version_and_opens_an_unguessable_session(live, mcp_seed):
    resp = rpc(live, mcp_seed.ann, INIT)
    body = resp.json()
    assert resp.status_code == 200 and body["id"] == 1
    assert body["result"]["protocolVersion"] == "2025-06-18"  # the client's, since we speak it
    assert set(body["result"]["capabilities"]) == {"tools", "prompts"}
    assert body["result"]["serverInfo"]["name"] == "promptproxy"
    first, second = open_session(live, mcp_seed.ann), open_session(live, mcp_seed.ann)
    assert first != second and len(first) >= 48
    future = {**INIT, "params": {**INIT["params"], "protocolVersion": "2099-01-01"}}
    assert rpc(live, mcp_seed.ann, future).json()["result"]["protocolVersion"] == "2025-11-25"  # our newest


def test_a_session_is_bound_to_its_key(live, mcp_seed, tools):
    session = open_session(live, mcp_seed.ann)
    stolen = rpc(live, mcp_seed.tia, LIST, session)
    assert stolen.status_code == 404 and "Session not found" in stolen.json()["error"]["message"]
    forged = rpc(live, mcp_seed.ann, LIST, session[:-4] + "0000")
    assert forged.status_code == 404
    assert rpc(live, mcp_seed.ann, LIST, session).status_code == 200


def test_delete_ends_a_session(live, mcp_seed):
    session = open_session(live, mcp_seed.ann)
    assert rpc(live, mcp_seed.ann, b"", session, method="DELETE").status_code == 204
    after = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, session)
    assert after.status_code == 404
    assert rpc(live, mcp_seed.ann, b"", session, method="DELETE").status_code == 404


def test_requests_without_a_session_are_refused(live, mcp_seed):
    resp = rpc(live, mcp_seed.ann, LIST)
    assert resp.status_code == 400
    assert resp.json()["error"] == {"code": -32600,
                                    "message": "Missing Mcp-Session-Id header: send `initialize` first."}


def test_ping_notifications_and_unknown_methods(live, mcp_seed):
    session = open_session(live, mcp_seed.ann)
    ping = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": "p", "method": "ping"}, session)
    assert ping.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}
    note = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert note.status_code == 202 and note.content == b""
    unknown = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": 9, "method": "resources/list"}, session)
    assert unknown.status_code == 200
    assert unknown.json()["error"] == {"code": -32601, "message": "Method not found: resources/list."}
    bad = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": [1]}, session)
    assert bad.json()["error"]["code"] == -32602


def test_unknown_tool_and_malformed_names_are_json_rpc_errors(live, mcp_seed, tools):
    session = open_session(live, mcp_seed.ann)
    for name in ("nope__add", "tools__", "tools", 42, None):
        resp = rpc(live, mcp_seed.ann, {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                                        "params": {"name": name, "arguments": {}}}, session)
        assert resp.status_code == 200
        assert resp.json()["error"]["code"] == -32602 and "Unknown tool" in resp.json()["error"]["message"]
    assert not any(h.get("mcp-session-id") for h in tools.headers)  # none of them reached the upstream


def test_bad_json_rpc_is_a_400_json_rpc_error(live, mcp_seed):
    cases = [(b"{not json", -32700), (b"[]", -32600), (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600),
             (b'{"id":1,"method":"ping"}', -32600), (b'"ping"', -32600), (b'{"jsonrpc":"2.0","id":1}', -32600)]
    for data, code in cases:
        resp = rpc(live, mcp_seed.ann, data)
        assert resp.status_code == 400, data
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json()["error"]["code"] == code, data


def test_an_unsupported_protocol_version_header_is_refused(live, mcp_seed):
    session = open_session(live, mcp_seed.ann)
    resp = rpc(live, mcp_seed.ann, LIST, session, headers={"MCP-Protocol-Version": "1999-01-01"})
    assert resp.status_code == 400 and "Unsupported MCP-Protocol-Version" in resp.json()["error"]["message"]


def test_bad_keys_are_401_with_a_json_body(live, mcp_seed):
    for key in (None, "pp-wrong"):
        resp = rpc(live, key, INIT)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.json()["error"]["data"] == {"type": "invalid_api_key"}


def test_get_is_405_and_oversized_bodies_413_both_json(app, live, mcp_seed):
    resp = rpc(live, mcp_seed.ann, b"", method="GET")
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST, DELETE"
    assert resp.json()["error"]["code"] == -32601
    big = rpc(live, mcp_seed.ann, b"{" + b" " * (app.config["MAX_BODY_BYTES"] + 10) + b"}")
    assert big.status_code == 413 and big.headers["Content-Type"] == "application/json"


def test_a_2026_client_probing_server_discover_is_told_to_use_initialize(live, mcp_seed):
    probe = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    resp = rpc(live, mcp_seed.ann, probe, headers={"MCP-Protocol-Version": "2026-07-28"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == -32600  # the SDK then falls back
    resp = rpc(live, mcp_seed.ann, probe)
    assert resp.status_code == 400 and "send `initialize` first" in resp.json()["error"]["message"]
