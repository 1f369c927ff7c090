"""Domain models: users, groups, keys, providers, models, prompts, request log, audit, stored responses."""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from .extensions import db

# Request rows, budgets, roll-ups and limiter counters are keyed by these ids, so an id must never name a second
# thing: SQLite reuses the highest rowid after a delete unless the table is AUTOINCREMENT (PostgreSQL sequences
# never go back). Migration 0004_no_id_reuse rebuilds existing SQLite tables this way.
NO_ID_REUSE = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    """Naive UTC now; every timestamp in the database is naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class LimitsMixin:
    """Per-subject limits shared by users and keys (None = no limit / inherit)."""

    rpm: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    tpm: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    max_concurrent: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    budget_usd: so.Mapped[float | None] = so.mapped_column(sa.Float)
    budget_period: so.Mapped[str | None] = so.mapped_column(sa.String(8))
    # None = no list; for users that means no access unless all_* is set, for keys "inherit".
    allowed_models: so.Mapped[list | None] = so.mapped_column(sa.JSON)
    allowed_prompts: so.Mapped[list | None] = so.mapped_column(sa.JSON)
    allowed_mcp: so.Mapped[list | None] = so.mapped_column(sa.JSON)  # "SERVER" or "SERVER/TOOL" entries


class User(LimitsMixin, db.Model):
    """A person or service that calls the API and may log in to the dashboard."""

    __tablename__ = "users"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    email: so.Mapped[str | None] = so.mapped_column(sa.String(254), unique=True)
    role: so.Mapped[str] = so.mapped_column(sa.String(16), default="member")
    active: so.Mapped[bool] = so.mapped_column(default=True)
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    all_models: so.Mapped[bool] = so.mapped_column(default=False)
    all_prompts: so.Mapped[bool] = so.mapped_column(default=False)
    all_mcp: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    session_version: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    keys: so.WriteOnlyMapped[ApiKey] = so.relationship(back_populates="user", passive_deletes=True)
    groups: so.Mapped[list[Group]] = so.relationship(secondary="group_members", back_populates="members",
                                                     order_by="Group.name")

    @property
    def is_admin(self) -> bool:
        """True for dashboard administrators."""
        return self.role == "admin"

    # Flask-Login protocol
    @property
    def is_active(self) -> bool:
        """Disabled users cannot log in."""
        return self.active

    @property
    def is_authenticated(self) -> bool:
        """Loaded users are authenticated."""
        return True

    @property
    def is_anonymous(self) -> bool:
        """Loaded users are not anonymous."""
        return False

    def get_id(self) -> str:
        """Session id: user id plus session version, so a password change ends old sessions."""
        return f"{self.id}:{self.session_version}"


class Group(LimitsMixin, db.Model):
    """A team: its grants widen its members' access; its limits and budget apply to them all, shared."""

    __tablename__ = "groups"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    description: so.Mapped[str] = so.mapped_column(sa.String(256), default="")
    all_models: so.Mapped[bool] = so.mapped_column(default=False)
    all_prompts: so.Mapped[bool] = so.mapped_column(default=False)
    all_mcp: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    members: so.Mapped[list[User]] = so.relationship(secondary="group_members", back_populates="groups",
                                                     order_by="User.name")


class GroupMember(db.Model):
    """A user's membership of a group."""

    __tablename__ = "group_members"
    group_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
                                               index=True)


class ApiKey(LimitsMixin, db.Model):
    """A user's secret, stored only as a SHA-256 hash."""

    __tablename__ = "api_keys"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64), default="")
    key_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    prefix: so.Mapped[str] = so.mapped_column(sa.String(16))
    last4: so.Mapped[str] = so.mapped_column(sa.String(4))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    expires_at: so.Mapped[datetime | None]
    revoked_at: so.Mapped[datetime | None]
    last_used_at: so.Mapped[datetime | None]
    tags: so.Mapped[list | None] = so.mapped_column(sa.JSON)  # default tags on every request made with the key
    user: so.Mapped[User] = so.relationship(back_populates="keys")

    @property
    def display(self) -> str:
        """Prefix and last four characters, the only form a key is ever shown in again."""
        return f"{self.prefix}…{self.last4}"


