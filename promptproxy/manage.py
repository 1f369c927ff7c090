"""Create and change resources; shared by the CLI and the dashboard, each change audited."""
from __future__ import annotations

import re
import secrets
from datetime import datetime

import orjson
import sqlalchemy as sa
from flask import current_app

from .core.grammar import valid_label, valid_slug
from .core.prompts import variables_in
from .crypto import hash_key, hint
from .extensions import db
from .models import (
    DEFAULT_ENDPOINTS,
    KIND_ENDPOINT,
    MODEL_ENDPOINTS,
    ApiKey,
    AuditEvent,
    BudgetUsage,
    McpServer,
    Model,
    ModelDeployment,
    Prompt,
    PromptLabel,
    PromptVersion,
    Provider,
    RequestLog,
    StoredResponse,
    UsageRollup,
    User,
    utcnow,
)
from .netguard import UnsafeURL, drop_secrets_on_host_change, validate_base_url
from .providers import get_adapter
from .proxy import tags as tag_rules

ROLES = ("admin", "member")
MODEL_KINDS = ("chat", "completion", "embedding")
PROMPT_MODES = ("prepend", "replace", "reject")
PERIODS = ("day", "week", "month")
STRATEGIES = ("weighted", "least-busy")
CACHE_SCOPES = ("user", "shared")
MAX_CACHE_TTL = 30 * 86400
MCP_TOOL_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class ManageError(ValueError):
    """A change that cannot be made, with a message for a person."""


def audit(actor: str, action: str, target_type: str, target: str, details: dict | None = None) -> None:
    """Record who changed what (committed with the change)."""
    db.session.add(AuditEvent(actor=actor, action=action, target_type=target_type, target=str(target)[:256],
                              details=details))


def _gateway():
    return current_app.extensions["promptproxy"]


def _slug(value: str, what: str) -> str:
    if not valid_slug(value):
        raise ManageError(f"{what} must be 1-128 letters, digits, '.', '_', '-' or '/', without ':' or '@'")
    return value


def _unique(model, column, value, what: str, exclude_id: int | None = None) -> None:
    query = sa.select(model.id).where(column == value)
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    if db.session.scalar(query) is not None:
        raise ManageError(f"{what} `{value}` already exists")


def _lookup(model, column, ref: str, what: str):
    """A row by its unique name, else by numeric id; ManageError when neither matches."""
    found = db.session.scalar(sa.select(model).where(column == ref))
    if found is None and str(ref).isdigit():
        found = db.session.get(model, int(ref))
    if found is None:
        raise ManageError(f"no {what} `{ref}`")
    return found


# -- users -------------------------------------------------------------------------------------------
def get_user(ref: str) -> User:
    """A user by name, email or id."""
    user = db.session.scalar(sa.select(User).where(sa.or_(User.name == ref, User.email == ref)))
    if user is None and str(ref).isdigit():
        user = db.session.get(User, int(ref))
    if user is None:
        raise ManageError(f"no user `{ref}`")
    return user


def create_user(actor: str, name: str, email: str | None = None, role: str = "member",
                password: str | None = None, **limits) -> User:
    """A new user (no model or prompt access unless granted)."""
    name = (name or "").strip()
    if not name or len(name) > 64 or any(c in name for c in ":@ \t\n"):
        raise ManageError("user name must be 1-64 characters without spaces, ':' or '@'")
    _unique(User, User.name, name, "user")
    if email:
        email = _email(email)
        _unique(User, User.email, email, "email")
    if role not in ROLES:
        raise ManageError(f"role must be one of {', '.join(ROLES)}")
    user = User(name=name, email=email or None, role=role, active=True)
    if password:
        set_password(user, password)
    db.session.add(user)
    apply_limits(user, **limits)
    db.session.flush()
    audit(actor, "create", "user", name, {"role": role, **_public(limits)})
    return user


def _email(email: str) -> str:
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > 254 or any(c.isspace() for c in email):
        raise ManageError(f"`{email}` is not a valid email address")
    return email


def set_password(user: User, password: str) -> None:
    """Hash with scrypt (N=2^17, r=8, p=1) and end the user's other sessions."""
    from werkzeug.security import generate_password_hash

    if len(password) < 8:
        raise ManageError("password must be at least 8 characters")
    user.password_hash = generate_password_hash(password, "scrypt:131072:8:1")
    user.session_version = (user.session_version or 0) + 1


