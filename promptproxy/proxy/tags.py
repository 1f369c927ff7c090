"""Request tags: from the `x-promptproxy-tags` header, `metadata.tags` in the body, and the key's default tags.

Tags are refused, never truncated: a request with too many or malformed tags gets a 400 naming the rule, so a
client never believes its spend is attributed to a tag the gateway silently cut. `metadata.tags` is taken out of
the body before it is planned: OpenAI wants `metadata` values to be strings and Anthropic accepts only
`metadata.user_id`, so the upstream would refuse it; a `metadata` left empty is dropped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from ..core.errors import ErrorCode, GatewayError

HEADER = "x-promptproxy-tags"
MAX_TAGS = 10  # per request from the client, and again per key as defaults
MAX_LENGTH = 64
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@=+-]{0,63}")
RULE = f"1 to {MAX_LENGTH} letters, digits or _ . : / @ = + -, starting with a letter or digit"


class TagError(ValueError):
    """A tag list that breaks the rules; the message says which rule."""


def split(value: str) -> list[str]:
    """Comma-separated tags, trimmed, empty items ignored."""
    return [part.strip() for part in value.split(",") if part.strip()]


def check(tags: Iterable[str], limit: int = MAX_TAGS) -> list[str]:
    """The tags, each checked and deduplicated in order; TagError when one is malformed or there are too many."""
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
            shown = tag[:80] if isinstance(tag, str) else type(tag).__name__
            raise TagError(f"The tag `{shown}` is not valid: a tag is {RULE}.")
        if tag not in out:
            out.append(tag)
    if len(out) > limit:
        raise TagError(f"Too many tags: at most {limit} per request, got {len(out)}.")
    return out


def _from_body(body: dict) -> list:
    """Take `metadata.tags` (a list of strings or one comma-separated string) out of the body."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "tags" not in metadata:
        return []
    rest = {k: v for k, v in metadata.items() if k != "tags"}
    if rest:
        body["metadata"] = rest
    else:
        del body["metadata"]
    value = metadata["tags"]
    if isinstance(value, str):
        return split(value)
    if isinstance(value, list):
        return value
    if value is None:
        return []
    raise TagError("`metadata.tags` must be a list of strings or a comma-separated string.")


def _refused(exc: TagError, param: str) -> GatewayError:
    return GatewayError(400, str(exc), param=param, code=ErrorCode.INVALID_TAGS)


def install(lifecycle) -> None:
    """Tag every call when the gateway takes it (/v1 and /mcp alike)."""
    lifecycle.add("on_start", _on_start)


def _on_start(call, body: dict | None) -> None:
    """on_start: the call's tags from the key, its `x-promptproxy-tags` header and (on /v1) its body."""
    apply(call, body, call.tag_header)


def apply(call, body: dict | None, header: str | None) -> None:
    """Set call.tags from the key's defaults, the header and the body (body edited in place); 400 when refused."""
    try:
        from_body = check(_from_body(body)) if body is not None else []
    except TagError as exc:
        raise _refused(exc, "metadata.tags") from None
    try:
        mine = check([*split(header), *from_body]) if header else from_body
    except TagError as exc:
        raise _refused(exc, HEADER) from None
    defaults = call.principal.tags if call.principal is not None else ()
    call.tags = tuple(dict.fromkeys((*defaults, *mine)))