class Provider(db.Model):
    """An upstream AI API; its secret is stored encrypted."""

    __tablename__ = "providers"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(16), default="openai")
    base_url: so.Mapped[str] = so.mapped_column(sa.String(512))
    api_key_encrypted: so.Mapped[str | None] = so.mapped_column(sa.Text)
    api_key_hint: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    extra_headers_encrypted: so.Mapped[str | None] = so.mapped_column(sa.Text)
    connect_timeout: so.Mapped[float | None]
    first_byte_timeout: so.Mapped[float | None]
    idle_timeout: so.Mapped[float | None]
    total_timeout: so.Mapped[float | None]
    stream_usage: so.Mapped[bool] = so.mapped_column(default=True)
    anthropic_version: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    default_max_tokens: so.Mapped[int | None]
    responses_api: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    reasoning_effort: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    enabled: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class McpServer(db.Model):
    """An upstream MCP tool server (streamable HTTP); its API key and headers are stored encrypted."""

    __tablename__ = "mcp_servers"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    url: so.Mapped[str] = so.mapped_column(sa.String(512))
    description: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    api_key_encrypted: so.Mapped[str | None] = so.mapped_column(sa.Text)
    api_key_hint: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    headers_encrypted: so.Mapped[str | None] = so.mapped_column(sa.Text)
    header_names: so.Mapped[list | None] = so.mapped_column(sa.JSON)  # shown instead of the values
    timeout: so.Mapped[float | None]
    enabled: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


# The OpenAI endpoints a model can serve, and the one each kind serves first. A chat model serves chat and
# completions by default (vLLM, llama.cpp and Ollama serve both for one model); embeddings stay separate.
MODEL_ENDPOINTS = ("chat", "completions", "embeddings")
KIND_ENDPOINT = {"chat": "chat", "completion": "completions", "embedding": "embeddings"}
DEFAULT_ENDPOINTS = {"chat": ("chat", "completions"), "completion": ("completions",), "embedding": ("embeddings",)}


class Model(db.Model):
    """What clients ask for: a public slug mapped to a provider's model."""

    __tablename__ = "models"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    slug: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    provider_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("providers.id"), index=True)
    upstream_model: so.Mapped[str] = so.mapped_column(sa.String(256))
    kind: so.Mapped[str] = so.mapped_column(sa.String(16), default="chat")
    input_price: so.Mapped[float] = so.mapped_column(default=0.0)  # USD per million tokens
    output_price: so.Mapped[float] = so.mapped_column(default=0.0)
    cached_input_price: so.Mapped[float | None]
    cache_write_price: so.Mapped[float | None]
    fallbacks: so.Mapped[list | None] = so.mapped_column(sa.JSON)
    endpoints: so.Mapped[list | None] = so.mapped_column(sa.JSON)  # None = DEFAULT_ENDPOINTS of its kind
    enabled: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    strategy: so.Mapped[str] = so.mapped_column(sa.String(16), default="weighted", server_default="weighted")
    cache_ttl: so.Mapped[int | None]  # seconds; None = the exact response cache is off for this model
    cache_scope: so.Mapped[str] = so.mapped_column(sa.String(8), default="user", server_default="user")
    provider: so.Mapped[Provider] = so.relationship()
    deployments: so.Mapped[list[ModelDeployment]] = so.relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True,
        order_by="ModelDeployment.id")

    @property
    def declared_endpoints(self) -> tuple[str, ...]:
        """The endpoints it declares: its own list, else its kind's default."""
        return tuple(self.endpoints) if self.endpoints else DEFAULT_ENDPOINTS.get(self.kind, ())