def _public(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None and k != "password"}


def apply_limits(obj, rpm=None, tpm=None, max_concurrent=None, budget=None, period=None, allow_models=(),
                 allow_prompts=(), all_models=None, all_prompts=None, clear_models=False,
                 clear_prompts=False, allow_mcp=(), all_mcp=None, clear_mcp=False) -> dict:
    """Set limits and allow-lists on a user or key; returns what changed."""
    changed = {}
    for attr, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)):
        if value is not None:
            if value < 0:
                raise ManageError(f"{attr} must be 0 (no limit) or more")
            setattr(obj, attr, value or None)
            changed[attr] = value
    if budget is not None:
        if budget < 0:
            raise ManageError("budget must be 0 (no budget) or more")
        obj.budget_usd = budget or None
        changed["budget_usd"] = budget
    if period is not None:
        if period not in PERIODS:
            raise ManageError(f"period must be one of {', '.join(PERIODS)}")
        obj.budget_period = period
        changed["budget_period"] = period
    for flag, attr, listed in ((all_models, "all_models", "allowed_models"),
                               (all_prompts, "all_prompts", "allowed_prompts"),
                               (all_mcp, "all_mcp", "allowed_mcp")):
        if flag is not None:
            if hasattr(obj, attr):
                setattr(obj, attr, flag)
            elif flag:  # a key: "all" means no narrowing, i.e. everything its user may use
                setattr(obj, listed, None)
            elif getattr(obj, listed) is None:
                setattr(obj, listed, [])  # a key: only what it lists (nothing until --allow-*)
            changed[attr] = flag
    for clear, attr in ((clear_models, "allowed_models"), (clear_prompts, "allowed_prompts"),
                        (clear_mcp, "allowed_mcp")):
        if clear:
            setattr(obj, attr, None)
            changed[attr] = None
    for values, attr, model, column in ((allow_models, "allowed_models", Model, Model.slug),
                                        (allow_prompts, "allowed_prompts", Prompt, Prompt.slug)):
        if values:
            for value in values:
                if db.session.scalar(sa.select(model.id).where(column == value)) is None:
                    raise ManageError(f"no {model.__name__.lower()} `{value}`")
            current = list(getattr(obj, attr) or [])
            setattr(obj, attr, current + [v for v in values if v not in current])
            changed[attr] = getattr(obj, attr)
    if allow_mcp:
        grants = list(obj.allowed_mcp or [])
        for grant in map(check_grant, allow_mcp):
            if grant not in grants:
                grants.append(grant)
        obj.allowed_mcp = grants
        changed["allowed_mcp"] = obj.allowed_mcp
    return changed


def check_grant(grant: str) -> str:
    """An MCP grant, `SERVER` or `SERVER/TOOL`, naming an existing server."""
    server, _, tool = str(grant).partition("/")
    if tool and not MCP_TOOL_RE.match(tool):
        raise ManageError(f"`{grant}`: a tool name is 1-128 letters, digits, '_', '.' or '-'")
    if db.session.scalar(sa.select(McpServer.id).where(McpServer.name == server)) is None:
        raise ManageError(f"no MCP server `{server}`")
    return grant


def update_user(actor: str, user: User, email=None, role=None, active=None, password=None, **limits) -> dict:
    """Change a user; returns what changed."""
    changed = apply_limits(user, **limits)
    if email is not None:
        email = _email(email) if email else None
        if email:
            _unique(User, User.email, email, "email", user.id)
        user.email = email
        changed["email"] = email
    if role is not None:
        if role not in ROLES:
            raise ManageError(f"role must be one of {', '.join(ROLES)}")
        user.role = role
        changed["role"] = role
    if active is not None:
        user.active = active
        changed["active"] = active
    if password:
        set_password(user, password)
        changed["password"] = "changed"  # noqa: S105 - a label, not a password
    audit(actor, "update", "user", user.name, changed)
    return changed


