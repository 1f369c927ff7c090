"""In-memory snapshot of providers, models, prompts and keys, refreshed when the shared revision changes."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..crypto import Box, SecretError, hash_key
from ..extensions import db
from ..models import (
    ApiKey,
    Group,
    McpServer,
    Model,
    ModelDeployment,
    Prompt,
    PromptLabel,
    PromptVersion,
    Provider,
    Setting,
    User,
    utcnow,
)

log = logging.getLogger("promptproxy.catalog")
REVISION_KEY = "revision"
WATCHED = (User, Group, ApiKey, Provider, Model, Prompt, PromptVersion, PromptLabel, McpServer, ModelDeployment)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A provider as the hot path needs it, secret decrypted."""

    id: int
    name: str
    kind: str
    base_url: str
    api_key: str | None
    headers: dict
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    total_timeout: float
    stream_usage: bool
    anthropic_version: str | None
    default_max_tokens: int | None
    broken: str | None = None  # why its secret cannot be used
    responses_api: bool = False  # speaks OpenAI's Responses API: /v1/responses bodies pass through
    reasoning_effort: bool = False  # takes chat's `reasoning_effort` (thinking and reasoning.effort map to it)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model as the hot path needs it."""

    id: int
    slug: str
    provider: ProviderInfo
    upstream_model: str
    kind: str
    input_price: float
    output_price: float
    cached_input_price: float | None
    cache_write_price: float | None
    fallbacks: tuple[str, ...]
    endpoints: tuple[str, ...] = ("chat", "completions")  # what it declares (models.MODEL_ENDPOINTS)
    strategy: str = "weighted"  # how a deployment is chosen: weighted or least-busy
    cache_ttl: int | None = None  # seconds the exact response cache keeps answers; None = off
    cache_scope: str = "user"  # user (the default) or shared
    deployments: tuple[ModelInfo, ...] = ()  # each one this model with its own provider and upstream name
    deployment_id: int | None = None  # set on a deployment: the ModelDeployment row
    weight: int = 1
    priority: int = 0
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class PromptVersionInfo:
    """One immutable prompt version."""

    version: int
    text: str
    variables: dict
    tools: list | None
    params: dict | None


@dataclass(frozen=True, slots=True)
class PromptInfo:
    """A prompt with its live version loaded; other versions load on demand."""

    id: int
    slug: str
    mode: str
    live: int
    labels: dict
    description: str = ""
    splits: dict = field(default_factory=dict)  # label -> ((version, percent), ...) for a rollout
    cache_ttl: int | None = None  # set: the response cache TTL of every call using it, over the model's
    cache_scope: str = "user"
    mcp: bool = False  # published over MCP: offered by /mcp prompts/list and prompts/get


@dataclass(frozen=True, slots=True)
class McpServerInfo:
    """An MCP tool server as /mcp needs it, secrets decrypted."""

    id: int
    name: str
    url: str
    api_key: str | None
    headers: dict
    timeout: float
    broken: str | None = None  # why its secrets cannot be used

    @property
    def base_url(self) -> str:
        """The URL under the name proxy.send.scrub reads for providers (it redacts it from what clients see)."""
        return self.url


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key and its user, with the key's narrowing applied."""

    key_id: int
    user_id: int
    user_name: str
    role: str
    user_active: bool
    expires_at: datetime | None
    revoked: bool
    models: frozenset | None  # None = all
    prompts: frozenset | None
    limits: dict = field(default_factory=dict)  # {"user": {...}, "key": {...}, "groups": [{id, name, ...}]}
    groups: tuple[str, ...] = ()  # names of the user's groups
    mcp: tuple = (None, frozenset())  # (user's grants or None = all, key's grants or None = inherit)
    tags: tuple = ()  # the key's default tags

    def may_use_model(self, slug: str) -> bool:
        """True if the model is on the effective allow-list."""
        return self.models is None or slug in self.models

    def may_use_prompt(self, slug: str) -> bool:
        """True if the prompt is on the effective allow-list."""
        return self.prompts is None or slug in self.prompts

    def may_use_tool(self, server: str, tool: str) -> bool:
        """True if both the user and the key grant the server (whole, or this one tool)."""
        return all(grants is None or server in grants or f"{server}/{tool}" in grants for grants in self.mcp)

    def may_use_server(self, server: str) -> bool:
        """True if the user and the key grant at least some of the server."""
        return all(grants is None or any(g.split("/", 1)[0] == server for g in grants) for grants in self.mcp)