class ModelDeployment(db.Model):
    """One place a model runs: a provider and its model name, with a weight, a priority and optional limits."""

    __tablename__ = "model_deployments"
    __table_args__ = (sa.UniqueConstraint("model_id", "provider_id", "upstream_model",
                                          name="uq_model_deployments_target"), NO_ID_REUSE)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    model_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"), index=True)
    provider_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("providers.id"), index=True)
    upstream_model: so.Mapped[str] = so.mapped_column(sa.String(256))
    weight: so.Mapped[int] = so.mapped_column(default=1, server_default="1")
    priority: so.Mapped[int] = so.mapped_column(default=0, server_default="0")  # lower is preferred
    rpm: so.Mapped[int | None]
    tpm: so.Mapped[int | None]
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    model: so.Mapped[Model] = so.relationship(back_populates="deployments")
    provider: so.Mapped[Provider] = so.relationship()


class Prompt(db.Model):
    """A stored system prompt; its text lives in immutable versions."""

    __tablename__ = "prompts"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    slug: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    description: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    mode: so.Mapped[str] = so.mapped_column(sa.String(16), default="prepend")
    live_version: so.Mapped[int | None]  # None = the newest version
    latest_version: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, onupdate=utcnow)
    cache_ttl: so.Mapped[int | None]  # seconds; set, it overrides the model's response cache for calls using it
    cache_scope: so.Mapped[str] = so.mapped_column(sa.String(8), default="user", server_default="user")
    # Published over MCP: offered (text included) by /mcp prompts/list and prompts/get to keys that may use it.
    mcp: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())