def delete_user(actor: str, user: User, hard: bool = False) -> str:
    """Delete a user: "deactivated" if they have history (kept, so the log still names them), else "deleted".

    A deactivated user keeps their name and id (request rows, budgets and roll-ups stay attributed to them) but
    cannot log in or call the API: keys revoked, password, email and sessions cleared. `hard` deletes them even
    with history, and anonymises or removes everything keyed by their id and their keys' ids. Either way their
    stored Responses (whole conversations, kept only for them to read and continue) are removed; disabling a user
    (`update_user(active=False)`) keeps them.
    """
    key_ids = db.session.scalars(sa.select(ApiKey.id).where(ApiKey.user_id == user.id)).all()
    db.session.execute(sa.delete(StoredResponse).where(StoredResponse.user_id == user.id))
    if not hard and _has_history(user.id, key_ids):
        now = utcnow()
        db.session.execute(sa.update(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
                           .values(revoked_at=now))
        user.active = False
        user.password_hash = user.email = None
        user.session_version = (user.session_version or 0) + 1
        audit(actor, "deactivate", "user", user.name, {"reason": "has history", "keys_revoked": len(key_ids)})
        return "deactivated"
    if hard:
        _forget(user.id, key_ids)
    db.session.execute(sa.delete(ApiKey).where(ApiKey.user_id == user.id))
    db.session.delete(user)
    audit(actor, "delete", "user", user.name, {"hard": True} if hard else None)
    return "deleted"


def _subjects(user_id: int, key_ids) -> list[str]:
    """Budget subjects of a user and their keys."""
    return [f"user:{user_id}", *(f"key:{k}" for k in key_ids)]


def _has_history(user_id: int, key_ids) -> bool:
    """True if any request row, budget or roll-up is keyed by the user or one of their keys."""
    by_user = RequestLog.user_id == user_id
    checks = (
        sa.select(RequestLog.id).where(sa.or_(by_user, RequestLog.key_id.in_(key_ids)) if key_ids else by_user),
        sa.select(BudgetUsage.id).where(BudgetUsage.subject.in_(_subjects(user_id, key_ids))),
        sa.select(UsageRollup.id).where(UsageRollup.user_id == user_id),
    )
    return any(db.session.scalar(query.limit(1)) is not None for query in checks)


def _forget(user_id: int, key_ids) -> None:
    """Anonymise the user's request rows (counts and costs stay in the totals), drop their budgets and roll-ups."""
    mine = RequestLog.user_id == user_id
    db.session.execute(sa.update(RequestLog).where(sa.or_(mine, RequestLog.key_id.in_(key_ids)) if key_ids else mine)
                       .values(user_id=None, key_id=None, client_ip=None, request_body=None, response_body=None))
    db.session.execute(sa.delete(BudgetUsage).where(BudgetUsage.subject.in_(_subjects(user_id, key_ids))))
    db.session.execute(sa.delete(UsageRollup).where(UsageRollup.user_id == user_id))
    if key_ids:  # the per-key split under "everyone"; the everyone totals themselves are kept
        db.session.execute(sa.delete(UsageRollup).where(UsageRollup.dim == "key",
                                                        UsageRollup.value.in_([str(k) for k in key_ids])))


# -- keys --------------------------------------------------------------------------------------------
def generate_key() -> str:
    """`pp-` and 32 random bytes, URL-safe."""
    return "pp-" + secrets.token_urlsafe(32)


def key_tags(values) -> list[str] | None:
    """A key's default tags, checked as request tags are (None or empty = none)."""
    try:
        return tag_rules.check(values) or None
    except tag_rules.TagError as exc:
        raise ManageError(str(exc).replace("per request", "per key")) from None


def create_key(actor: str, user: User, name: str = "", expires_at: datetime | None = None,
               tags=()) -> tuple[ApiKey, str]:
    """A new key; the raw secret is returned once and never stored."""
    raw = generate_key()
    if expires_at is not None and expires_at <= utcnow():
        raise ManageError("expiry must be in the future")
    key = ApiKey(user_id=user.id, name=(name or "")[:64], key_hash=hash_key(raw), prefix=raw[:7], last4=raw[-4:],
                 expires_at=expires_at, tags=key_tags(tags))
    db.session.add(key)
    db.session.flush()
    details = {"name": key.name, **({"tags": key.tags} if key.tags else {})}
    audit(actor, "create", "key", f"{key.id} ({key.display}) for {user.name}", details)
    return key, raw


def get_key(ref: str) -> ApiKey:
    """A key by id or by its displayed prefix…last4."""
    key = db.session.get(ApiKey, int(ref)) if str(ref).isdigit() else None
    if key is None:
        raise ManageError(f"no key `{ref}`")
    return key


def revoke_key(actor: str, key: ApiKey) -> None:
    """Revoke at once (cached lookups see it within the cache TTL)."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    audit(actor, "revoke", "key", f"{key.id} ({key.display})")


def update_key(actor: str, key: ApiKey, name: str | None = None, tags=None, **limits) -> dict:
    """Narrow a key's limits and lists (never wider than its user's, enforced at request time); `tags` replaces."""
    changed = apply_limits(key, **limits)
    if name is not None:
        key.name = name[:64]
        changed["name"] = key.name
    if tags is not None:
        key.tags = key_tags(tags)
        changed["tags"] = key.tags
    audit(actor, "update", "key", f"{key.id} ({key.display})", changed)
    return changed


# -- providers ---------------------------------------------------------------------------------------
def _check_url(url: str) -> str:
    try:
        return validate_base_url(url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except UnsafeURL as exc:
        raise ManageError(str(exc)) from None


def get_provider(ref: str) -> Provider:
    """A provider by name or id."""
    return _lookup(Provider, Provider.name, ref, "provider")


def _set_secret(provider: Provider, api_key: str | None, headers: dict | None) -> None:
    box = _gateway().box
    if api_key is not None:
        provider.api_key_encrypted = box.encrypt(api_key) if api_key else None
        provider.api_key_hint = hint(api_key) if api_key else None
    if headers is not None:
        provider.extra_headers_encrypted = box.encrypt(orjson.dumps(headers).decode()) if headers else None


# Each secret of a provider and the columns holding it (netguard.drop_secrets_on_host_change).
PROVIDER_SECRETS = {"api_key": ("api_key_encrypted", "api_key_hint"), "headers": ("extra_headers_encrypted",)}
PROVIDER_FIELDS = ("connect_timeout", "first_byte_timeout", "idle_timeout", "total_timeout", "stream_usage",
                   "anthropic_version", "default_max_tokens", "enabled", "responses_api", "reasoning_effort")


def create_provider(actor: str, name: str, kind: str, base_url: str, api_key: str | None = None,
                    headers: dict | None = None, **options) -> Provider:
    """A new upstream; its secret is encrypted before it touches the database."""
    from .providers import KINDS

    name = _slug(name, "provider name")
    _unique(Provider, Provider.name, name, "provider")
    if kind not in KINDS:
        raise ManageError(f"kind must be one of {', '.join(KINDS)}")
    provider = Provider(name=name, kind=kind, base_url=_check_url(base_url))
    _set_secret(provider, api_key, headers)
    _provider_options(provider, options)
    db.session.add(provider)
    db.session.flush()
    audit(actor, "create", "provider", name, {"kind": kind, "base_url": provider.base_url})
    return provider


def _provider_options(provider: Provider, options: dict) -> dict:
    # Anthropic upstreams are always reached through the Messages adapter; /v1/responses is never theirs.
    if options.get("responses_api") and provider.kind == "anthropic":
        raise ManageError("responses_api applies to OpenAI-compatible providers only: an `anthropic` provider "
                          "gets /v1/responses translated to the Messages API")
    changed = {}
    for field in PROVIDER_FIELDS:
        value = options.get(field)
        if value is not None:
            if field.endswith("timeout") and value <= 0:
                raise ManageError(f"{field} must be positive")
            setattr(provider, field, value)
            changed[field] = value
    return changed


def update_provider(actor: str, provider: Provider, base_url: str | None = None, api_key: str | None = None,
                    headers: dict | None = None, name: str | None = None, **options) -> dict:
    """Change a provider; a new host drops the stored key and headers not given anew (never sent to another host)."""
    changed = _provider_options(provider, options)
    if name is not None and name != provider.name:
        _unique(Provider, Provider.name, _slug(name, "provider name"), "provider", provider.id)
        provider.name = changed["name"] = name
    if base_url is not None:
        url = _check_url(base_url)
        changed.update(drop_secrets_on_host_change(provider, provider.base_url, url, PROVIDER_SECRETS,
                                                   {"api_key": api_key, "headers": headers}))
        provider.base_url = changed["base_url"] = url
    if api_key is not None:
        changed["api_key"] = "replaced" if api_key else "cleared"
    if headers is not None:
        changed["headers"] = sorted(headers)
    _set_secret(provider, api_key, headers)
    audit(actor, "update", "provider", provider.name, changed)
    return changed


def delete_provider(actor: str, provider: Provider) -> None:
    """Delete a provider that no model uses."""
    used = db.session.scalars(sa.select(Model.slug).where(Model.provider_id == provider.id)).all()
    if used:
        raise ManageError(f"provider `{provider.name}` is used by model(s): {', '.join(used)}")
    db.session.delete(provider)
    audit(actor, "delete", "provider", provider.name)


# -- models ------------------------------------------------------------------------------------------
def get_model(ref: str) -> Model:
    """A model by slug or id."""
    return _lookup(Model, Model.slug, ref, "model")


PRICE_FIELDS = ("input_price", "output_price", "cached_input_price", "cache_write_price")


def create_model(actor: str, slug: str, provider: Provider, upstream_model: str, kind: str = "chat",
                 **options) -> Model:
    """Expose a provider's model under a public slug."""
    slug = _slug(slug, "model slug")
    _unique(Model, Model.slug, slug, "model")
    model = Model(slug=slug, provider_id=provider.id, upstream_model="", kind="chat")
    _model_fields(model, upstream_model=upstream_model, kind=kind, **options)
    _check_endpoints(model, provider)
    db.session.add(model)
    db.session.flush()
    db.session.add(ModelDeployment(model_id=model.id, provider_id=provider.id, upstream_model=model.upstream_model))
    audit(actor, "create", "model", slug, {"provider": provider.name, "upstream_model": upstream_model})
    return model


