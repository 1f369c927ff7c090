"""Thin /v1 views: authenticate, parse, hand to the request pipeline."""
from __future__ import annotations

import time

import orjson
from flask import Blueprint, Response, current_app, g, request

from ..core.errors import ErrorCode, GatewayError, model_not_found
from ..dialects.openai import OpenAIDialect
from ..proxy import pipeline, tags
from .auth import authenticate

bp = Blueprint("api", __name__)
JSON_TYPES = ("application/json", "")


def gateway():
    """The app's Gateway."""
    return current_app.extensions["promptproxy"]


def json_body() -> dict:
    """The request body as a JSON object, or a 400/415 GatewayError."""
    mimetype = request.mimetype or ""
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise GatewayError(415, "Content-Type must be application/json.", code=ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    data = request.get_data(cache=False)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {str(exc).split(':')[0]}.",
                       code=ErrorCode.INVALID_JSON) from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code=ErrorCode.INVALID_JSON)
    if current_app.config["LOG_BODIES"]:
        g.call.request_body = data.decode("utf-8", "replace")
    return body


def json_response(body: dict, status: int = 200) -> Response:
    """Serialize with orjson (faster than jsonify on the hot path)."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def serve(dialect, body: dict | None = None) -> Response:
    """The one view body: authenticate, parse JSON, run the pipeline, answer whole or streamed."""
    gw, call = gateway(), g.call
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    call.tag_header = request.headers.get(tags.HEADER)
    call.cache_control = request.headers.get("Cache-Control")
    out = pipeline.run(gw, call, dialect, json_body() if body is None else body)
    if isinstance(out, dict):
        return json_response(out)
    return stream_response(out, call.headers)


def stream_response(gen, headers: dict) -> Response:
    """A streaming response that waitress flushes event by event."""
    resp = Response(gen, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    for name, value in headers.items():
        resp.headers[name] = value
    return resp


@bp.post("/chat/completions")
@bp.post("/chat/completion")
def chat_completions():
    """OpenAI chat completions (and the original's singular alias)."""
    return serve(OpenAIDialect("chat"))


@bp.post("/completions")
@bp.post("/completion")
def completions():
    """Legacy text completions."""
    return serve(OpenAIDialect("completion"))


@bp.post("/embeddings")
def embeddings():
    """Embeddings."""
    return serve(OpenAIDialect("embedding"))


@bp.get("/models")
def list_models():
    """Models the key may use, plus every usable model:prompt combination."""
    gw, call = gateway(), g.call
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    call.cache_control = request.headers.get("Cache-Control")
    return json_response({"object": "list", "data": visible_models(gw.catalog, call.principal)})


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id: str):
    """One model (or model:prompt) the key may use."""
    gw, call = gateway(), g.call
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    call.cache_control = request.headers.get("Cache-Control")
    for entry in visible_models(gw.catalog, call.principal):
        if entry["id"] == model_id:
            return json_response(entry)
    raise model_not_found(model_id)


def visible_models(catalog, principal) -> list[dict]:
    """Model entries as the OpenAI SDK parses them; prompts appear as `model:prompt` ids."""
    created = int(time.time())
    models = [m for m in catalog.models.values() if principal.may_use_model(m.slug)]
    prompts = [p for p in catalog.prompts.values() if principal.may_use_prompt(p.slug)]
    data = []
    for m in sorted(models, key=lambda m: m.slug):
        data.append({"id": m.slug, "object": "model", "created": created, "owned_by": "promptproxy",
                     "kind": m.kind})
        if m.kind in ("chat", "completion"):
            for p in sorted(prompts, key=lambda p: p.slug):
                data.append({"id": f"{m.slug}:{p.slug}", "object": "model", "created": created,
                             "owned_by": "promptproxy", "kind": m.kind, "prompt": p.slug})
    return data
