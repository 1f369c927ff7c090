"""Declarative configuration: apply a YAML file of providers, models, prompts, groups and users; export it."""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
import yaml
from flask import current_app

from . import groups, manage
from .crypto import SecretError
from .extensions import db
from .manage import ManageError
from .models import Group, Model, Prompt, PromptLabel, PromptVersion, Provider, User
from .netguard import HOST_CHANGED

ACTOR = "apply"
# `api_key_env` and `headers_env` may name only variables with this prefix: a file (reviewed less carefully than
# the environment) cannot make the gateway read PROMPTPROXY_ENCRYPTION_KEY, cloud credentials or any other secret
# of the process and send it to a base URL of its choosing.
ENV_PREFIX = "UPSTREAM_"
ENV_NAME = re.compile(r"UPSTREAM_[A-Z0-9_]+")
NUM = (int, float)
PROVIDER_KEYS = ("name", "kind", "base_url", "api_key", "api_key_env", "headers", "headers_env",
                 *manage.PROVIDER_FIELDS)
MODEL_KEYS = ("slug", "provider", "upstream_model", "kind", "endpoints", *manage.PRICE_FIELDS, "fallbacks",
              "enabled", "strategy", "cache_ttl", "cache_scope", "deployments")
# One entry of a model's `deployments` (the whole list; the first is the model's own provider and upstream_model).
DEPLOYMENT_KEYS = ("provider", "upstream_model", "weight", "priority", "rpm", "tpm")
DEPLOYMENT_DEFAULTS = {"weight": 1, "priority": 0, "rpm": None, "tpm": None}
PROMPT_KEYS = ("slug", "description", "mode", "text", "variables", "tools", "params", "note", "labels",
               "live_version", "versions", "cache_ttl", "cache_scope", "mcp")
# One entry of a prompt's `versions` (its whole history, as `export` writes it).
VERSION_KEYS = ("version", "text", "variables", "tools", "params", "note", "created_by", "created_at")
LIMIT_KEYS = ("rpm", "tpm", "max_concurrent", "budget_usd", "budget_period")
USER_KEYS = ("name", "email", "role", "active", "all_models", "all_prompts", "allowed_models", "allowed_prompts",
             "all_mcp", "allowed_mcp", *LIMIT_KEYS, "groups")
GROUP_KEYS = ("name", "description", "all_models", "all_prompts", "allowed_models", "allowed_prompts", "all_mcp",
              "allowed_mcp", *LIMIT_KEYS)
MCP_KEYS = ("name", "url", "description", "api_key", "api_key_env", "headers", "headers_env", "timeout", "enabled")
SECTIONS = {"providers": ("name", PROVIDER_KEYS), "models": ("slug", MODEL_KEYS), "prompts": ("slug", PROMPT_KEYS),
            "mcp_servers": ("name", MCP_KEYS), "groups": ("name", GROUP_KEYS), "users": ("name", USER_KEYS)}
# Expected types; None (YAML null) is accepted for every field except the identifying one and `text`.
TYPES = {
    "name": str, "slug": str, "kind": str, "base_url": str, "api_key": str, "api_key_env": str, "headers": dict,
    "headers_env": str, "connect_timeout": NUM, "first_byte_timeout": NUM, "idle_timeout": NUM,
    "total_timeout": NUM, "stream_usage": bool, "anthropic_version": str, "default_max_tokens": int,
    "responses_api": bool, "reasoning_effort": bool,
    "enabled": bool, "provider": str, "upstream_model": str, "input_price": NUM, "output_price": NUM,
    "cached_input_price": NUM, "cache_write_price": NUM, "fallbacks": list, "endpoints": list, "description": str,
    "mode": str,
    "text": str, "variables": dict, "tools": list, "params": dict, "note": str, "labels": dict,
    "live_version": int, "versions": list, "version": int, "created_by": str, "created_at": (str, datetime),
    "email": str, "role": str, "active": bool, "all_models": bool, "all_prompts": bool,
    "allowed_models": list, "allowed_prompts": list, "rpm": int, "tpm": int, "max_concurrent": int,
    "budget_usd": NUM, "budget_period": str, "url": str, "timeout": NUM, "all_mcp": bool, "allowed_mcp": list,
    "groups": list, "strategy": str, "cache_ttl": int, "cache_scope": str, "deployments": list, "weight": int,
    "priority": int, "mcp": bool,
}


class ConfigFileError(ValueError):
    """A file that cannot be applied, with where and why."""


@dataclass
class Change:
    """One difference between the file and the database."""

    action: str  # "create" or "update"
    kind: str
    name: str
    fields: list[str]
    detail: str = ""

    def __str__(self) -> str:
        sign = "+" if self.action == "create" else "~"
        head = f"{sign} {self.kind} {self.name}" + (f": {'; '.join(self.fields)}" if self.fields else "")
        return head + ("\n" + self.detail if self.detail else "")