def _model_fields(model: Model, upstream_model=None, kind=None, fallbacks=None, enabled=None, endpoints=None,
                  strategy=None, cache_ttl=None, cache_scope=None, **prices) -> dict:
    changed = {}
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise ManageError(f"strategy must be one of {', '.join(STRATEGIES)}")
        model.strategy = changed["strategy"] = strategy
    changed.update(_cache_fields(model, cache_ttl, cache_scope))
    if upstream_model is not None:
        if not upstream_model.strip() or len(upstream_model) > 256:
            raise ManageError("upstream model name must be 1-256 characters")
        model.upstream_model = changed["upstream_model"] = upstream_model.strip()
    if kind is not None:
        if kind not in MODEL_KINDS:
            raise ManageError(f"kind must be one of {', '.join(MODEL_KINDS)}")
        model.kind = changed["kind"] = kind
    for field in PRICE_FIELDS:
        value = prices.get(field)
        if value is not None:
            if value < 0:
                raise ManageError(f"{field} must not be negative")
            setattr(model, field, value)
            changed[field] = value
    if fallbacks is not None:
        for slug in fallbacks:
            if slug == model.slug:
                raise ManageError("a model cannot fall back to itself")
            get_model(slug)
        model.fallbacks = changed["fallbacks"] = list(fallbacks) or None
    if enabled is not None:
        model.enabled = changed["enabled"] = enabled
    if endpoints is not None:
        model.endpoints = _endpoint_list(endpoints)
        changed["endpoints"] = list(model.declared_endpoints)
    return changed


