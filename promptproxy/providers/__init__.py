"""Provider adapters by kind: a plain dict registry."""
from __future__ import annotations

from .anthropic import AnthropicAdapter
from .openai import OpenAIAdapter

ADAPTERS = {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}
KINDS = tuple(ADAPTERS)


def get_adapter(kind: str):
    """The adapter for a provider kind; KeyError for an unknown kind."""
    return ADAPTERS[kind]