def granted(owners, kind: str) -> frozenset | None:
    """The union rule: what the user or any of their groups allows (None = everything); kind: models, prompts, mcp."""
    out: set = set()
    for owner in owners:
        if getattr(owner, f"all_{kind}"):
            return None
        out.update(getattr(owner, f"allowed_{kind}") or ())
    return frozenset(out)


def narrowed(base: frozenset | None, key_list: list | None) -> frozenset | None:
    """A grant narrowed by a key's list (None on the key = no narrowing); a key never widens."""
    if key_list is None:
        return base
    return frozenset(key_list) if base is None else base & frozenset(key_list)


def user_access(user: User, key: ApiKey | None = None) -> tuple[frozenset | None, frozenset | None]:
    """Effective (models, prompts) of a user through their own grants and their groups', narrowed by a key."""
    owners = (user, *user.groups)
    return (narrowed(granted(owners, "models"), key.allowed_models if key else None),
            narrowed(granted(owners, "prompts"), key.allowed_prompts if key else None))


def _limits(obj) -> dict:
    return {
        "rpm": obj.rpm, "tpm": obj.tpm, "max_concurrent": obj.max_concurrent,
        "budget_usd": obj.budget_usd, "budget_period": obj.budget_period or "month",
    }


def principal_from(key: ApiKey, user: User) -> Principal:
    """Build the immutable principal for a key row and its user row (and the user's groups)."""
    models, prompts = user_access(user, key)
    return Principal(
        key_id=key.id, user_id=user.id, user_name=user.name, role=user.role, user_active=user.active,
        expires_at=key.expires_at, revoked=key.revoked_at is not None, models=models, prompts=prompts,
        limits={"user": _limits(user), "key": _limits(key),
                "groups": [{"id": g.id, "name": g.name, **_limits(g)} for g in user.groups]},
        groups=tuple(g.name for g in user.groups),
        tags=tuple(key.tags or ()),
        mcp=(granted((user, *user.groups), "mcp"),
             None if key.allowed_mcp is None else frozenset(key.allowed_mcp)),
    )