@dataclass
class Result:
    """What applying a file changed (or would change), and what it could not do."""

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, action: str, kind: str, name: str, fields: list[str], detail: str = "") -> None:
        """Note a change."""
        self.changes.append(Change(action, kind, name, fields, detail))


# -- loading -----------------------------------------------------------------------------------------
def load(text: str) -> dict:
    """Parse and check the file's shape (yaml.safe_load only: no tags, no objects)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError("the file must be a mapping with providers, models, prompts, groups and users")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigFileError(f"unknown section(s): {', '.join(map(str, unknown))}")
    for section, (ident, keys) in SECTIONS.items():
        entries = [] if data.get(section) is None else data[section]
        if not isinstance(entries, list):
            raise ConfigFileError(f"`{section}` must be a list")
        seen = set()
        for i, entry in enumerate(entries):
            where = f"{section}[{i}]"
            _check_entry(entry, where, ident, keys)
            if section == "prompts":
                _check_versions(entry.get("versions") or [], f"{where} ({entry[ident]})")
            if section == "models" and entry.get("deployments") is not None:
                _check_deployments(entry["deployments"], f"{where} ({entry[ident]})")
            if entry[ident] in seen:
                raise ConfigFileError(f"{where}: `{entry[ident]}` appears twice")
            seen.add(entry[ident])
    return data


def _check_entry(entry, where: str, ident: str, keys: tuple) -> None:
    if not isinstance(entry, dict):
        raise ConfigFileError(f"{where} must be a mapping")
    if not isinstance(entry.get(ident), str) or not entry[ident]:
        raise ConfigFileError(f"{where} needs `{ident}`")
    unknown = sorted(set(entry) - set(keys), key=str)
    if unknown:
        raise ConfigFileError(f"{where} ({entry[ident]}): unknown field(s): {', '.join(map(str, unknown))}")
    for key, value in entry.items():
        expected = TYPES[key]
        if value is None and key != "text":
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigFileError(f"{where} ({entry[ident]}): `{key}` has the wrong type")


def _check_versions(versions: list, where: str) -> None:
    """A prompt's history: mappings with text, numbered 1, 2, 3... in order."""
    for i, version in enumerate(versions, start=1):
        if not isinstance(version, dict) or version.get("version") != i:
            raise ConfigFileError(f"{where}: versions must be numbered 1, 2, 3... in order (entry {i})")
        _check_entry(version, f"{where} versions[{i - 1}]", "text", VERSION_KEYS)


def _check_deployments(deployments: list, where: str) -> None:
    """A model's deployments: at least one, each a provider and upstream_model, no target twice."""
    if not deployments:
        raise ConfigFileError(f"{where}: `deployments` needs at least one entry (or leave it out)")
    seen = set()
    for i, dep in enumerate(deployments):
        at = f"{where} deployments[{i}]"
        _check_entry(dep, at, "provider", DEPLOYMENT_KEYS)
        if not isinstance(dep.get("upstream_model"), str) or not dep["upstream_model"].strip():
            raise ConfigFileError(f"{at} needs `upstream_model`")
        target = (dep["provider"], dep["upstream_model"].strip())
        if target in seen:
            raise ConfigFileError(f"{at}: {target[0]} / {target[1]} appears twice")
        seen.add(target)
    if all(dep.get("weight") == 0 for dep in deployments):  # absent = 1
        raise ConfigFileError(f"{where}: at least one deployment needs a weight above 0")


# -- applying ----------------------------------------------------------------------------------------
def apply(data: Mapping, environ: Mapping | None = None) -> Result:
    """Make the database match the file through manage.* (each change audited); the caller commits."""
    environ = os.environ if environ is None else environ
    result = Result()
    steps = (("providers", lambda e: _provider(e, result, environ)), ("models", lambda e: _model(e, result)),
             ("models", lambda e: _fallbacks(e, result)), ("prompts", lambda e: _prompt(e, result)),
             ("mcp_servers", lambda e: _mcp_server(e, result, environ)), ("groups", lambda e: _group(e, result)),
             ("users", lambda e: _user(e, result)))
    for section, step in steps:
        ident = SECTIONS[section][0]
        for i, entry in enumerate(data.get(section) or []):
            try:
                step(entry)
            except (ManageError, ConfigFileError) as exc:
                raise ConfigFileError(f"{section}[{i}] ({entry[ident]}): {exc}") from None
    return result


def _changed(obj, entry: Mapping, fields) -> dict:
    """Fields present in the entry (and not null) whose value differs from the object's."""
    return {f: entry[f] for f in fields if entry.get(f) is not None and entry[f] != getattr(obj, f)}


def _describe(obj, changes: Mapping) -> list[str]:
    return [f"{name} {getattr(obj, name)!r} -> {value!r}" for name, value in changes.items()]


