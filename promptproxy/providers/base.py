"""The adapter interface every provider kind implements, and the upstream request it builds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from ..core.catalog import ProviderInfo
from ..core.errors import GatewayError
from ..core.sse import Event


class UpstreamText(GatewayError):
    """A GatewayError whose message is the upstream's own words: scrubbed before anyone sees it."""


@dataclass(slots=True)
class UpstreamRequest:
    """What to send: the gateway builds it, never the client."""

    url: str
    headers: dict
    body: bytes


@dataclass(slots=True)
class StreamOutput:
    """What one upstream event turns into: OpenAI chunk dicts for the client, and whether it ended."""

    chunks: list = field(default_factory=list)
    done: bool = False


class StreamTranslator(Protocol):
    """Stateful per-stream translation of upstream events into OpenAI chunks."""

    usage: dict | None

    def feed(self, event: Event) -> StreamOutput:
        """Translate one upstream event."""


class Adapter(Protocol):
    """One provider kind: build requests, parse answers, translate streams, map errors."""

    kind: ClassVar[str]
    endpoints: ClassVar[frozenset[str]]  # "chat", "completion", "embedding"

    def build(self, provider: ProviderInfo, endpoint: str, body: dict) -> UpstreamRequest:
        """The upstream request for an OpenAI-shaped body (model already the upstream name)."""

    def parse(self, endpoint: str, data: dict, public_model: str) -> tuple[dict, dict | None]:
        """An OpenAI-shaped response body and normalized usage from the upstream's JSON."""

    def stream(self, endpoint: str, public_model: str, strip_usage: bool) -> StreamTranslator:
        """A translator for this call's upstream event stream."""

    def error(self, status: int, data: dict | None) -> tuple[str, str | None, str | None]:
        """(message, type, code) from an upstream error body."""