class PromptVersion(db.Model):
    """One immutable version of a prompt's text, variables, tools and parameters."""

    __tablename__ = "prompt_versions"
    __table_args__ = (sa.UniqueConstraint("prompt_id", "version"), NO_ID_REUSE)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    prompt_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    version: so.Mapped[int]
    text: so.Mapped[str] = so.mapped_column(sa.Text)
    variables: so.Mapped[dict | None] = so.mapped_column(sa.JSON)  # declared name -> default
    tools: so.Mapped[list | None] = so.mapped_column(sa.JSON)
    params: so.Mapped[dict | None] = so.mapped_column(sa.JSON)  # name -> {"value": v, "locked": bool}
    note: so.Mapped[str] = so.mapped_column(sa.String(256), default="")
    created_by: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class PromptLabel(db.Model):
    """A named pointer (production, staging, ...) to one version of a prompt."""

    __tablename__ = "prompt_labels"
    __table_args__ = (sa.UniqueConstraint("prompt_id", "label"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    prompt_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    label: so.Mapped[str] = so.mapped_column(sa.String(64))
    version: so.Mapped[int]  # the version most traffic gets (the only one without a split)
    split: so.Mapped[list | None] = so.mapped_column(sa.JSON)  # a rollout: [[version, percent], ...] summing to 100


class RequestLog(db.Model):
    """One row per request that reached /v1, including rejected and failed ones."""

    __tablename__ = "request_logs"
    __table_args__ = (
        sa.Index("ix_request_logs_user_created", "user_id", "created_at"),
        sa.Index("ix_request_logs_model_created", "model", "created_at"),
        sa.Index("ix_request_logs_prompt_created", "prompt", "created_at"),  # a prompt's per-version table
    )
    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    request_id: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    user_id: so.Mapped[int | None]
    key_id: so.Mapped[int | None]
    model: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    model_id: so.Mapped[int | None]
    upstream_model: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    prompt: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    prompt_version: so.Mapped[int | None]
    provider_id: so.Mapped[int | None]
    endpoint: so.Mapped[str] = so.mapped_column(sa.String(64))
    inbound_format: so.Mapped[str] = so.mapped_column(sa.String(16), default="openai")
    stream: so.Mapped[bool] = so.mapped_column(default=False)
    status: so.Mapped[int]
    error_type: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    error_message: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    input_tokens: so.Mapped[int | None]
    output_tokens: so.Mapped[int | None]
    cached_tokens: so.Mapped[int | None]
    cache_write_tokens: so.Mapped[int | None]
    usage_estimated: so.Mapped[bool] = so.mapped_column(default=False)
    cost: so.Mapped[float | None]
    latency_ms: so.Mapped[float | None]
    ttft_ms: so.Mapped[float | None]
    client_ip: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    request_body: so.Mapped[str | None] = so.mapped_column(sa.Text)
    response_body: so.Mapped[str | None] = so.mapped_column(sa.Text)
    tags: so.Mapped[str | None] = so.mapped_column(sa.Text)  # "a,b" for display and CSV; filters use RequestTag
    deployment_id: so.Mapped[int | None]
    cache_hit: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    cost_saved: so.Mapped[float | None]  # a cache hit: what the upstream call would have cost


class RequestTag(db.Model):
    """One tag of one request-log row: an indexed (tag, time) lookup that works alike on SQLite and PostgreSQL."""

    __tablename__ = "request_tags"
    __table_args__ = (sa.Index("ix_request_tags_tag_created", "tag", "created_at"),)
    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    request_id: so.Mapped[str] = so.mapped_column(sa.String(64))  # RequestLog.request_id (no FK: batch inserts)
    tag: so.Mapped[str] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime] = so.mapped_column(index=True)  # the row's time, for retention


def tagged(tag: str):
    """A request-log filter: rows carrying `tag` (an indexed lookup in request_tags)."""
    return RequestLog.request_id.in_(sa.select(RequestTag.request_id).where(RequestTag.tag == tag))


class ResponseCacheEntry(db.Model):
    """One cached answer of the exact response cache (when Redis is not configured)."""

    __tablename__ = "response_cache"
    key: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    expires_at: so.Mapped[datetime] = so.mapped_column(index=True)
    size: so.Mapped[int]
    value: so.Mapped[str] = so.mapped_column(sa.Text)


class AuditEvent(db.Model):
    """Who changed what in the dashboard or on the CLI, and when."""

    __tablename__ = "audit_events"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    actor: so.Mapped[str] = so.mapped_column(sa.String(128))
    action: so.Mapped[str] = so.mapped_column(sa.String(64))
    target_type: so.Mapped[str] = so.mapped_column(sa.String(32))
    target: so.Mapped[str] = so.mapped_column(sa.String(256))
    details: so.Mapped[dict | None] = so.mapped_column(sa.JSON)


class Setting(db.Model):
    """Small key/value state shared by all instances (catalog revision, set-up token)."""

    __tablename__ = "settings"
    key: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    value: so.Mapped[str] = so.mapped_column(sa.Text)


class BudgetUsage(db.Model):
    """Spend settled and reserved for one user or key in one budget period."""

    __tablename__ = "budget_usage"
    __table_args__ = (sa.UniqueConstraint("subject", "period_start"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    subject: so.Mapped[str] = so.mapped_column(sa.String(32))  # "user:1", "key:7" or "group:3"
    period_start: so.Mapped[datetime]
    spent: so.Mapped[float] = so.mapped_column(default=0.0)
    reserved: so.Mapped[float] = so.mapped_column(default=0.0)


LATENCY_EDGES_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)  # + overflow


class UsageRollup(db.Model):
    """Request-log totals per hour (period "h"; the column leaves room for coarser periods), kept when rows are pruned.

    `dim` "all" rows hold a user's totals (series, percentiles, top users); "model", "prompt" and "key" rows hold
    the same sums split by that one dimension (`value`), so each chart reads only the rows it needs instead of a
    user x key x model x prompt cross product. Each row is counted twice: under its user and under user_id -1
    (everyone), so unfiltered charts read few rows. No user is 0 (not NULL) so the unique key can be upserted.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (sa.UniqueConstraint("period", "dim", "user_id", "bucket_start", "value",
                                          name="uq_usage_rollups_bucket"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    period: so.Mapped[str] = so.mapped_column(sa.String(1))
    dim: so.Mapped[str] = so.mapped_column(sa.String(8))
    bucket_start: so.Mapped[datetime]
    user_id: so.Mapped[int] = so.mapped_column(default=0)
    value: so.Mapped[str] = so.mapped_column(sa.String(256), default="")
    requests: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    errors: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    input_tokens: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    output_tokens: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    cached_tokens: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    cost: so.Mapped[float] = so.mapped_column(default=0.0)
    latency_count: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    latency_sum: so.Mapped[float] = so.mapped_column(default=0.0)
    ttft_count: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    ttft_sum: so.Mapped[float] = so.mapped_column(default=0.0)
    cache_hits: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0, server_default="0")
    cost_saved: so.Mapped[float] = so.mapped_column(default=0.0, server_default="0")
    # latency histogram: lat_i counts rows with EDGES[i-1] <= latency < EDGES[i]; the last one is the overflow
    lat_0: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_1: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_2: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_3: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_4: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_5: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_6: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_7: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_8: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_9: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_10: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_11: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_12: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    lat_13: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)


class StoredResponse(db.Model):
    """A Responses API answer kept for `previous_response_id` and GET /v1/responses/{id}, owned by one user."""

    __tablename__ = "stored_responses"
    id: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)  # resp_...
    # No foreign keys: a revoked key's answers stay readable by the user's other keys (on models those keys may
    # use) until retention drops them; deleting the user removes them (manage.delete_user).
    user_id: so.Mapped[int] = so.mapped_column(index=True)
    key_id: so.Mapped[int | None]
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    model: so.Mapped[str] = so.mapped_column(sa.String(256))  # the public model name the client asked for
    previous_response_id: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    context: so.Mapped[list] = so.mapped_column(sa.JSON)  # history items before this turn
    input_items: so.Mapped[list] = so.mapped_column(sa.JSON)  # this turn's input items
    response: so.Mapped[dict] = so.mapped_column(sa.JSON)  # the Response object


def delete_before(session, table: sa.Table, cutoff: datetime, batch: int = 10_000) -> int:
    """Delete a table's rows created before `cutoff`, `batch` rows per transaction; returns rows deleted."""
    deleted = 0
    while True:
        ids = sa.select(table.c.id).where(table.c.created_at < cutoff).limit(batch).scalar_subquery()
        count = session.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount
        session.commit()
        deleted += count
        if count < batch:
            return deleted


class Webhook(db.Model):
    """Where alerts go: a URL, the event categories it wants, a payload format, an optional signing secret."""

    __tablename__ = "webhooks"
    __table_args__ = NO_ID_REUSE
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    url: so.Mapped[str] = so.mapped_column(sa.String(512))
    events: so.Mapped[list] = so.mapped_column(sa.JSON)  # categories: budget, errors, provider, key_expiry
    format: so.Mapped[str] = so.mapped_column(sa.String(8), default="json")  # json or slack
    secret_encrypted: so.Mapped[str | None] = so.mapped_column(sa.Text)
    enabled: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class WebhookDelivery(db.Model):
    """One alert for one webhook: the durable outbox row, retried until delivered or out of attempts.

    (webhook_id, dedup_key) is unique, so an event (a threshold in a budget period, a key's expiry) is queued once
    per webhook however many instances notice it.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("webhook_id", "dedup_key", name="uq_webhook_deliveries_dedup"),
                      sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"), NO_ID_REUSE)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    webhook_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event: so.Mapped[str] = so.mapped_column(sa.String(32))
    dedup_key: so.Mapped[str] = so.mapped_column(sa.String(191))
    payload: so.Mapped[dict] = so.mapped_column(sa.JSON)  # {"text": ..., "data": {...}}
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default="pending")  # pending, sending, delivered, failed
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    next_attempt_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    lease_until: so.Mapped[datetime | None]
    last_error: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    response_status: so.Mapped[int | None]
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    delivered_at: so.Mapped[datetime | None]