def _endpoint_list(names) -> list | None:
    """Endpoint names in canonical order (None, the kind's default, for an empty list); unknown names refused."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ManageError("endpoints must be a list of names: chat, completions, embeddings")
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - set(MODEL_ENDPOINTS))
    if unknown:
        raise ManageError(f"unknown endpoint {', '.join(unknown)}; choose from {', '.join(MODEL_ENDPOINTS)}")
    return [n for n in MODEL_ENDPOINTS if n in wanted] or None


# The adapter endpoint (providers/*.py PATHS) behind each model endpoint.
ADAPTER_ENDPOINT = {"chat": "chat", "completions": "completion", "embeddings": "embedding"}


def _check_endpoints(model: Model, provider: Provider) -> None:
    """A model serves its kind's endpoint, never mixes embeddings with text, and only what its provider can."""
    declared = model.declared_endpoints
    if KIND_ENDPOINT[model.kind] not in declared:
        raise ManageError(f"a {model.kind} model must serve {KIND_ENDPOINT[model.kind]}")
    if ("embeddings" in declared) != (model.kind == "embedding") or (model.kind == "embedding" and len(declared) > 1):
        raise ManageError("embeddings stay separate: an embedding model serves only embeddings")
    if model.endpoints:  # a list given on purpose must be servable; the default adapts to the provider
        missing = [n for n in declared if ADAPTER_ENDPOINT[n] not in get_adapter(provider.kind).endpoints]
        if missing:
            raise ManageError(f"the provider `{provider.name}` ({provider.kind}) cannot serve {', '.join(missing)}")
        if declared == DEFAULT_ENDPOINTS[model.kind]:
            model.endpoints = None  # the default: it follows the kind


