"""Parse the `model` field: "<model>[:<prompt>[@<version-or-label>]]"."""
from __future__ import annotations

import re
from dataclasses import dataclass

SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,127}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """The parts of a `model` string, not yet resolved."""

    model: str
    prompt: str | None = None
    version: str | None = None  # a number or a label


def parse_model(value: str) -> ModelRef:
    """Split a model string at the first ':' and the last '@'; raise ValueError if malformed."""
    if not isinstance(value, str) or not value or len(value) > 512:
        raise ValueError("`model` must be a non-empty string")
    model, sep, rest = value.partition(":")
    if not model:
        raise ValueError("the model part of `model` is empty")
    prompt = version = None
    if sep:
        prompt, at, version = rest.rpartition("@") if "@" in rest else (rest, "", None)
        if at and not version:
            raise ValueError("a version after '@' is required")
        if not prompt or ":" in prompt:
            raise ValueError("the prompt part of `model` is empty or contains ':'")
    elif "@" in model:
        raise ValueError("a version needs a prompt: use model:prompt@version")
    return ModelRef(model, prompt, version)


def valid_slug(value: str) -> bool:
    """Slugs are short, start with a letter or digit, and never contain ':' or '@'."""
    return bool(SLUG_RE.fullmatch(value or ""))


def valid_label(value: str) -> bool:
    """Labels are slug-like and not purely numeric (numbers are versions)."""
    return bool(LABEL_RE.fullmatch(value or "")) and not value.isdigit()
