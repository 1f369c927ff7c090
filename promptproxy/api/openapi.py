"""GET /openapi.json: the gateway's own API description (openapi.yaml at the repository root)."""
from __future__ import annotations

import functools
from pathlib import Path

import orjson
from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)
SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"


@functools.cache
def document() -> bytes:
    """The YAML document as JSON bytes, read once (PyYAML is imported only then)."""
    import yaml

    return orjson.dumps(yaml.safe_load(SPEC.read_text(encoding="utf-8")))


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI document (no authentication: it holds no secrets)."""
    return Response(document(), mimetype="application/json")