def served_endpoints(model: Model) -> list[str]:
    """The endpoints a model answers: those it declares that its provider's API has."""
    capable = get_adapter(model.provider.kind).endpoints
    return [n for n in model.declared_endpoints if ADAPTER_ENDPOINT[n] in capable]


def update_model(actor: str, model: Model, provider: Provider | None = None, **fields) -> dict:
    """Change a model's mapping, prices, fallbacks or endpoints; a new mapping moves its first deployment with it."""
    first = model.deployments[0] if model.deployments else None
    changed = _model_fields(model, **fields)
    if provider is not None:
        model.provider_id = provider.id
        changed["provider"] = provider.name
    _check_endpoints(model, provider or db.session.get(Provider, model.provider_id))
    if first is not None and (provider is not None or "upstream_model" in changed):
        first.provider_id, first.upstream_model = model.provider_id, model.upstream_model
    audit(actor, "update", "model", model.slug, changed)
    return changed


def delete_model(actor: str, model: Model) -> None:
    """Delete a model (its log rows keep the slug)."""
    db.session.delete(model)
    audit(actor, "delete", "model", model.slug)


def _deployment_target(model: Model, provider: Provider, upstream_model: str) -> ModelDeployment | None:
    return next((d for d in model.deployments if d.provider_id == provider.id
                 and d.upstream_model == upstream_model), None)


def deploy(actor: str, model: Model, provider: Provider, upstream_model: str, weight: int | None = None,
           priority: int | None = None, rpm: int | None = None, tpm: int | None = None) -> ModelDeployment:
    """Add a deployment to a model, or change the one with this provider and upstream model name."""
    upstream_model = (upstream_model or "").strip()
    if not upstream_model or len(upstream_model) > 256:
        raise ManageError("upstream model name must be 1-256 characters")
    for name, value in (("weight", weight), ("priority", priority), ("rpm", rpm), ("tpm", tpm)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value <= 1_000_000_000):
            raise ManageError(f"{name} must be a whole number of at least 0")
    dep = _deployment_target(model, provider, upstream_model)
    if dep is None:
        dep = ModelDeployment(provider_id=provider.id, upstream_model=upstream_model)
        model.deployments.append(dep)
    for name, value in (("weight", weight), ("priority", priority), ("rpm", rpm), ("tpm", tpm)):
        if value is not None:
            setattr(dep, name, value or None if name in ("rpm", "tpm") else value)  # rpm/tpm 0 = no limit
    if dep.weight is None:
        dep.weight = 1
    if dep.priority is None:
        dep.priority = 0
    if not any(d.weight > 0 for d in model.deployments):
        raise ManageError("at least one deployment needs a weight above 0")
    db.session.flush()
    audit(actor, "deploy", "model", model.slug, {"provider": provider.name, "upstream_model": upstream_model,
                                                 "weight": dep.weight, "priority": dep.priority,
                                                 "rpm": dep.rpm, "tpm": dep.tpm})
    return dep