def _env(entry: Mapping, key: str, environ: Mapping, result: Result) -> str | None:
    """A secret given literally or by environment variable; None when not given (leave as is)."""
    if entry.get(key) is not None:
        return entry[key]
    var = entry.get(f"{key}_env")
    if var is None:
        return None
    if not ENV_NAME.fullmatch(var):
        raise ConfigFileError(f"provider {entry['name']}: {key}_env `{var}` must start with {ENV_PREFIX} and use "
                              f"A-Z, 0-9 and _ (only such variables are read)")
    if not environ.get(var):
        result.warnings.append(f"provider {entry['name']}: environment variable {var} is not set; "
                               f"its {key.replace('_', ' ')} was left unchanged")
        return None
    return environ[var]


def _provider_secrets(entry: Mapping, environ: Mapping, result: Result) -> tuple[str | None, dict | None]:
    api_key = _env(entry, "api_key", environ, result)
    headers = entry.get("headers")
    raw = _env(entry, "headers", environ, result) if headers is None and entry.get("headers_env") else None
    if raw is not None:
        try:
            headers = orjson.loads(raw)
        except orjson.JSONDecodeError:
            headers = None
        if not isinstance(headers, dict):
            raise ConfigFileError(f"{entry['headers_env']} must hold a JSON object of header names and values")
    if headers is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigFileError("headers must map names to text values")
    return api_key, headers


def _current_secrets(provider: Provider) -> tuple[str | None, dict | None]:
    box = current_app.extensions["promptproxy"].box
    try:
        key = box.decrypt(provider.api_key_encrypted) if provider.api_key_encrypted else None
        headers = box.decrypt(provider.extra_headers_encrypted) if provider.extra_headers_encrypted else None
    except SecretError:
        return "\0unreadable", {"\0": "unreadable"}  # differs from anything, so the file's value is written
    return key, orjson.loads(headers) if headers else {}


def _provider(entry: Mapping, result: Result, environ: Mapping) -> None:
    name = entry["name"]
    api_key, headers = _provider_secrets(entry, environ, result)
    options = {f: entry[f] for f in manage.PROVIDER_FIELDS if entry.get(f) is not None}
    found = db.session.scalar(sa.select(Provider).where(Provider.name == name))
    if found is None:
        if not entry.get("base_url"):
            raise ConfigFileError("a new provider needs `base_url`")
        kind = entry.get("kind") or "openai"
        manage.create_provider(ACTOR, name, kind, entry["base_url"], api_key=api_key, headers=headers, **options)
        result.add("create", "provider", name, [f"kind {kind}", f"base_url {entry['base_url']}"]
                   + (["api_key set"] if api_key else []) + (["headers set"] if headers else []))
        return
    if entry.get("kind") is not None and entry["kind"] != found.kind:
        raise ConfigFileError(f"kind cannot change ({found.kind} -> {entry['kind']}); create a new provider")
    changes = _changed(found, options, manage.PROVIDER_FIELDS)
    notes = _describe(found, changes)
    kwargs = dict(changes)
    url = (entry.get("base_url") or "").strip().rstrip("/")
    if url and url != found.base_url:
        kwargs["base_url"] = url
        notes.append(f"base_url {found.base_url} -> {url}")
    key_now, headers_now = _current_secrets(found)
    if api_key is not None and (api_key != key_now or "base_url" in kwargs):
        kwargs["api_key"] = api_key  # also re-entered on a host change, which would otherwise clear it
        notes.append("api_key changed" if api_key != key_now else "api_key kept for the new host")
    if headers is not None and (headers != (headers_now or {}) or "base_url" in kwargs):
        kwargs["headers"] = headers  # also re-entered on a host change, which would otherwise drop them
        notes.append("headers changed" if headers != (headers_now or {}) else "headers kept for the new host")
    if kwargs:
        changed = manage.update_provider(ACTOR, found, **kwargs)
        notes += [f"{secret} dropped (new host)" for secret, note in changed.items() if note == HOST_CHANGED]
        result.add("update", "provider", name, notes)


