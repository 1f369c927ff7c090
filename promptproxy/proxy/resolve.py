"""From the client's body to what the call is about: checks, routing-key guard, model and prompt resolution."""
from __future__ import annotations

import hashlib

from ..core.catalog import ModelInfo, PromptInfo
from ..core.errors import ErrorCode, GatewayError, model_not_found, prompt_not_found
from ..core.grammar import parse_model
from ..models import KIND_ENDPOINT
from ..providers import get_adapter

# Body keys that could steer an upstream (another gateway, a proxy) to a host of the client's choosing.
# Compared case-insensitively: `API_BASE` is the same key to many servers.
ROUTING_KEYS = frozenset({"api_base", "base_url", "api_key", "user_config", "extra_headers", "extra_body",
                          "custom_host", "api_version", "azure_endpoint", "organization"})
SCHEMA_KEYS = frozenset({"tools", "functions", "response_format", "parameters", "input_schema", "schema",
                         "format"})


def resolve(gw, call, body: dict, kind: str) -> None:
    """Fill call.model, call.prompt and call.version from the `model` field, enforcing access."""
    raw = body.get("model")
    if not isinstance(raw, str) or not raw:
        raise GatewayError(400, "You must provide a model parameter.", param="model", code=ErrorCode.MISSING_MODEL)
    call.model_name = raw[:256]
    try:
        ref = parse_model(raw)
    except ValueError as exc:
        raise GatewayError(400, f"Invalid `model` value: {exc}.", param="model",
                           code=ErrorCode.INVALID_MODEL) from None
    principal = call.principal
    model = gw.catalog.model(ref.model)
    if model is None or not principal.may_use_model(model.slug):
        raise model_not_found(ref.model)
    call.model = model
    check_endpoint(model, kind)
    if ref.prompt is None:
        return
    prompt = gw.catalog.prompt(ref.prompt)
    if prompt is None or not principal.may_use_prompt(prompt.slug):
        raise prompt_not_found(ref.prompt)
    call.prompt = prompt
    number = prompt.live if ref.version is None else _version_number(prompt, ref.version, principal.user_id)
    version = gw.catalog.version(prompt, number) if number else None
    if version is None:
        raise prompt_not_found(f"{ref.prompt}@{ref.version}")
    call.version = version


def check_endpoint(model: ModelInfo, kind: str) -> None:
    """The model must declare the endpoint (chat, completions, embeddings) and its provider must have it."""
    endpoint = KIND_ENDPOINT[kind]
    if endpoint not in model.endpoints:
        raise GatewayError(400, f"The model `{model.slug}` does not serve {endpoint}; it serves "
                           f"{', '.join(model.endpoints)}.", param="model", code=ErrorCode.WRONG_MODEL_KIND)
    try:
        capable = get_adapter(model.provider.kind).endpoints
    except KeyError:
        return  # an unknown provider kind fails later, as provider_misconfigured
    if kind not in capable:
        raise GatewayError(400, f"The model `{model.slug}` cannot serve this endpoint: its provider is "
                           f"{model.provider.kind}, whose API has no {endpoint} endpoint.", param="model",
                           code=ErrorCode.UNSUPPORTED_FOR_PROVIDER)


def _version_number(prompt: PromptInfo, ref: str, user_id: int) -> int | None:
    if ref.isdigit():
        return int(ref)
    split = prompt.splits.get(ref)
    if split:
        return rollout_version(split, user_id, prompt.id)
    return prompt.labels.get(ref)


def rollout_version(split, user_id: int, prompt_id: int) -> int:
    """A rollout's version for one user: sticky (a hash of user and prompt), spread by the percentages."""
    digest = hashlib.sha256(f"{user_id}:{prompt_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % 100
    for version, percent in split:
        if point < percent:
            return version
        point -= percent
    return split[-1][0]


def check_routing_keys(value, path: str = "") -> None:
    """Refuse fields that could choose the upstream host, at any depth (JSON schemas excepted)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in ROUTING_KEYS:
                raise GatewayError(400, f"Unsupported parameter: `{path}{key}` cannot be set by clients.",
                                   param=f"{path}{key}", code=ErrorCode.UNSUPPORTED_PARAMETER)
            if key not in SCHEMA_KEYS and isinstance(item, dict | list):
                check_routing_keys(item, f"{path}{key}.")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                check_routing_keys(item, path)


def positive_int(body: dict, *names: str) -> None:
    """Each named field, when present, must be a positive integer."""
    for name in names:
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise GatewayError(400, f"`{name}` must be a positive integer.", param=name)


def stream_flag(body: dict) -> bool:
    """The `stream` field as a boolean, or a 400."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise GatewayError(400, "`stream` must be a boolean.", param="stream")
    return bool(stream)


def validate_messages(body: dict) -> None:
    """`messages` must be a non-empty list of objects with a `role`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "`messages` must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise GatewayError(400, f"`messages[{i}]` must be an object with a `role`.", param=f"messages.{i}")