def undeploy(actor: str, model: Model, provider: Provider, upstream_model: str) -> None:
    """Remove one deployment; a model keeps at least one, and its own mapping follows its first."""
    dep = _deployment_target(model, provider, upstream_model)
    if dep is None:
        raise ManageError(f"model {model.slug} has no deployment {provider.name} / {upstream_model}")
    if len(model.deployments) == 1:
        raise ManageError("a model needs at least one deployment; delete the model instead")
    model.deployments.remove(dep)
    first = model.deployments[0]
    model.provider_id, model.upstream_model = first.provider_id, first.upstream_model
    db.session.flush()
    audit(actor, "undeploy", "model", model.slug, {"provider": provider.name, "upstream_model": upstream_model})


def _cache_fields(obj: Model | Prompt, cache_ttl: int | None, cache_scope: str | None) -> dict:
    """Set a model's or a prompt's response cache TTL (0 = off) and scope; returns what changed."""
    changed = {}
    if cache_ttl is not None:
        if cache_ttl < 0 or cache_ttl > MAX_CACHE_TTL:
            raise ManageError(f"cache TTL must be 0 (off) to {MAX_CACHE_TTL} seconds")
        if (cache_ttl or None) != obj.cache_ttl:
            obj.cache_ttl = changed["cache_ttl"] = cache_ttl or None
    if cache_scope is not None:
        if cache_scope not in CACHE_SCOPES:
            raise ManageError(f"cache scope must be one of {', '.join(CACHE_SCOPES)}")
        if cache_scope != obj.cache_scope:
            obj.cache_scope = changed["cache_scope"] = cache_scope
    return changed


# -- prompts -----------------------------------------------------------------------------------------
def get_prompt(ref: str) -> Prompt:
    """A prompt by slug or id."""
    return _lookup(Prompt, Prompt.slug, ref, "prompt")


def create_prompt(actor: str, slug: str, text: str, mode: str = "prepend", description: str = "",
                  cache_ttl: int | None = None, cache_scope: str | None = None, mcp: bool = False,
                  **version_fields) -> Prompt:
    """A new prompt with its version 1; a cache TTL makes calls using it cached whatever their model.

    `mcp` publishes it over MCP, where prompts/get hands its text to any key that may use it (off by default).
    """
    slug = _slug(slug, "prompt slug")
    _unique(Prompt, Prompt.slug, slug, "prompt")
    if mode not in PROMPT_MODES:
        raise ManageError(f"mode must be one of {', '.join(PROMPT_MODES)}")
    prompt = Prompt(slug=slug, mode=mode, description=description or "", latest_version=0, cache_scope="user",
                    mcp=bool(mcp))
    cache = _cache_fields(prompt, cache_ttl, cache_scope)
    db.session.add(prompt)
    db.session.flush()
    add_version(actor, prompt, text, **version_fields)
    audit(actor, "create", "prompt", slug, {"mode": mode, **cache, **({"mcp": True} if mcp else {})})
    return prompt


def add_version(actor: str, prompt: Prompt, text: str, variables: dict | None = None, tools: list | None = None,
                params: dict | None = None, note: str = "") -> PromptVersion:
    """Save a new immutable version; it becomes live unless the live version is pinned."""
    if not text or not text.strip():
        raise ManageError("prompt text must not be empty")
    _check_version_fields(text, variables, tools, params)
    number = (prompt.latest_version or 0) + 1
    version = PromptVersion(prompt_id=prompt.id, version=number, text=text, variables=variables or None,
                            tools=tools or None, params=params or None, note=(note or "")[:256], created_by=actor)
    db.session.add(version)
    prompt.latest_version = number
    prompt.updated_at = utcnow()
    audit(actor, "version", "prompt", f"{prompt.slug}@{number}")
    return version


def _check_version_fields(text, variables, tools, params) -> None:
    if variables is not None:
        if not isinstance(variables, dict) or not all(isinstance(v, str | int | float | bool)
                                                      for v in variables.values()):
            raise ManageError("variables must map names to default text")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type") == "function"
                                                  and isinstance(t.get("function"), dict)
                                                  and t["function"].get("name") for t in tools):
            raise ManageError("tools must be a list of OpenAI function tools with names")
    if params is not None:
        if not isinstance(params, dict) or not all(isinstance(p, dict) and "value" in p for p in params.values()):
            raise ManageError('params must map names to {"value": ..., "locked": true|false}')
        if "model" in params or "messages" in params or "stream" in params:
            raise ManageError("params cannot set model, messages or stream")
    del text


