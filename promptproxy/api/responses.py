"""OpenAI's Responses API: POST /v1/responses for any chat model, and the stored responses of the caller."""
from __future__ import annotations

from flask import g, request

from ..core.errors import ErrorCode, GatewayError
from ..dialects import responses_store as store
from ..dialects.responses import ResponsesDialect, ResponsesInputTokens
from .auth import authenticate
from .routes import bp, gateway, json_response, serve


@bp.record_once
def _install(state) -> None:
    """The Responses store saves kept responses when their answers are complete (a lifecycle feature)."""
    store.install(state.app.extensions["promptproxy"].lifecycle)


@bp.post("/responses")
def create_response():
    """Create a model response, whole or streamed."""
    return serve(ResponsesDialect())


@bp.post("/responses/input_tokens")
def input_tokens():
    """Count the input tokens a response request would use (stored prompt included)."""
    return serve(ResponsesInputTokens())


@bp.get("/responses/<response_id>")
def get_response(response_id: str):
    """A stored response of the caller's own."""
    return json_response(_owned(response_id).response)


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str):
    """Delete a stored response of the caller's own."""
    if not store.delete(response_id, _caller()):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str):
    """The input items of a stored response, newest first unless `order=asc`."""
    items = [_with_id(item, response_id, i) for i, item in enumerate(_owned(response_id).input_items)]
    if request.args.get("order", "desc") != "asc":
        items.reverse()
    limit = request.args.get("limit", "20")
    items = items[:max(1, min(int(limit) if limit.isdigit() else 20, 100))]
    return json_response({"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                          "last_id": items[-1]["id"] if items else None, "has_more": False})


def _caller():
    """The authenticated caller (the key's principal: its user and the models this key may use)."""
    gw = gateway()
    gw.catalog.refresh()
    g.call.principal = authenticate(gw.catalog)
    return g.call.principal


def _owned(response_id: str):
    """The caller's stored response, or the 404 OpenAI gives for an unknown id (anyone else's, or one on a model
    this key may not use: existence is not revealed)."""
    found = store.load(response_id, _caller())
    if found is None:
        raise _not_found(response_id)
    return found


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(404, f"Response with id '{response_id[:100]}' not found.", param="response_id",
                        code=ErrorCode.RESPONSE_NOT_FOUND)


def _with_id(item: dict, response_id: str, index: int) -> dict:
    """Input items as listed: each with an id (the client's own, else one derived from the response)."""
    return item if item.get("id") else {"id": f"{response_id.replace('resp_', 'msg_', 1)}_{index}", **item}
