"""Any OpenAI-compatible server: bodies pass through; only the model name is rewritten on the way back."""
from __future__ import annotations

import orjson

from ..core.catalog import ProviderInfo
from ..core.sse import Event
from ..core.usage import normalize_openai
from .base import StreamOutput, UpstreamRequest

PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings",
         "responses": "/responses"}
RESPONSES_END = ("response.completed", "response.incomplete", "response.failed")


class OpenAIStream:
    """Relay OpenAI chunks, renaming the model and taking usage (dropped if only we asked for it)."""

    def __init__(self, public_model: str, strip_usage: bool):
        self.public_model = public_model
        self.strip_usage = strip_usage
        self.usage: dict | None = None

    def feed(self, event: Event) -> StreamOutput:
        """Translate one upstream event."""
        if event.data is None:
            return StreamOutput()
        if event.data.strip() == "[DONE]":
            return StreamOutput(done=True)
        chunk = orjson.loads(event.data)
        if not isinstance(chunk, dict):
            raise ValueError("stream chunk is not a JSON object")
        if "error" in chunk and "choices" not in chunk:
            raise UpstreamStreamError(chunk["error"])
        if "model" in chunk:
            chunk["model"] = self.public_model
        usage = chunk.get("usage")
        if usage:
            self.usage = normalize_openai(usage)
        if self.strip_usage:
            if usage and not chunk.get("choices"):
                return StreamOutput()
            chunk.pop("usage", None)
        return StreamOutput([chunk])


class OpenAIResponsesStream:
    """Responses API events passed through as dicts (model renamed); the stream ends with the final response."""

    def __init__(self, public_model: str):
        self.public_model = public_model
        self.usage: dict | None = None

    def feed(self, event: Event) -> StreamOutput:
        """Relay one upstream event, noting usage from the final response."""
        if event.data is None or event.data.strip() == "[DONE]":
            return StreamOutput(done=event.data is not None)
        data = orjson.loads(event.data)
        if not isinstance(data, dict):
            raise ValueError("stream event is not a JSON object")
        if data.get("type") == "error":
            raise UpstreamStreamError(data.get("error") or data)
        response = data.get("response")
        if isinstance(response, dict):
            response["model"] = self.public_model
            self.usage = normalize_responses(response.get("usage")) or self.usage
        return StreamOutput([data], done=data.get("type") in RESPONSES_END)


def normalize_responses(usage) -> dict | None:
    """Responses usage (input_tokens, output_tokens, input_tokens_details.cached_tokens) normalized."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return {"input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
            "cached_tokens": details.get("cached_tokens") if isinstance(details, dict) else None}


class UpstreamStreamError(Exception):
    """The upstream reported an error inside the stream."""

    def __init__(self, error):
        message = error.get("message") if isinstance(error, dict) else str(error)
        super().__init__(message or "upstream error")


class OpenAIAdapter:
    """Adapter for kind `openai` (OpenAI, vLLM, Ollama, llama.cpp, FastChat, HF endpoints, ...)."""

    kind = "openai"
    endpoints = frozenset(PATHS)

    def build(self, provider: ProviderInfo, endpoint: str, body: dict) -> UpstreamRequest:
        """POST the body to base_url + the endpoint path, with the provider's key."""
        headers = {"Content-Type": "application/json", **provider.headers}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key}"
        if body.get("stream"):
            headers["Accept"] = "text/event-stream"
            headers["Accept-Encoding"] = "identity"
        return UpstreamRequest(provider.base_url + PATHS[endpoint], headers, orjson.dumps(body))

    def parse(self, endpoint: str, data: dict, public_model: str) -> tuple[dict, dict | None]:
        """The upstream body with our model name, and its usage."""
        if endpoint == "responses":
            if not isinstance(data.get("output"), list):
                raise ValueError("response has no `output` list")
            data["model"] = public_model
            return data, normalize_responses(data.get("usage"))
        if endpoint == "embedding":
            if not isinstance(data.get("data"), list):
                raise ValueError("embedding response has no `data` list")
        elif not isinstance(data.get("choices"), list):
            raise ValueError("response has no `choices` list")
        if "model" in data:
            data["model"] = public_model
        return data, normalize_openai(data.get("usage"))

    def stream(self, endpoint: str, public_model: str, strip_usage: bool):
        """A pass-through stream translator."""
        if endpoint == "responses":
            return OpenAIResponsesStream(public_model)
        return OpenAIStream(public_model, strip_usage)

    def error(self, status: int, data: dict | None) -> tuple[str, str | None, str | None]:
        """Message, type and code from an OpenAI-style error body."""
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            return str(err.get("message") or ""), err.get("type"), err.get("code")
        if isinstance(err, str):
            return err, None, None
        if isinstance(data, dict) and isinstance(data.get("detail"), str):  # FastAPI-style servers
            return data["detail"], None, None
        if isinstance(data, dict) and isinstance(data.get("message"), str):  # FastChat: {"object": "error", ...}
            return data["message"], data.get("type"), data.get("code")
        return "", None, None