def _model(entry: Mapping, result: Result) -> None:
    slug = entry["slug"]
    deployments = _wanted_deployments(entry)
    fields = {f: entry[f] for f in ("upstream_model", "kind", "enabled", "strategy", "cache_scope",
                                    *manage.PRICE_FIELDS) if entry.get(f) is not None}
    provider = manage.get_provider(entry["provider"]) if entry.get("provider") else None
    if deployments:  # the model's own mapping is its first deployment
        first = deployments[0]
        if (provider or first["provider"]).id != first["provider"].id or \
                fields.get("upstream_model", first["upstream_model"]).strip() != first["upstream_model"]:
            raise ConfigFileError("`provider` and `upstream_model` must be those of the first deployment "
                                  "(or be left out)")
        provider, fields["upstream_model"] = first["provider"], first["upstream_model"]
    found = db.session.scalar(sa.select(Model).where(Model.slug == slug))
    if found is None:
        if provider is None or not fields.get("upstream_model"):
            raise ConfigFileError("a new model needs `provider` and `upstream_model`, or `deployments`")
        ttl = {"cache_ttl": entry["cache_ttl"]} if entry.get("cache_ttl") is not None else {}
        model = manage.create_model(ACTOR, slug, provider, fields.pop("upstream_model"), fields.pop("kind", "chat"),
                                    endpoints=entry.get("endpoints"), **fields, **ttl)
        notes = [f"provider {provider.name}", f"upstream_model {model.upstream_model}"]
        notes += [f"{k} {entry[k]}" for k in ("strategy", "cache_ttl", "cache_scope") if entry.get(k) is not None]
        if deployments:
            _sync_deployments(model, deployments)
            notes.append(f"deployments {', '.join(_target(d) for d in model.deployments)}")
        result.add("create", "model", slug, notes)
        return
    changes = _changed(found, fields, fields)
    if entry.get("cache_ttl") is not None and (entry["cache_ttl"] or None) != found.cache_ttl:
        changes["cache_ttl"] = entry["cache_ttl"]  # 0 turns the cache off (stored as None)
    notes = _describe(found, changes)
    wanted = entry.get("endpoints")
    if wanted is not None and sorted(wanted) != sorted(found.declared_endpoints):
        changes["endpoints"] = wanted
        notes.append(f"endpoints {list(found.declared_endpoints)} -> {wanted}")
    if provider is not None and provider.id != found.provider_id:
        notes.append(f"provider {found.provider.name} -> {provider.name}")
    else:
        provider = None
    if notes:
        if provider is not None or "upstream_model" in changes:
            _free_target(found, provider or found.provider, changes.get("upstream_model", found.upstream_model))
        manage.update_model(ACTOR, found, provider=provider, **changes)
    if deployments:
        notes += _sync_deployments(found, deployments)
    if notes:
        result.add("update", "model", slug, notes)


def _wanted_deployments(entry: Mapping) -> list[dict]:
    """The file's deployments with their providers looked up and absent settings at their defaults."""
    return [{**DEPLOYMENT_DEFAULTS, **{k: v for k, v in dep.items() if v is not None},
             "provider": manage.get_provider(dep["provider"]), "upstream_model": dep["upstream_model"].strip()}
            for dep in entry.get("deployments") or []]


def _target(dep) -> str:
    """A deployment as people name it: provider / upstream model."""
    provider = dep["provider"].name if isinstance(dep, Mapping) else dep.provider.name
    upstream = dep["upstream_model"] if isinstance(dep, Mapping) else dep.upstream_model
    return f"{provider} / {upstream}"


def _free_target(model: Model, provider: Provider, upstream_model: str) -> None:
    """Before the model's own mapping moves onto a target another of its deployments has, fold that one in.

    The mapping moves the first deployment (manage.update_model); the other row would then be a duplicate, so it
    is removed and its weight, priority and limits carried over to the first.
    """
    first, rest = model.deployments[0], model.deployments[1:]
    other = next((d for d in rest if d.provider_id == provider.id and d.upstream_model == upstream_model), None)
    if other is None:
        return
    settings = {k: getattr(other, k) for k in DEPLOYMENT_DEFAULTS}
    manage.undeploy(ACTOR, model, provider, upstream_model)
    for key, value in settings.items():
        setattr(first, key, value)


def _sync_deployments(model: Model, wanted: list[dict]) -> list[str]:
    """Make the model's deployments the file's list (its first already in place): add, change, then remove."""
    notes = []
    current = {(d.provider_id, d.upstream_model): d for d in model.deployments}
    # Draining ones last, so a change never passes through a moment where every deployment has weight 0.
    for dep in sorted(wanted, key=lambda d: d["weight"] == 0):
        found = current.get((dep["provider"].id, dep["upstream_model"]))
        settings = {k: dep[k] for k in DEPLOYMENT_DEFAULTS}
        differ = {k: v for k, v in settings.items() if found is None or v != getattr(found, k)}
        if not differ:
            continue
        if found is None:
            notes.append(f"deployment {_target(dep)} added (" + ", ".join(
                f"{k} {v}" for k, v in settings.items() if v is not None) + ")")
        else:
            notes.append(f"deployment {_target(dep)} " + ", ".join(
                f"{k} {getattr(found, k)} -> {v}" for k, v in differ.items()))
        manage.deploy(ACTOR, model, dep["provider"], dep["upstream_model"],
                      **{k: (v or 0) if k in ("rpm", "tpm") else v for k, v in settings.items()})
    keep = {(d["provider"].id, d["upstream_model"]) for d in wanted}
    for dep in list(model.deployments):
        if (dep.provider_id, dep.upstream_model) not in keep:
            notes.append(f"deployment {_target(dep)} removed")
            manage.undeploy(ACTOR, model, dep.provider, dep.upstream_model)
    return notes