class Catalog:
    """Thread-safe snapshot; at most one revision check per TTL, full reload only on change."""

    def __init__(self, box: Box, ttl: float = 1.0, key_cache_size: int = 100_000):
        self.box = box
        self.ttl = ttl
        self.key_cache_size = key_cache_size
        self._lock = threading.Lock()
        self._checked = 0.0
        self._revision: str | None = None
        self.models: dict[str, ModelInfo] = {}
        self.models_by_id: dict[str, ModelInfo] = {}
        self.prompts: dict[str, PromptInfo] = {}
        self.prompts_by_id: dict[str, PromptInfo] = {}
        self._versions: dict[tuple[int, str, int], PromptVersionInfo] = {}
        self._generation = 0  # bumped by every reload; a version read before a reload is not cached after it
        self._keys: dict[str, Principal | None] = {}
        self.mcp_servers: dict[str, McpServerInfo] = {}

    # -- freshness -------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Reload if the shared revision changed; cheap when called on every request."""
        now = time.monotonic()
        if not force and now - self._checked < self.ttl:
            return
        with self._lock:
            if not force and now - self._checked < self.ttl:
                return
            revision = db.session.scalar(sa.select(Setting.value).where(Setting.key == REVISION_KEY))
            if force or revision != self._revision:
                self._load()
                self._revision = revision
            self._checked = time.monotonic()

    def invalidate(self) -> None:
        """Force a revision check on the next request (same process, immediate)."""
        self._checked = 0.0
        self._revision = None

    def _provider(self, p: Provider, defaults: dict) -> ProviderInfo:
        broken = None
        secret = headers = None
        try:
            secret = self.box.decrypt(p.api_key_encrypted) if p.api_key_encrypted else None
            headers = self.box.decrypt(p.extra_headers_encrypted) if p.extra_headers_encrypted else None
        except SecretError as exc:
            broken = str(exc)
            # Fail closed: the provider answers 502 provider_misconfigured until an admin re-enters its key.
            log.error("provider %s is unusable: %s", p.name, broken)
        return ProviderInfo(
            id=p.id, name=p.name, kind=p.kind, base_url=p.base_url.rstrip("/"), api_key=secret,
            headers=orjson.loads(headers) if headers else {},
            connect_timeout=p.connect_timeout or defaults["CONNECT_TIMEOUT"],
            first_byte_timeout=p.first_byte_timeout or defaults["FIRST_BYTE_TIMEOUT"],
            idle_timeout=p.idle_timeout or defaults["IDLE_TIMEOUT"],
            total_timeout=p.total_timeout or defaults["TOTAL_TIMEOUT"],
            stream_usage=p.stream_usage, anthropic_version=p.anthropic_version,
            default_max_tokens=p.default_max_tokens or defaults.get("DEFAULT_MAX_TOKENS"), broken=broken,
            responses_api=p.responses_api, reasoning_effort=p.reasoning_effort,
        )

    def _mcp_server(self, s: McpServer, defaults: dict) -> McpServerInfo:
        broken = secret = headers = None
        try:
            secret = self.box.decrypt(s.api_key_encrypted) if s.api_key_encrypted else None
            headers = self.box.decrypt(s.headers_encrypted) if s.headers_encrypted else None
        except SecretError as exc:
            broken = str(exc)
            log.error("MCP server %s is unusable: %s", s.name, broken)  # fail closed, as providers do
        return McpServerInfo(id=s.id, name=s.name, url=s.url, api_key=secret,
                             headers=orjson.loads(headers) if headers else {},
                             timeout=s.timeout or defaults["FIRST_BYTE_TIMEOUT"], broken=broken)

    def _load(self) -> None:
        from flask import current_app

        cfg = current_app.config
        providers = {p.id: self._provider(p, cfg) for p in db.session.scalars(sa.select(Provider))
                     if p.enabled}
        models, by_id = {}, {}
        deployments: dict[int, list[ModelDeployment]] = {}
        for d in db.session.scalars(sa.select(ModelDeployment).order_by(ModelDeployment.id)):
            if d.provider_id in providers:
                deployments.setdefault(d.model_id, []).append(d)
        for m in db.session.scalars(sa.select(Model).where(Model.enabled)):
            deps = deployments.get(m.id) or []
            if m.provider_id not in providers and not deps:
                continue
            first = deps[0] if deps else m
            info = ModelInfo(
                id=m.id, slug=m.slug, provider=providers[first.provider_id], upstream_model=first.upstream_model,
                kind=m.kind, input_price=m.input_price or 0.0, output_price=m.output_price or 0.0,
                cached_input_price=m.cached_input_price, cache_write_price=m.cache_write_price,
                fallbacks=tuple(m.fallbacks or ()), endpoints=m.declared_endpoints, strategy=m.strategy or "weighted",
                cache_ttl=m.cache_ttl, cache_scope=m.cache_scope or "user",
            )
            info = replace(info, deployments=tuple(
                replace(info, provider=providers[d.provider_id], upstream_model=d.upstream_model, deployment_id=d.id,
                        weight=d.weight, priority=d.priority, rpm=d.rpm, tpm=d.tpm) for d in deps))
            models[m.slug] = info
            by_id[str(m.id)] = info
        labels: dict[int, dict] = {}
        splits: dict[int, dict] = {}
        for lab in db.session.scalars(sa.select(PromptLabel)):
            labels.setdefault(lab.prompt_id, {})[lab.label] = lab.version
            if lab.split:
                splits.setdefault(lab.prompt_id, {})[lab.label] = tuple((int(v), int(p)) for v, p in lab.split)
        prompts, p_by_id = {}, {}
        for p in db.session.scalars(sa.select(Prompt)):
            if not p.latest_version:
                continue
            info = PromptInfo(id=p.id, slug=p.slug, mode=p.mode, live=p.live_version or p.latest_version,
                              labels=labels.get(p.id, {}), description=p.description or "",
                              splits=splits.get(p.id, {}), cache_ttl=p.cache_ttl,
                              cache_scope=p.cache_scope or "user", mcp=bool(p.mcp))
            prompts[p.slug] = info
            p_by_id[str(p.id)] = info
        self.models, self.models_by_id = models, by_id
        self.mcp_servers = {s.name: self._mcp_server(s, cfg) for s in db.session.scalars(sa.select(McpServer))
                            if s.enabled}
        self.prompts, self.prompts_by_id = prompts, p_by_id
        self._keys = {}
        # Versions are immutable, but a prompt is not forever: after a delete its id (a restored backup, a reset
        # sequence) or its slug can name a new prompt, whose version 1 is another text. Start over on each change.
        self._versions = {}
        self._generation += 1

    # -- lookups ---------------------------------------------------------------------------------
    def model(self, ref: str) -> ModelInfo | None:
        """A model by slug or database id."""
        return self.models.get(ref) or self.models_by_id.get(ref)

    def prompt(self, ref: str) -> PromptInfo | None:
        """A prompt by slug or database id."""
        return self.prompts.get(ref) or self.prompts_by_id.get(ref)

    def version(self, prompt: PromptInfo, number: int) -> PromptVersionInfo | None:
        """A version of this very prompt (id and slug), cached until the catalog changes."""
        key = (prompt.id, prompt.slug, number)
        found = self._versions.get(key)
        if found is None:
            generation = self._generation
            row = db.session.scalar(sa.select(PromptVersion).join(Prompt, Prompt.id == PromptVersion.prompt_id).where(
                PromptVersion.prompt_id == prompt.id, Prompt.slug == prompt.slug, PromptVersion.version == number))
            if row is None:
                return None
            found = PromptVersionInfo(row.version, row.text, row.variables or {}, row.tools, row.params)
            if generation == self._generation:  # no reload since the read: the row is still this prompt's
                self._versions[key] = found
        return found

    def principal(self, raw_key: str) -> Principal | None:
        """The principal for a raw key, looked up once by hash and then cached until a change."""
        digest = hash_key(raw_key)
        try:
            return self._keys[digest]
        except KeyError:
            pass
        row = db.session.execute(
            sa.select(ApiKey, User).join(User, ApiKey.user_id == User.id).where(ApiKey.key_hash == digest)
        ).first()
        found = principal_from(*row) if row else None
        if len(self._keys) >= self.key_cache_size:
            self._keys.clear()
        self._keys[digest] = found
        return found


def bump_revision(session: Session) -> None:
    """Mark the catalog changed for every instance (runs inside the writing transaction)."""
    value = uuid.uuid4().hex
    updated = session.execute(
        sa.update(Setting).where(Setting.key == REVISION_KEY).values(value=value)
    ).rowcount
    if not updated:
        session.add(Setting(key=REVISION_KEY, value=value))


def _before_flush(session, flush_context, instances) -> None:
    """Any ORM change to a watched model bumps the revision, so no call site can forget to."""
    if session.info.get("bumping"):
        return
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(obj, WATCHED) for obj in changed):
        session.info["bumping"] = True
        try:
            bump_revision(session)
        finally:
            session.info["bumping"] = False


def install_revision_hook() -> None:
    """Register the before_flush hook once per process."""
    if not event.contains(Session, "before_flush", _before_flush):
        event.listen(Session, "before_flush", _before_flush)


def now() -> datetime:
    """Naive UTC now (re-exported for expiry checks)."""
    return utcnow()
