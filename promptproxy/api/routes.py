"""Thin /v1 views: authenticate, parse, hand to the proxy service."""
from __future__ import annotations

import time

import orjson
from flask import Blueprint, Response, current_app, g, request

from ..extensions import db
from ..proxy import service
from .auth import authenticate
from .errors import ApiError

bp = Blueprint("api", __name__)
JSON_TYPES = ("application/json", "")


def gateway():
    """The app's Gateway."""
    return current_app.extensions["promptproxy"]


def json_body() -> dict:
    """The request body as a JSON object, or a 400/415 ApiError."""
    mimetype = request.mimetype or ""
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ApiError(415, "Content-Type must be application/json.", code="unsupported_media_type")
    data = request.get_data(cache=False)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {str(exc).split(':')[0]}.",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    if current_app.config["LOG_BODIES"]:
        g.call.request_body = data.decode("utf-8", "replace")
    return body


def json_response(body: dict, status: int = 200) -> Response:
    """Serialize with orjson (faster than jsonify on the hot path)."""
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def proxy_call(kind: str) -> Response:
    """The shared path for chat, completions and embeddings."""
    gw, call = gateway(), g.call
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    body = json_body()
    service.validate(body, kind)
    service.check_routing_keys(body)
    service.resolve(gw, call, body, kind)
    call.stream = bool(body.get("stream"))
    body = service.build_body(call, body, kind)  # before admission: nothing can fail between admit and finish
    admission = gw.limiter.admit(call, body)
    call.headers.update(admission.headers)
    if call.stream:
        return start_stream(gw, call, service.stream_events(gw, call, kind, body, service.OpenAIEncoder()),
                            admission)
    try:
        out = service.complete(gw, call, kind, body)
    finally:
        admission.finish(call)
    return json_response(out)


def start_stream(gw, call, events, admission) -> Response:
    """Pull the first bytes before answering, so errors before them are plain JSON errors.

    Retries and fallbacks happen inside that first pull. The database session is released before the stream
    runs (no connection is held for its length); settling the admission at the end gets a fresh app context.
    """
    app = current_app._get_current_object()

    def owned():
        try:
            yield from events
        except ApiError as err:  # before the first byte: note it now, the row is queued in `finally`
            call.fail(err)
            raise
        except Exception:
            if call.status < 400:
                call.status, call.error_type = 500, "internal_error"
            raise
        finally:
            try:
                with app.app_context():
                    try:
                        admission.finish(call)
                    finally:
                        db.session.remove()
            finally:
                gw.record(call)

    gen = owned()
    try:
        first = next(gen)
    except StopIteration:
        first = b""
    g.stream_owned = True
    db.session.remove()

    def relay():
        yield first
        yield from gen

    return service.stream_response(relay(), call.headers)


@bp.post("/chat/completions")
@bp.post("/chat/completion")
def chat_completions():
    """OpenAI chat completions (and the original's singular alias)."""
    return proxy_call("chat")


@bp.post("/completions")
@bp.post("/completion")
def completions():
    """Legacy text completions."""
    return proxy_call("completion")


@bp.post("/embeddings")
def embeddings():
    """Embeddings."""
    return proxy_call("embedding")


@bp.get("/models")
def list_models():
    """Models the key may use, plus every usable model:prompt combination."""
    gw, call = gateway(), g.call
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    return json_response({"object": "list", "data": visible_models(gw.catalog, call.principal)})


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id: str):
    """One model (or model:prompt) the key may use."""
    gw, call = gateway(), g.call
    gw.catalog.refresh()
    call.principal = authenticate(gw.catalog)
    for entry in visible_models(gw.catalog, call.principal):
        if entry["id"] == model_id:
            return json_response(entry)
    from .errors import model_not_found

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