def _fallbacks(entry: Mapping, result: Result) -> None:
    """Second pass, once every model in the file exists."""
    if entry.get("fallbacks") is None:
        return
    model = manage.get_model(entry["slug"])
    wanted = list(entry["fallbacks"])
    if wanted != list(model.fallbacks or []):
        note = f"fallbacks {list(model.fallbacks or [])} -> {wanted}"
        manage.update_model(ACTOR, model, fallbacks=wanted)
        result.add("update", "model", model.slug, [note])


def _version_fields(entry: Mapping) -> dict:
    """The parts of a version; absent or empty means none (a version is a whole snapshot)."""
    return {"variables": entry.get("variables") or None, "tools": entry.get("tools") or None,
            "params": entry.get("params") or None}


def _prompt(entry: Mapping, result: Result) -> None:
    slug = entry["slug"]
    history = entry.get("versions") or []
    if not history and not isinstance(entry.get("text"), str):
        raise ConfigFileError("a prompt needs `text` or `versions`")
    found = db.session.scalar(sa.select(Prompt).where(Prompt.slug == slug))
    if found is None:
        first = history[0] if history else entry
        found = manage.create_prompt(ACTOR, slug, first["text"], mode=entry.get("mode") or "prepend",
                                     description=entry.get("description") or "", note=first.get("note") or "",
                                     cache_ttl=entry.get("cache_ttl"), cache_scope=entry.get("cache_scope"),
                                     mcp=bool(entry.get("mcp")), **_version_fields(first))
        if history:
            _stamp(manage.get_version(found, 1), first)
        result.add("create", "prompt", slug, [f"mode {found.mode}", "version 1"]
                   + (["offered over MCP"] if found.mcp else []))
    else:
        meta = _changed(found, entry, ("mode", "description", "cache_scope", "mcp"))
        if entry.get("cache_ttl") is not None and (entry["cache_ttl"] or None) != found.cache_ttl:
            meta["cache_ttl"] = entry["cache_ttl"]
        if meta:
            notes = _describe(found, meta)
            manage.update_prompt(ACTOR, found, **meta)
            result.add("update", "prompt", slug, notes)
    for version in history:
        _history_version(found, version, result)
    if isinstance(entry.get("text"), str):
        wanted = {"text": entry["text"], **_version_fields(entry)}
        _new_version(found, wanted, entry.get("note") or "", result)
    _labels(found, entry, result)


def _snapshot(version) -> dict:
    """What makes two versions the same: text, variables, tools and params (empty means none)."""
    get = version.get if isinstance(version, Mapping) else lambda key: getattr(version, key)
    return {"text": get("text"), "variables": get("variables") or None, "tools": get("tools") or None,
            "params": get("params") or None}


def _history_version(prompt: Prompt, entry: Mapping, result: Result) -> None:
    """Add one version of the file's history that the database lacks; a stored one must be the same."""
    number = entry["version"]
    if number <= prompt.latest_version:
        if _snapshot(manage.get_version(prompt, number)) != _snapshot(entry):
            raise ConfigFileError(f"version {number} differs from the stored version {number}; versions never "
                                  "change (put the change in `text` to save it as a new version, or drop "
                                  "`versions` to apply only `text`)")
        return
    version = manage.add_version(ACTOR, prompt, entry["text"], note=entry.get("note") or "", **_version_fields(entry))
    _stamp(version, entry)
    result.add("update", "prompt", prompt.slug, [f"version {number} added from the history"])


def _stamp(version: PromptVersion, entry: Mapping) -> None:
    """Keep who saved a version and when, as the exporting server recorded them."""
    if entry.get("created_by"):
        version.created_by = entry["created_by"][:64]
    when = entry.get("created_at")
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise ConfigFileError(f"version {entry['version']}: created_at {when!r} is not an ISO 8601 time") from None
    if when is not None:
        version.created_at = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _new_version(prompt: Prompt, wanted: dict, note: str, result: Result) -> None:
    latest = manage.get_version(prompt, prompt.latest_version)
    current = {"text": latest.text, "variables": latest.variables or None, "tools": latest.tools or None,
               "params": latest.params or None}
    differ = [k for k in current if current[k] != wanted[k]]
    if not differ:
        return
    number = prompt.latest_version + 1
    detail = ""
    if "text" in differ:
        lines = difflib.unified_diff(latest.text.splitlines(), wanted["text"].splitlines(),
                                     f"{prompt.slug}@{latest.version}", f"{prompt.slug}@{number}", lineterm="")
        detail = "\n".join("    " + line for line in lines)
    manage.add_version(ACTOR, prompt, wanted["text"], variables=wanted["variables"], tools=wanted["tools"],
                       params=wanted["params"], note=note)
    result.add("update", "prompt", prompt.slug, [f"new version {number} ({', '.join(differ)} changed)"], detail)


