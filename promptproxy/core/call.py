"""The record of one request, from its arrival to its request-log row."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from ..models import utcnow
from .errors import GatewayError


@dataclass(slots=True)
class Call:
    """Everything known about one request; becomes its RequestLog row.

    `model` is the model the client asked for (set once, by resolution); `served` the one that answered (set once,
    by the upstream step: a fallback when the model itself failed).
    """

    endpoint: str
    inbound: str = "openai"
    request_id: str = field(default_factory=lambda: "req_" + secrets.token_hex(12))
    t0: float = field(default_factory=time.perf_counter)
    created_at: object = field(default_factory=utcnow)
    client_ip: str | None = None
    principal: object = None
    model_name: str | None = None
    model: object = None
    prompt: object = None
    version: object = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    usage: dict | None = None
    usage_estimated: bool = False
    cost: float | None = None
    ttft_ms: float | None = None
    request_body: str | None = None
    response_body: str | None = None
    headers: dict = field(default_factory=dict)  # extra response headers (rate limits, upstream limits)
    in_pipeline: bool = False  # the pipeline records it; otherwise the edge does when the response leaves
    settled: bool = False  # the lifecycle's on_settled stage ran (proxy/lifecycle.py)
    recorded: bool = False
    served: object = None  # the model that answered, once one did
    attempted: object = None  # the deployment tried last: a failed call's row names it
    strip_usage: bool = False  # we asked the upstream for stream usage the client did not want
    deadline: float | None = None  # perf_counter time by which the whole call must end
    note: str | None = None  # e.g. which fallback served the call and why
    tags: tuple = ()  # the key's default tags and the client's (proxy/tags.py)
    tag_header: str | None = None  # the x-promptproxy-tags header as received
    trace: object = None  # the tracer's spans for this call (observe/tracing.py); None when tracing is off
    features: dict | None = None  # other features' per-call state, by feature (the response cache's: "cache")
    cache_control: str | None = None  # the client's Cache-Control request header
    cache_hit: bool = False  # answered from the exact response cache
    cost_saved: float | None = None  # on a hit: what the upstream call would have cost

    def fail(self, err: GatewayError) -> None:
        """Note an error outcome."""
        self.status = err.status
        self.error_type = err.kind
        self.error_message = err.message[:500]

    @property
    def public_model(self) -> str:
        """The model name the client sees: the one it asked for, even when a fallback served it."""
        return self.model.slug

    @property
    def serving(self):
        """The model that served the call, else the one asked for: what the row, the price and metrics name."""
        return self.served or self.model

    def row(self) -> dict:
        """The RequestLog row for this call."""
        usage = self.usage or {}
        model = self.serving
        target = self.served or self.attempted or model  # where it ran: the deployment that answered or failed last
        return {
            "request_id": self.request_id, "created_at": self.created_at,
            "user_id": self.principal.user_id if self.principal else None,
            "key_id": self.principal.key_id if self.principal else None,
            "model": (model.slug if model else self.model_name), "model_id": model.id if model else None,
            "upstream_model": target.upstream_model if target else None,
            "provider_id": target.provider.id if target else None,
            "prompt": self.prompt.slug if self.prompt else None,
            "prompt_version": self.version.version if self.version else None,
            "endpoint": self.endpoint, "inbound_format": self.inbound, "stream": self.stream,
            "status": self.status, "error_type": self.error_type,
            "error_message": self.error_message or (self.note[:500] if self.note else None),
            "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
            "cached_tokens": usage.get("cached_tokens"), "cache_write_tokens": usage.get("cache_write_tokens"),
            "usage_estimated": self.usage_estimated, "cost": self.cost,
            "latency_ms": round((time.perf_counter() - self.t0) * 1000, 3), "ttft_ms": self.ttft_ms,
            "client_ip": self.client_ip, "request_body": self.request_body, "response_body": self.response_body,
            "tags": ",".join(self.tags) or None,
            "deployment_id": getattr(target, "deployment_id", None), "cache_hit": self.cache_hit,
            "cost_saved": self.cost_saved,
        }