def update_prompt(actor: str, prompt: Prompt, mode: str | None = None, description: str | None = None,
                  cache_ttl: int | None = None, cache_scope: str | None = None, mcp: bool | None = None) -> dict:
    """Change a prompt's mode, description, response cache or MCP publishing (text changes make versions)."""
    changed = _cache_fields(prompt, cache_ttl, cache_scope)
    if mcp is not None and bool(mcp) != prompt.mcp:
        prompt.mcp = changed["mcp"] = bool(mcp)
    if mode is not None and mode != prompt.mode:
        if mode not in PROMPT_MODES:
            raise ManageError(f"mode must be one of {', '.join(PROMPT_MODES)}")
        prompt.mode = changed["mode"] = mode
    if description is not None and description != prompt.description:
        prompt.description = changed["description"] = description
    if changed:  # a save that changes nothing leaves no audit event
        prompt.updated_at = utcnow()
        audit(actor, "update", "prompt", prompt.slug, changed)
    return changed


def get_version(prompt: Prompt, number: int) -> PromptVersion:
    """One version of a prompt."""
    found = db.session.scalar(sa.select(PromptVersion).where(PromptVersion.prompt_id == prompt.id,
                                                             PromptVersion.version == number))
    if found is None:
        raise ManageError(f"prompt `{prompt.slug}` has no version {number}")
    return found


def set_live(actor: str, prompt: Prompt, number: int | None) -> None:
    """Roll back or forward: pin the live version (None follows the newest)."""
    if number is not None:
        get_version(prompt, number)
    prompt.live_version = number
    prompt.updated_at = utcnow()
    audit(actor, "rollback", "prompt", prompt.slug, {"live_version": number})


def parse_split(items) -> dict[int, int]:
    """`3` or `3=90 4=10` (a list of words) as {version: percent}."""
    split = {}
    for item in items:
        version, _, percent = item.partition("=")
        if not version.isdigit() or not (percent.isdigit() or (not percent and len(items) == 1)):
            raise ManageError(f"`{item}`: give VERSION, or VERSION=PERCENT for each version of a rollout")
        split[int(version)] = int(percent or 100)
    if not split:
        raise ManageError("choose a version")
    return split


def set_label(actor: str, prompt: Prompt, label: str, number: int | None = None,
              split: dict[int, int] | None = None) -> None:
    """Point a label at a version, or roll it out over several ({version: percent}, summing to 100)."""
    if not valid_label(label):
        raise ManageError("label must be letters, digits, '.', '_' or '-', and not a number")
    if split is not None and len(split) == 1:
        number, split = next(iter(split)), None
    if split is not None:
        if any(not isinstance(p, int) or isinstance(p, bool) or not 0 < p <= 100 for p in split.values()) \
                or sum(split.values()) != 100:
            raise ManageError("a rollout's percentages must be whole numbers above 0 that add up to 100")
        number = max(split, key=lambda v: (split[v], v))  # the version most traffic gets
    if number is None:
        raise ManageError("a label needs a version")
    for version in split or (number,):
        get_version(prompt, version)
    found = db.session.scalar(sa.select(PromptLabel).where(PromptLabel.prompt_id == prompt.id,
                                                           PromptLabel.label == label))
    if found is None:
        found = PromptLabel(prompt_id=prompt.id, label=label, version=number)
        db.session.add(found)
    found.version = number
    found.split = sorted([v, p] for v, p in split.items()) if split else None
    prompt.updated_at = utcnow()
    audit(actor, "label", "prompt", prompt.slug, {"label": label, "version": number, "split": found.split})


def delete_prompt(actor: str, prompt: Prompt) -> None:
    """Delete a prompt and its versions (log rows keep slug and version)."""
    db.session.execute(sa.delete(PromptLabel).where(PromptLabel.prompt_id == prompt.id))
    db.session.execute(sa.delete(PromptVersion).where(PromptVersion.prompt_id == prompt.id))
    db.session.delete(prompt)
    audit(actor, "delete", "prompt", prompt.slug)


def declared_variables(text: str) -> list[str]:
    """Variables used in a prompt text."""
    return variables_in(text)