def _label_target(lab: PromptLabel) -> int | dict:
    """A label as the file writes it: a version number, or {version: percent} for a rollout."""
    return {int(v): int(p) for v, p in lab.split} if lab.split else lab.version


def _split(label, target) -> dict[int, int]:
    """A label's target from the file as {version: percent}."""
    if isinstance(target, int) and not isinstance(target, bool):
        return {target: 100}
    if isinstance(target, Mapping) and all(str(v).isdigit() and isinstance(p, int) for v, p in target.items()):
        return {int(v): p for v, p in target.items()}
    raise ConfigFileError(f"label `{label}` must point at a version number or map versions to percentages")


def _labels(prompt: Prompt, entry: Mapping, result: Result) -> None:
    current = {lab.label: _label_target(lab) for lab in
               db.session.scalars(sa.select(PromptLabel).where(PromptLabel.prompt_id == prompt.id))}
    for label, target in (entry.get("labels") or {}).items():
        split = _split(label, target)
        wanted = target if isinstance(target, int) else split
        if current.get(str(label)) != wanted:
            manage.set_label(ACTOR, prompt, str(label), split=split)
            result.add("update", "prompt", prompt.slug, [f"label {label} {current.get(str(label))} -> {wanted}"])
    if "live_version" in entry and entry["live_version"] != prompt.live_version:
        before = prompt.live_version
        manage.set_live(ACTOR, prompt, entry["live_version"])
        result.add("update", "prompt", prompt.slug, [f"live_version {before or 'newest'} -> "
                                                     f"{entry['live_version'] or 'newest'}"])


def _mcp_server(entry: Mapping, result: Result, environ: Mapping) -> None:
    """An MCP server, created or updated like a provider (secrets literally or from UPSTREAM_* variables)."""
    from .mcp import servers
    from .models import McpServer

    name = entry["name"]
    api_key, headers = _provider_secrets(entry, environ, result)
    options = {f: entry[f] for f in ("description", "timeout", "enabled") if entry.get(f) is not None}
    found = db.session.scalar(sa.select(McpServer).where(McpServer.name == name))
    if found is None:
        if not entry.get("url"):
            raise ConfigFileError("a new MCP server needs `url`")
        servers.create_server(ACTOR, name, entry["url"], api_key=api_key, headers=headers, **options)
        result.add("create", "mcp_server", name, [f"url {entry['url']}"] + (["api_key set"] if api_key else [])
                   + (["headers set"] if headers else []))
        return
    kwargs = _changed(found, options, options)
    notes = _describe(found, kwargs)
    url = (entry.get("url") or "").strip().rstrip("/")
    if url and url != found.url:
        kwargs["url"] = url
        notes.append(f"url {found.url} -> {url}")
    box = current_app.extensions["promptproxy"].box
    try:
        key_now = box.decrypt(found.api_key_encrypted) if found.api_key_encrypted else None
        headers_now = orjson.loads(box.decrypt(found.headers_encrypted)) if found.headers_encrypted else {}
    except SecretError:
        key_now, headers_now = "\0unreadable", {"\0": "unreadable"}
    if api_key is not None and (api_key != key_now or "url" in kwargs):
        kwargs["api_key"] = api_key
        notes.append("api_key changed")
    if headers is not None and (headers != headers_now or "url" in kwargs):
        kwargs["headers"] = headers
        notes.append("headers changed")
    if kwargs:
        servers.update_server(ACTOR, found, **kwargs)
        result.add("update", "mcp_server", name, notes)


# manage.apply_limits argument -> User attribute
LIMIT_ATTRS = {"budget": "budget_usd", "period": "budget_period", "allow_models": "allowed_models",
               "allow_prompts": "allowed_prompts", "allow_mcp": "allowed_mcp"}


def _user_limits(entry: Mapping, user: User | Group | None) -> dict:
    """manage.apply_limits keyword arguments for the fields that differ (all given ones for a new user or group)."""
    out = {}
    for key in ("rpm", "tpm", "max_concurrent", "budget_usd"):
        if key in entry and (user is None or (entry[key] or None) != getattr(user, key)):
            out["budget" if key == "budget_usd" else key] = entry[key] or 0  # 0 and null = no limit
    if entry.get("budget_period") is not None and (user is None or entry["budget_period"] != user.budget_period):
        out["period"] = entry["budget_period"]
    for key in ("all_models", "all_prompts", "all_mcp"):
        if entry.get(key) is not None and (user is None or entry[key] != getattr(user, key)):
            out[key] = entry[key]
    for key, kind in (("allowed_models", "models"), ("allowed_prompts", "prompts"), ("allowed_mcp", "mcp")):
        if key in entry and (user is None or list(entry[key] or []) != list(getattr(user, key) or [])):
            out[f"clear_{kind}"] = True
            out[f"allow_{kind}"] = list(entry[key] or [])
    return out


def _group(entry: Mapping, result: Result) -> None:
    name = entry["name"]
    found = db.session.scalar(sa.select(Group).where(Group.name == name))
    limits = _user_limits(entry, found)
    if found is None:
        limits.pop("clear_models", None)
        limits.pop("clear_prompts", None)
        limits.pop("clear_mcp", None)
        groups.create_group(ACTOR, name, description=entry.get("description") or "", **limits)
        result.add("create", "group", name, [f"{k} {v}" for k, v in limits.items()])
        return
    fields = _changed(found, entry, ("description",))
    shown = {LIMIT_ATTRS.get(k, k): (v or None) if k in ("rpm", "tpm", "max_concurrent", "budget") else v
             for k, v in limits.items() if not k.startswith("clear_")}
    notes = _describe(found, fields) + _describe(found, shown)
    if notes:
        groups.update_group(ACTOR, found, **fields, **limits)
        result.add("update", "group", name, notes)


def _memberships(user: User, entry: Mapping, result: Result) -> None:
    """A user's `groups` list replaces their memberships (absent = leave as they are)."""
    if entry.get("groups") is None:
        return
    if not all(isinstance(g, str) for g in entry["groups"]):
        raise ConfigFileError("`groups` must be a list of group names")
    before = [g.name for g in user.groups]
    after = groups.set_memberships(ACTOR, user, replace=entry["groups"])
    if after != before:
        result.add("update", "user", user.name, [f"groups {before} -> {after}"])


def _user(entry: Mapping, result: Result) -> None:
    name = entry["name"]
    found = db.session.scalar(sa.select(User).where(User.name == name))
    limits = _user_limits(entry, found)
    if found is None:
        limits.pop("clear_models", None)
        limits.pop("clear_prompts", None)
        limits.pop("clear_mcp", None)
        user = manage.create_user(ACTOR, name, email=entry.get("email"), role=entry.get("role") or "member",
                                  **limits)
        if entry.get("active") is False:
            manage.update_user(ACTOR, user, active=False)
        result.add("create", "user", name, [f"role {user.role}"] + [f"{k} {v}" for k, v in limits.items()])
        _memberships(user, entry, result)
        return
    fields = _changed(found, entry, ("role", "active"))
    if "email" in entry and ((entry["email"] or "").strip().lower() or None) != found.email:
        fields["email"] = entry["email"] or ""
    shown = {LIMIT_ATTRS.get(k, k): (v or None) if k in ("rpm", "tpm", "max_concurrent", "budget") else v
             for k, v in limits.items() if not k.startswith("clear_")}
    notes = _describe(found, fields) + _describe(found, shown)
    if notes:
        manage.update_user(ACTOR, found, **fields, **limits)
        result.add("update", "user", name, notes)
    _memberships(found, entry, result)


# -- exporting ---------------------------------------------------------------------------------------
def env_name(provider_name: str, what: str = "API_KEY") -> str:
    """The environment variable an export names for a provider's secret, e.g. UPSTREAM_OPENAI_API_KEY."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]+", "_", provider_name.upper()).strip("_") + "_" + what


def export_data() -> tuple[dict, list[str]]:
    """The database in the file format (secrets replaced by environment-variable names), and notes."""
    notes = []
    providers = []
    for p in db.session.scalars(sa.select(Provider).order_by(Provider.name)):
        entry = {"name": p.name, "kind": p.kind, "base_url": p.base_url}
        if p.api_key_encrypted:
            entry["api_key_env"] = env_name(p.name)
            notes.append(f"provider {p.name}: an API key is set; export it as {entry['api_key_env']} before applying")
        if p.extra_headers_encrypted:
            entry["headers_env"] = env_name(p.name, "HEADERS")
            notes.append(f"provider {p.name}: extra headers are set; put them as a JSON object in "
                         f"{entry['headers_env']}")
        entry.update({f: getattr(p, f) for f in manage.PROVIDER_FIELDS if getattr(p, f) is not None})
        providers.append(entry)
    models = [_export_model(m) for m in db.session.scalars(sa.select(Model).order_by(Model.slug))]
    prompts = [_export_prompt(p) for p in db.session.scalars(sa.select(Prompt).order_by(Prompt.slug))
               if p.latest_version]
    group_list = [_export_group(g) for g in db.session.scalars(sa.select(Group).order_by(Group.name))]
    users = [_export_user(u) for u in db.session.scalars(sa.select(User).order_by(User.name))]
    mcp_servers = _export_mcp_servers(notes)
    return {"providers": providers, "models": models, "prompts": prompts, "mcp_servers": mcp_servers,
            "groups": group_list, "users": users}, notes


def _export_model(m: Model) -> dict:
    """A model; `deployments` only when it has more than one, or one with its own weight, priority or limits."""
    entry = {"slug": m.slug, "provider": m.provider.name, "upstream_model": m.upstream_model, "kind": m.kind,
             **{f: getattr(m, f) for f in manage.PRICE_FIELDS if getattr(m, f) is not None},
             **({"endpoints": list(m.endpoints)} if m.endpoints else {}),
             **({"fallbacks": list(m.fallbacks)} if m.fallbacks else {}), "enabled": m.enabled,
             "strategy": m.strategy}
    if m.cache_ttl:
        entry["cache_ttl"] = m.cache_ttl
    if m.cache_ttl or m.cache_scope != "user":
        entry["cache_scope"] = m.cache_scope
    deployments = [{"provider": d.provider.name, "upstream_model": d.upstream_model, "weight": d.weight,
                    "priority": d.priority, **{k: getattr(d, k) for k in ("rpm", "tpm") if getattr(d, k)}}
                   for d in m.deployments]
    if len(deployments) > 1 or any(
            getattr(d, k) != v for d in m.deployments for k, v in DEPLOYMENT_DEFAULTS.items()):
        entry["deployments"] = deployments
    return entry


def _export_mcp_servers(notes: list) -> list:
    """MCP servers, their secrets named as UPSTREAM_<NAME>_MCP_API_KEY / _MCP_HEADERS variables."""
    from .models import McpServer

    out = []
    for s in db.session.scalars(sa.select(McpServer).order_by(McpServer.name)):
        entry = {"name": s.name, "url": s.url, "description": s.description, "timeout": s.timeout,
                 "enabled": s.enabled}
        for key, encrypted, what in (("api_key_env", s.api_key_encrypted, "MCP_API_KEY"),
                                     ("headers_env", s.headers_encrypted, "MCP_HEADERS")):
            if encrypted:
                entry[key] = env_name(s.name, what)
                notes.append(f"MCP server {s.name}: export {entry[key]} before applying")
        out.append(entry)
    return out


def _export_prompt(p: Prompt) -> dict:
    latest = manage.get_version(p, p.latest_version)
    entry = {"slug": p.slug, "description": p.description, "mode": p.mode, "text": latest.text}
    for key in ("variables", "tools", "params"):
        if getattr(latest, key):
            entry[key] = getattr(latest, key)
    history = db.session.scalars(sa.select(PromptVersion).where(PromptVersion.prompt_id == p.id)
                                 .order_by(PromptVersion.version))
    entry["versions"] = [_export_version(v) for v in history]
    labels = {lab.label: _label_target(lab) for lab in db.session.scalars(
        sa.select(PromptLabel).where(PromptLabel.prompt_id == p.id).order_by(PromptLabel.label))}
    if labels:
        entry["labels"] = labels
    if p.live_version is not None:
        entry["live_version"] = p.live_version
    if p.cache_ttl:
        entry.update(cache_ttl=p.cache_ttl, cache_scope=p.cache_scope)
    entry["mcp"] = p.mcp  # always written: applying the file elsewhere also unpublishes
    return entry


def _export_version(v: PromptVersion) -> dict:
    """One version of the history, with who saved it and when (UTC)."""
    entry = {"version": v.version, "text": v.text}
    entry.update({key: getattr(v, key) for key in ("variables", "tools", "params", "note", "created_by")
                  if getattr(v, key)})
    entry["created_at"] = v.created_at.replace(tzinfo=UTC)
    return entry


def _export_user(u: User) -> dict:
    entry = {"name": u.name, "email": u.email, "role": u.role, "active": u.active, "all_models": u.all_models,
             "all_prompts": u.all_prompts, "allowed_models": list(u.allowed_models or []),
             "allowed_prompts": list(u.allowed_prompts or []), "all_mcp": u.all_mcp,
             "allowed_mcp": list(u.allowed_mcp or [])}
    entry.update({k: getattr(u, k) for k in LIMIT_KEYS})
    entry["groups"] = [g.name for g in u.groups]
    return entry


def _export_group(g: Group) -> dict:
    entry = {"name": g.name, "description": g.description, "all_models": g.all_models,
             "all_prompts": g.all_prompts, "allowed_models": list(g.allowed_models or []),
             "allowed_prompts": list(g.allowed_prompts or []), "all_mcp": g.all_mcp,
             "allowed_mcp": list(g.allowed_mcp or [])}
    entry.update({k: getattr(g, k) for k in LIMIT_KEYS})
    return entry


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line text as literal blocks, so prompts stay readable and diffable."""


def _str(dumper, value: str):
    style = "|" if "\n" in value else None  # the emitter falls back to quotes when a block cannot hold it
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def export_text() -> str:
    """The whole configuration as YAML, with a header saying which secrets to provide."""
    data, notes = export_data()
    header = ["# PromptProxy configuration, written by `promptproxy export`; apply with `promptproxy apply FILE`.",
              "# Secrets are never exported in clear: providers name environment variables instead.",
              "# API keys of users and dashboard passwords are not part of this format."]
    header += [f"# - {note}" for note in notes]
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return "\n".join(header) + "\n" + body
