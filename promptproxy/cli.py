"""The `promptproxy` command: serve, and manage everything without the dashboard."""
from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta

import click
import orjson
import sqlalchemy as sa
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from . import create_app, groups, manage
from .cli_common import ACTOR, committed, emit, json_option, printable, row, say, table, to_json, utc
from .cli_webhook import webhook
from .config import ConfigError
from .extensions import db
from .models import ApiKey, Model, Prompt, PromptVersion, Provider, RequestLog, User, tagged, utcnow
from .netguard import HOST_CHANGED


def _create_app(*args, **kwargs):
    return create_app()


class Cli(FlaskGroup):
    """Flask's command group without its entry-point scan, which would import Flask-Migrate and Alembic (~11 MB)
    into every command, `serve` included. Flask-Migrate's `db` group is imported only when it is asked for."""

    # Flask's own options (-e/--env-file, -A/--app, --debug): this program has one app and reads its own settings.
    FLASK_OPTIONS = ("env_file", "app", "debug")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params = [p for p in self.params if p.name not in self.FLASK_OPTIONS]

    def _load_plugin_commands(self) -> None:
        """No scan: `db` is the only plugin command we use (see get_command)."""

    def get_command(self, ctx, cmd_name):
        """Our commands, and Flask-Migrate's `db` group on demand."""
        if cmd_name == "db":
            from flask_migrate.cli import db as db_group

            return db_group
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        """Our commands plus `db`."""
        return sorted({*super().list_commands(ctx), "db"})


@click.group(cls=Cli, create_app=_create_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False, set_debug_flag=False)
@click.version_option(package_name="promptproxy", prog_name="promptproxy", message="%(prog)s %(version)s")
def cli():
    """PromptProxy: an LLM gateway with stored system prompts."""


cli.add_command(webhook)


# -- serve and set-up ---------------------------------------------------------------------------------
@cli.command("serve")
@click.option("--host", default=None, help="Interface (default PROMPTPROXY_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default PROMPTPROXY_PORT or 8090).")
@click.option("--threads", type=click.IntRange(1, 4096), default=None,
              help="Threads per worker process; each live stream holds one (default PROMPTPROXY_THREADS or 512).")
@click.option("--workers", default=None, metavar="N|auto",
              help="Worker processes on one socket (default PROMPTPROXY_WORKERS or auto = one per CPU).")
@with_appcontext
def serve_cmd(host, port, threads, workers):
    """Serve the gateway and dashboard with waitress."""
    from . import server
    from .workers import worker_count

    app = current_app._get_current_object()
    if host:
        app.config["HOST"] = host  # what /metrics judges (open without a token on loopback only)
    try:
        count = worker_count(workers if workers is not None else app.config.get("WORKERS"))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers / PROMPTPROXY_WORKERS") from None
    server.serve(app, host, port, threads, count)


@cli.command("create-admin")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name", default=None, help="User name (default: the part of the email before @).")
@with_appcontext
@committed
def create_admin(email, password, name):
    """Create a dashboard administrator (with access to every model and prompt)."""
    user = manage.create_user(ACTOR, name or email.split("@")[0], email=email, role="admin", password=password,
                              all_models=True, all_prompts=True)
    say(f"created admin {user.name} <{user.email}>")


# -- users --------------------------------------------------------------------------------------------
def limit_options(fn):
    """The limit and access options shared by `user update` and `key update`."""
    options = [
        click.option("--rpm", type=int, help="Requests per minute (0 = no limit)."),
        click.option("--tpm", type=int, help="Tokens per minute (0 = no limit)."),
        click.option("--max-concurrent", type=int, help="Concurrent requests (0 = no limit)."),
        click.option("--budget", type=float, help="Budget in USD per period (0 = none)."),
        click.option("--period", type=click.Choice(manage.PERIODS), help="Budget period."),
        click.option("--allow-model", "allow_models", multiple=True, help="Add a model to the allow-list."),
        click.option("--allow-prompt", "allow_prompts", multiple=True, help="Add a prompt to the allow-list."),
        click.option("--clear-models", is_flag=True, help="Empty the model allow-list first."),
        click.option("--clear-prompts", is_flag=True, help="Empty the prompt allow-list first."),
        click.option("--allow-mcp", "allow_mcp", multiple=True,
                     help="Add an MCP server (SERVER) or one of its tools (SERVER/TOOL) to the allow-list."),
        click.option("--clear-mcp", is_flag=True, help="Empty the MCP allow-list first."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def all_options(fn):
    """--all-models/--no-all-models and the same for prompts (on a key: no narrowing of its user's lists)."""
    fn = click.option("--all-prompts/--no-all-prompts", default=None, help="Every prompt, present and future.")(fn)
    fn = click.option("--all-mcp/--no-all-mcp", default=None, help="Every MCP server and tool, present and future.")(fn)
    return click.option("--all-models/--no-all-models", default=None, help="Every model, present and future.")(fn)


def user_dict(u: User) -> dict:
    """A user as printed by the CLI (never the password hash)."""
    return {"id": u.id, "name": u.name, "email": u.email, "role": u.role, "active": u.active,
            "all_models": u.all_models, "all_prompts": u.all_prompts, "allowed_models": u.allowed_models,
            "allowed_prompts": u.allowed_prompts, "all_mcp": u.all_mcp, "allowed_mcp": u.allowed_mcp, "rpm": u.rpm,
            "tpm": u.tpm, "max_concurrent": u.max_concurrent,
            "budget_usd": u.budget_usd, "budget_period": u.budget_period,
            "groups": [g.name for g in u.groups]}


@cli.group()
def user():
    """Users: people or services that call the API."""


@user.command("create")
@click.argument("name")
@click.option("--email")
@click.option("--role", type=click.Choice(manage.ROLES), default="member")
@click.option("--password", help="Lets the user log in to the dashboard.")
@click.option("--all-models", is_flag=True, default=None, help="Allow every model.")
@click.option("--all-prompts", is_flag=True, default=None, help="Allow every prompt.")
@click.option("--allow-model", "allow_models", multiple=True)
@click.option("--allow-prompt", "allow_prompts", multiple=True)
@click.option("--all-mcp", is_flag=True, default=None, help="Allow every MCP server and tool.")
@click.option("--allow-mcp", "allow_mcp", multiple=True, help="Allow an MCP server (SERVER) or tool (SERVER/TOOL).")
@with_appcontext
@committed
def user_create(name, email, role, password, **access):
    """Create a user. New users may use no model or prompt until granted."""
    u = manage.create_user(ACTOR, name, email=email, role=role, password=password, **access)
    say(f"created user {u.name} (id {u.id})")
    if not (u.all_models or u.allowed_models):
        say("note: this user may use no model yet; grant with --all-models or --allow-model", err=True)


@user.command("list")
@json_option
@with_appcontext
def user_list(as_json):
    """List users."""
    for u in db.session.scalars(sa.select(User).order_by(User.name)):
        row(user_dict(u), as_json, u.id, u.name, u.email or "-", u.role, "active" if u.active else "disabled")


@user.command("show")
@click.argument("name")
@json_option
@with_appcontext
@committed
def user_show(name, as_json):
    """Show one user."""
    emit(user_dict(manage.get_user(name)), as_json)


@user.command("update")
@click.argument("name")
@click.option("--email")
@click.option("--role", type=click.Choice(manage.ROLES))
@click.option("--password")
@click.option("--active/--disabled", default=None, help="Enable or disable the user.")
@click.option("--group", "add_groups", multiple=True, help="Add the user to a group (repeatable).")
@click.option("--no-group", "remove_groups", multiple=True, help="Take the user out of a group (repeatable).")
@all_options
@limit_options
@with_appcontext
@committed
def user_update(name, email, role, password, active, add_groups, remove_groups, **limits):
    """Change a user's details, limits, access and groups (--allow-* add to the lists)."""
    u = manage.get_user(name)
    before = [g.name for g in u.groups]
    changed = manage.update_user(ACTOR, u, email=email, role=role, active=active, password=password, **limits)
    if groups.set_memberships(ACTOR, u, add=add_groups, remove=remove_groups) != before:
        changed["groups"] = True
    say(f"updated user {u.name}: {', '.join(changed) or 'nothing changed'}")


@user.command("delete")
@click.argument("name")
@click.option("--hard", is_flag=True,
              help="Also anonymise their request-log rows and remove their budgets and roll-ups.")
@with_appcontext
@committed
def user_delete(name, hard):
    """Delete a user, their keys and stored Responses (a user with request history is deactivated, not deleted)."""
    u = manage.get_user(name)
    if manage.delete_user(ACTOR, u, hard=hard) == "deactivated":
        say(f"deactivated user {name}: they have request history, so they are kept (keys revoked, login disabled) "
            "and the log still shows their name; --hard deletes and anonymises")
    else:
        say(f"deleted user {name}")


# -- groups -------------------------------------------------------------------------------------------
def group_dict(g) -> dict:
    """A group as printed by the CLI."""
    return {"id": g.id, "name": g.name, "description": g.description, "members": [u.name for u in g.members],
            "all_models": g.all_models, "all_prompts": g.all_prompts, "allowed_models": g.allowed_models,
            "allowed_prompts": g.allowed_prompts, "all_mcp": g.all_mcp, "allowed_mcp": g.allowed_mcp, "rpm": g.rpm,
            "tpm": g.tpm, "max_concurrent": g.max_concurrent,
            "budget_usd": g.budget_usd, "budget_period": g.budget_period}


@cli.group("group")
def group_cmd():
    """Groups: teams whose grants widen their members' access and whose limits and budget they share."""


@group_cmd.command("create")
@click.argument("name")
@click.option("--description", default="")
@click.option("--all-models", is_flag=True, default=None, help="Grant every model.")
@click.option("--all-prompts", is_flag=True, default=None, help="Grant every prompt.")
@click.option("--all-mcp", is_flag=True, default=None, help="Grant every MCP server and tool.")
@limit_options
@with_appcontext
@committed
def group_create(name, description, **limits):
    """Create a group; add members with `user update NAME --group GROUP`."""
    g = groups.create_group(ACTOR, name, description=description, **limits)
    say(f"created group {g.name} (id {g.id})")


@group_cmd.command("list")
@json_option
@with_appcontext
def group_list(as_json):
    """List groups."""
    for g in db.session.scalars(sa.select(groups.Group).order_by(groups.Group.name)):
        row(group_dict(g), as_json, g.id, g.name, f"{len(g.members)} members", g.description or "-")


@group_cmd.command("show")
@click.argument("name")
@json_option
@with_appcontext
@committed
def group_show(name, as_json):
    """Show one group and its members."""
    emit(group_dict(groups.get_group(name)), as_json)


@group_cmd.command("update")
@click.argument("name")
@click.option("--name", "new_name", help="Rename the group.")
@click.option("--description")
@all_options
@limit_options
@with_appcontext
@committed
def group_update(name, new_name, description, **limits):
    """Change a group's limits and grants (--allow-* add to the lists)."""
    g = groups.get_group(name)
    changed = groups.update_group(ACTOR, g, name=new_name, description=description, **limits)
    say(f"updated group {g.name}: {', '.join(changed) or 'nothing changed'}")


@group_cmd.command("delete")
@click.argument("name")
@with_appcontext
@committed
def group_delete(name):
    """Delete a group (its members stay; they lose what it granted)."""
    groups.delete_group(ACTOR, groups.get_group(name))
    say(f"deleted group {name}")


# -- keys ---------------------------------------------------------------------------------------------
def key_dict(k: ApiKey, user_name: str) -> dict:
    """A key as printed (prefix and last 4 only)."""
    return {"id": k.id, "key": k.display, "name": k.name, "user": user_name, "created_at": k.created_at,
            "expires_at": k.expires_at, "revoked": k.revoked_at is not None, "last_used_at": k.last_used_at,
            "allowed_models": k.allowed_models, "allowed_prompts": k.allowed_prompts, "allowed_mcp": k.allowed_mcp,
            "rpm": k.rpm, "tpm": k.tpm,
            "max_concurrent": k.max_concurrent, "budget_usd": k.budget_usd, "budget_period": k.budget_period,
            "tags": k.tags or []}


@cli.group()
def key():
    """API keys: shown once, stored only as a hash."""


def parse_date(ctx, param, value):
    """YYYY-MM-DD -> datetime."""
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD") from None


@key.command("create")
@click.option("--user", "user_name", required=True)
@click.option("--name", default="")
@click.option("--expires", callback=parse_date, help="YYYY-MM-DD (UTC midnight).")
@click.option("--tag", "tags", multiple=True, help="A default tag on every request made with the key (repeat).")
@with_appcontext
@committed
def key_create(user_name, name, expires, tags):
    """Create a key; the secret is printed once, alone on the last line."""
    u = manage.get_user(user_name)
    k, raw = manage.create_key(ACTOR, u, name=name, expires_at=expires, tags=tags)
    say(f"created key {k.id} ({k.display}) for {u.name}; it is shown only now:")
    click.echo(raw)


@key.command("list")
@click.option("--user", "user_name")
@json_option
@with_appcontext
@committed
def key_list(user_name, as_json):
    """List keys (prefix and last 4 only)."""
    query = sa.select(ApiKey, User.name).join(User).order_by(ApiKey.id)
    if user_name:
        query = query.where(ApiKey.user_id == manage.get_user(user_name).id)
    for k, owner in db.session.execute(query):
        d = key_dict(k, owner)
        row(d, as_json, k.id, k.display, owner, k.name or "-", "revoked" if d["revoked"] else "active")


@key.command("show")
@click.argument("key_id")
@json_option
@with_appcontext
@committed
def key_show(key_id, as_json):
    """Show one key."""
    k = manage.get_key(key_id)
    emit(key_dict(k, k.user.name), as_json)


@key.command("revoke")
@click.argument("key_id")
@with_appcontext
@committed
def key_revoke(key_id):
    """Revoke a key at once."""
    k = manage.get_key(key_id)
    manage.revoke_key(ACTOR, k)
    say(f"revoked key {k.id} ({k.display})")


@key.command("update")
@click.argument("key_id")
@click.option("--name")
@click.option("--tag", "tags", multiple=True, help="Replace the key's default tags (repeat).")
@click.option("--no-tags", is_flag=True, help="Remove the key's default tags.")
@all_options
@limit_options
@with_appcontext
@committed
def key_update(key_id, name, tags, no_tags, **limits):
    """Narrow a key's limits and lists (they can never widen its user's); set its default tags."""
    if tags and no_tags:
        raise click.UsageError("--tag and --no-tags cannot be combined")
    k = manage.get_key(key_id)
    changed = manage.update_key(ACTOR, k, name=name, tags=() if no_tags else (tags or None), **limits)
    say(f"updated key {k.id}: {', '.join(changed) or 'nothing changed'}")


# -- providers ----------------------------------------------------------------------------------------
def provider_dict(p: Provider) -> dict:
    """A provider as printed: the secret only as a hint."""
    return {"id": p.id, "name": p.name, "kind": p.kind, "base_url": p.base_url,
            "api_key": p.api_key_hint if p.api_key_encrypted else None, "enabled": p.enabled,
            "connect_timeout": p.connect_timeout, "first_byte_timeout": p.first_byte_timeout,
            "idle_timeout": p.idle_timeout, "total_timeout": p.total_timeout, "stream_usage": p.stream_usage,
            "anthropic_version": p.anthropic_version, "default_max_tokens": p.default_max_tokens,
            "responses_api": p.responses_api, "reasoning_effort": p.reasoning_effort}


def provider_options(fn):
    """Options shared by provider create and update."""
    options = [
        click.option("--header", "headers", multiple=True, help="Extra header NAME=VALUE (stored encrypted)."),
        click.option("--connect-timeout", type=float), click.option("--first-byte-timeout", type=float),
        click.option("--idle-timeout", type=float), click.option("--total-timeout", type=float),
        click.option("--stream-usage/--no-stream-usage", default=None,
                     help="Ask for usage in streams (stream_options.include_usage)."),
        click.option("--anthropic-version"), click.option("--default-max-tokens", type=int),
        click.option("--responses-api/--no-responses-api", default=None,
                     help="The upstream speaks OpenAI's Responses API: /v1/responses bodies pass through "
                          "(OpenAI-compatible providers only)."),
        click.option("--reasoning-effort/--no-reasoning-effort", default=None,
                     help="The upstream takes chat's `reasoning_effort`: Claude Code's thinking and Responses' "
                          "reasoning.effort map to it (otherwise they are dropped)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def parse_headers(values) -> dict | None:
    """NAME=VALUE pairs -> dict."""
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"header `{item}` must be NAME=VALUE")
        out[name.strip()] = value
    return out


@cli.group()
def provider():
    """Upstream AI APIs."""


@provider.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["openai", "anthropic"]), default="openai")
@click.option("--base-url", required=True, help="e.g. https://api.openai.com/v1 or https://api.anthropic.com")
@click.option("--api-key", help="The upstream's secret (stored encrypted).")
@provider_options
@with_appcontext
@committed
def provider_create(name, kind, base_url, api_key, headers, **options):
    """Register an upstream."""
    p = manage.create_provider(ACTOR, name, kind, base_url, api_key=api_key, headers=parse_headers(headers),
                               **options)
    say(f"created provider {p.name} (id {p.id})")


@provider.command("list")
@json_option
@with_appcontext
def provider_list(as_json):
    """List providers."""
    for p in db.session.scalars(sa.select(Provider).order_by(Provider.name)):
        row(provider_dict(p), as_json, p.id, p.name, p.kind, p.base_url)


@provider.command("show")
@click.argument("name")
@json_option
@with_appcontext
@committed
def provider_show(name, as_json):
    """Show one provider."""
    emit(provider_dict(manage.get_provider(name)), as_json)


@provider.command("update")
@click.argument("name")
@click.option("--base-url")
@click.option("--api-key", help="Replace the secret ('' clears it).")
@click.option("--enabled/--disabled", default=None)
@provider_options
@with_appcontext
@committed
def provider_update(name, base_url, api_key, headers, **options):
    """Change a provider (a new host drops the stored key and headers unless new ones are given)."""
    p = manage.get_provider(name)
    changed = manage.update_provider(ACTOR, p, base_url=base_url, api_key=api_key, headers=parse_headers(headers),
                                     **options)
    say(f"updated provider {p.name}: {', '.join(changed) or 'nothing changed'}")
    dropped = [secret for secret, note in changed.items() if note == HOST_CHANGED]
    if dropped:
        say(f"the host changed: the stored {' and '.join(dropped)} were dropped; give them again "
            "(--api-key, --header)")


@provider.command("delete")
@click.argument("name")
@with_appcontext
@committed
def provider_delete(name):
    """Delete a provider no model uses."""
    manage.delete_provider(ACTOR, manage.get_provider(name))
    say(f"deleted provider {name}")


# -- MCP servers ------------------------------------------------------------------------------------
def mcp_options(fn):
    """Options shared by mcp create and update."""
    options = [
        click.option("--header", "headers", multiple=True, help="Header NAME=VALUE sent upstream (stored encrypted)."),
        click.option("--description"),
        click.option("--timeout", type=float, help="Seconds to wait for an answer (default: first-byte timeout)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.group()
def mcp():
    """MCP tool servers served at /mcp."""


@mcp.command("create")
@click.argument("name")
@click.option("--url", required=True, help="The server's streamable HTTP endpoint, e.g. https://tools.example/mcp")
@click.option("--api-key", help="Sent as `Authorization: Bearer` (stored encrypted, never shown again).")
@mcp_options
@with_appcontext
@committed
def mcp_create(name, url, api_key, headers, **options):
    """Register an MCP server; grant it with `user update NAME --allow-mcp SERVER[/TOOL]`."""
    from .mcp.servers import create_server

    s = create_server(ACTOR, name, url, api_key=api_key, headers=parse_headers(headers), **options)
    say(f"created MCP server {s.name} (id {s.id}); its tools appear at /mcp as {s.name}__TOOL")


@mcp.command("list")
@json_option
@with_appcontext
def mcp_list(as_json):
    """List MCP servers."""
    from .mcp.servers import server_dict
    from .models import McpServer

    for s in db.session.scalars(sa.select(McpServer).order_by(McpServer.name)):
        row(server_dict(s), as_json, s.id, s.name, s.url, "enabled" if s.enabled else "disabled")


@mcp.command("show")
@click.argument("name")
@json_option
@with_appcontext
@committed
def mcp_show(name, as_json):
    """Show one MCP server (the key as a hint, header names only)."""
    from .mcp.servers import get_server, server_dict

    emit(server_dict(get_server(name)), as_json)


@mcp.command("update")
@click.argument("name")
@click.option("--url")
@click.option("--api-key", help="Replace the key ('' clears it).")
@click.option("--enabled/--disabled", default=None)
@mcp_options
@with_appcontext
@committed
def mcp_update(name, url, api_key, headers, **options):
    """Change an MCP server (a new host drops the stored credentials unless new ones are given)."""
    from .mcp.servers import get_server, update_server

    s = get_server(name)
    changed = update_server(ACTOR, s, url=url, api_key=api_key, headers=parse_headers(headers), **options)
    say(f"updated MCP server {s.name}: {', '.join(changed) or 'nothing changed'}")


@mcp.command("delete")
@click.argument("name")
@with_appcontext
@committed
def mcp_delete(name):
    """Delete an MCP server."""
    from .mcp.servers import delete_server, get_server

    delete_server(ACTOR, get_server(name))
    say(f"deleted MCP server {name}")


# -- models -------------------------------------------------------------------------------------------
def model_dict(m: Model) -> dict:
    """A model as printed."""
    return {"id": m.id, "slug": m.slug, "provider": m.provider.name, "upstream_model": m.upstream_model,
            "kind": m.kind, "input_price": m.input_price, "output_price": m.output_price,
            "cached_input_price": m.cached_input_price, "cache_write_price": m.cache_write_price,
            "fallbacks": m.fallbacks, "endpoints": manage.served_endpoints(m), "enabled": m.enabled,
            "strategy": m.strategy, "cache_ttl": m.cache_ttl, "cache_scope": m.cache_scope,
            "deployments": [{"id": d.id, "provider": d.provider.name, "upstream_model": d.upstream_model,
                             "weight": d.weight, "priority": d.priority, "rpm": d.rpm, "tpm": d.tpm}
                            for d in m.deployments]}


def endpoint_names(value: str | None) -> list | None:
    """`--endpoints chat,completions` as a list ('' = the kind's default)."""
    return None if value is None else value.split(",")


ENDPOINTS_HELP = ("Comma-separated: chat, completions, embeddings. Default: chat,completions for chat models "
                  "(completions alone, embeddings alone for the other kinds); '' restores it.")


def cache_options(fn):
    """The exact response cache of a model or a stored prompt."""
    fn = click.option("--cache-scope", type=click.Choice(manage.CACHE_SCOPES),
                      help="Cache answers per user (default) or shared by everyone.")(fn)
    return click.option("--cache-ttl", type=int,
                        help="Seconds the exact response cache keeps answers (0 = off).")(fn)


def routing_options(fn):
    """How a model picks a deployment and caches answers."""
    fn = cache_options(fn)
    return click.option("--strategy", type=click.Choice(manage.STRATEGIES),
                        help="How a deployment is chosen (default weighted).")(fn)


def price_options(fn):
    """Price options, USD per million tokens."""
    for name in ("--cache-write-price", "--cached-input-price", "--output-price", "--input-price"):
        fn = click.option(name, type=float, help="USD per million tokens.")(fn)
    return fn


@cli.group()
def model():
    """Models clients ask for."""


@model.command("create")
@click.argument("slug")
@click.option("--provider", "provider_name", required=True)
@click.option("--upstream-model", required=True, help="The provider's own model name (may contain ':').")
@click.option("--kind", type=click.Choice(manage.MODEL_KINDS), default="chat")
@click.option("--endpoints", help=ENDPOINTS_HELP)
@click.option("--fallback", "fallbacks", multiple=True, help="Ordered fallback model slugs.")
@price_options
@routing_options
@with_appcontext
@committed
def model_create(slug, provider_name, upstream_model, kind, endpoints, fallbacks, **prices):
    """Expose a provider's model under a public slug."""
    m = manage.create_model(ACTOR, slug, manage.get_provider(provider_name), upstream_model, kind,
                            fallbacks=list(fallbacks) or None, endpoints=endpoint_names(endpoints), **prices)
    say(f"created model {m.slug} (id {m.id})")


@model.command("list")
@json_option
@with_appcontext
def model_list(as_json):
    """List models."""
    for m in db.session.scalars(sa.select(Model).order_by(Model.slug)):
        row(model_dict(m), as_json, m.id, m.slug, m.kind, ",".join(manage.served_endpoints(m)), m.provider.name,
            m.upstream_model)


@model.command("show")
@click.argument("slug")
@json_option
@with_appcontext
@committed
def model_show(slug, as_json):
    """Show one model, with the health and traffic of each deployment."""
    m = manage.get_model(slug)
    out = model_dict(m)
    gw = current_app.extensions["promptproxy"]
    gw.catalog.refresh(force=True)
    info = gw.catalog.model(m.slug)
    health = {st["deployment_id"]: st for st in gw.deployments.states(info)} if info else {}
    for dep in out["deployments"]:
        dep.update({k: v for k, v in health.get(dep["id"], {"health": "disabled"}).items() if k != "deployment_id"})
    emit(out, as_json)


@model.command("deploy")
@click.argument("slug")
@click.option("--provider", "provider_name", required=True)
@click.option("--upstream-model", required=True, help="The provider's own model name.")
@click.option("--weight", type=int, help="Share of traffic relative to the others (default 1; 0 = drain).")
@click.option("--priority", type=int, help="Lower is preferred; higher ones serve only when those are down.")
@click.option("--rpm", type=int, help="This deployment's requests per minute, across all instances (0 = none).")
@click.option("--tpm", type=int, help="This deployment's tokens per minute, across all instances (0 = none).")
@with_appcontext
@committed
def model_deploy(slug, provider_name, upstream_model, **fields):
    """Add (or change) a deployment of a model: another place the same model runs."""
    dep = manage.deploy(ACTOR, manage.get_model(slug), manage.get_provider(provider_name), upstream_model, **fields)
    say(f"deployment {dep.id} of {slug}: {provider_name} / {dep.upstream_model} weight {dep.weight} "
        f"priority {dep.priority}")


@model.command("undeploy")
@click.argument("slug")
@click.option("--provider", "provider_name", required=True)
@click.option("--upstream-model", required=True)
@with_appcontext
@committed
def model_undeploy(slug, provider_name, upstream_model):
    """Remove a deployment from a model (a model keeps at least one)."""
    manage.undeploy(ACTOR, manage.get_model(slug), manage.get_provider(provider_name), upstream_model)
    say(f"removed deployment {provider_name} / {upstream_model} from {slug}")


@model.command("update")
@click.argument("slug")
@click.option("--provider", "provider_name")
@click.option("--upstream-model")
@click.option("--kind", type=click.Choice(manage.MODEL_KINDS))
@click.option("--endpoints", help=ENDPOINTS_HELP)
@click.option("--fallback", "fallbacks", multiple=True, help="Replace the ordered fallback list.")
@click.option("--no-fallbacks", is_flag=True, help="Clear the fallback list.")
@click.option("--enabled/--disabled", default=None)
@price_options
@routing_options
@with_appcontext
@committed
def model_update(slug, provider_name, fallbacks, no_fallbacks, endpoints, **fields):
    """Change a model's mapping, prices, fallbacks or endpoints."""
    m = manage.get_model(slug)
    provider_obj = manage.get_provider(provider_name) if provider_name else None
    fb = [] if no_fallbacks else (list(fallbacks) if fallbacks else None)
    changed = manage.update_model(ACTOR, m, provider=provider_obj, fallbacks=fb, endpoints=endpoint_names(endpoints),
                                  **fields)
    say(f"updated model {m.slug}: {', '.join(changed) or 'nothing changed'}")


@model.command("delete")
@click.argument("slug")
@with_appcontext
@committed
def model_delete(slug):
    """Delete a model."""
    manage.delete_model(ACTOR, manage.get_model(slug))
    say(f"deleted model {slug}")


# -- prompts ------------------------------------------------------------------------------------------
def prompt_dict(p: Prompt) -> dict:
    """A prompt with its live text."""
    live = p.live_version or p.latest_version
    version = manage.get_version(p, live) if live else None
    return {"id": p.id, "slug": p.slug, "mode": p.mode, "description": p.description,
            "live_version": live, "latest_version": p.latest_version, "pinned": p.live_version is not None,
            "cache_ttl": p.cache_ttl, "cache_scope": p.cache_scope, "mcp": p.mcp,
            "text": version.text if version else None, "variables": version.variables if version else None,
            "tools": version.tools if version else None, "params": version.params if version else None}


def json_arg(ctx, param, value):
    """Parse a JSON option."""
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise click.BadParameter("must be valid JSON") from None


def version_options(fn):
    """Options that make up a prompt version."""
    fn = click.option("--note", default="", help="What changed in this version.")(fn)
    fn = click.option("--params", callback=json_arg, help='JSON: {"temperature": {"value": 0, "locked": true}}')(fn)
    fn = click.option("--tools", callback=json_arg, help="JSON list of OpenAI function tools.")(fn)
    return click.option("--variables", callback=json_arg, help='JSON defaults: {"lang": "French"}')(fn)


def mcp_option(fn):
    """Whether a stored prompt is published over MCP (unset on update: unchanged)."""
    return click.option("--mcp/--no-mcp", default=None,
                        help="Offer it over MCP (/mcp prompts/list and prompts/get hand its text to every key "
                             "that may use it). Default: not offered.")(fn)


@cli.group()
def prompt():
    """Stored system prompts."""


@prompt.command("create")
@click.argument("slug")
@click.option("--text", required=True)
@click.option("--mode", type=click.Choice(manage.PROMPT_MODES), default="prepend")
@click.option("--description", default="")
@version_options
@cache_options
@mcp_option
@with_appcontext
@committed
def prompt_create(slug, text, mode, description, **fields):
    """Store a system prompt (version 1); with --cache-ttl, calls using it are cached whatever their model."""
    p = manage.create_prompt(ACTOR, slug, text, mode=mode, description=description, **fields)
    say(f"created prompt {p.slug} (id {p.id}, version 1)")


@prompt.command("update")
@click.argument("slug")
@click.option("--text", help="New text: saves a new version.")
@click.option("--mode", type=click.Choice(manage.PROMPT_MODES))
@click.option("--description")
@version_options
@cache_options
@mcp_option
@with_appcontext
@committed
def prompt_update(slug, text, mode, description, variables, tools, params, note, cache_ttl, cache_scope, mcp):
    """Change a prompt; new text, variables, tools or params make a new version. --cache-ttl 0: the model's cache."""
    p = manage.get_prompt(slug)
    manage.update_prompt(ACTOR, p, mode=mode, description=description, cache_ttl=cache_ttl, cache_scope=cache_scope,
                         mcp=mcp)
    if text is not None or variables is not None or tools is not None or params is not None:
        current = manage.get_version(p, p.latest_version)
        v = manage.add_version(ACTOR, p, text if text is not None else current.text,
                               variables=variables if variables is not None else current.variables,
                               tools=tools if tools is not None else current.tools,
                               params=params if params is not None else current.params, note=note)
        say(f"prompt {p.slug}: saved version {v.version}")
    else:
        say(f"updated prompt {p.slug}")


@prompt.command("list")
@json_option
@with_appcontext
@committed
def prompt_list(as_json):
    """List prompts."""
    for p in db.session.scalars(sa.select(Prompt).order_by(Prompt.slug)):
        d = prompt_dict(p)
        row(d, as_json, p.id, p.slug, f"v{d['live_version']}", p.mode, repr((d["text"] or "")[:60]))


@prompt.command("show")
@click.argument("slug")
@json_option
@with_appcontext
@committed
def prompt_show(slug, as_json):
    """Show a prompt and its live text."""
    emit(prompt_dict(manage.get_prompt(slug)), as_json)


@prompt.command("versions")
@click.argument("slug")
@json_option
@with_appcontext
@committed
def prompt_versions(slug, as_json):
    """List a prompt's versions, newest first; * marks the live one."""
    p = manage.get_prompt(slug)
    live = p.live_version or p.latest_version
    from .models import PromptLabel

    labels: dict[int, list[str]] = {}
    for lab in db.session.scalars(sa.select(PromptLabel).where(PromptLabel.prompt_id == p.id)):
        labels.setdefault(lab.version, []).append(lab.label)
    query = sa.select(PromptVersion).where(PromptVersion.prompt_id == p.id).order_by(PromptVersion.version.desc())
    for v in db.session.scalars(query):
        d = {"version": v.version, "live": v.version == live, "labels": sorted(labels.get(v.version, [])),
             "created_at": v.created_at, "created_by": v.created_by, "note": v.note, "text": v.text}
        row(d, as_json, f"{'*' if d['live'] else ' '} {v.version}", utc(v.created_at),
            ",".join(d["labels"]) or "-", repr(v.text[:60]))


@prompt.command("label")
@click.argument("slug")
@click.argument("label")
@click.argument("versions", nargs=-1, required=True)
@with_appcontext
@committed
def prompt_label(slug, label, versions):
    """Point LABEL (e.g. production) at VERSION, or roll it out: `3=90 4=10`; use it as model:prompt@LABEL."""
    split = manage.parse_split(list(versions))
    manage.set_label(ACTOR, manage.get_prompt(slug), label, split=split)
    if len(split) == 1:
        say(f"prompt {slug}: {label} -> version {next(iter(split))}")
    else:
        say(f"prompt {slug}: {label} -> " + ", ".join(f"version {v} {p}%" for v, p in split.items()))


def _duration(ctx, param, value: str) -> timedelta:
    """`30m`, `24h`, `7d` or `4w` as a timedelta."""
    found = DURATION.fullmatch((value or "").strip())
    if not found or not int(found.group(1)):
        raise click.BadParameter("give a number and a unit: 30m, 24h, 7d or 4w")
    return timedelta(**{DURATION_UNITS[found.group(2)]: int(found.group(1))})


DURATION = re.compile(r"(\d{1,6})([mhdw])")
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def version_table(slug: str, span: timedelta, as_json: bool) -> None:
    """Print a prompt's per-version stats over the last `span` (one JSON object per version with --json)."""
    from . import stats

    until = utcnow()
    rows = stats.prompt_versions(manage.get_prompt(slug), until - span, until)
    if as_json:
        for r in rows:
            click.echo(to_json({"version": r["version"], "live": r["live"], "labels": dict(r["labels"]),
                                **{k: r[k] for k in ("requests", "errors", "error_rate", "input_tokens",
                                                     "output_tokens", "cost")},
                                "p50_ms": r["p50"], "p95_ms": r["p95"]}))
        return
    if not rows:
        say(f"no requests for prompt {slug} in the last {span}")
        return
    table(("VERSION", "LABELS", "REQUESTS", "ERRORS", "ERROR %", "TOKENS IN/OUT", "COST $", "P50 MS"),
          [(f"{r['version']}{' (live)' if r['live'] else ''}",
            ", ".join(f"{name} {pct}%" for name, pct in r["labels"]) or "-", r["requests"], r["errors"],
            f"{r['error_rate'] * 100:.1f}", f"{r['input_tokens']}/{r['output_tokens']}", f"{r['cost']:.6f}",
            "-" if r["p50"] is None else f"{r['p50']:.0f}") for r in rows], numeric=(2, 3, 4, 6, 7))


@prompt.command("stats")
@click.argument("slug")
@click.option("--since", "span", default="24h", show_default=True, callback=_duration,
              help="How far back: 30m, 24h, 7d or 4w.")
@json_option
@with_appcontext
@committed
def prompt_stats(slug, span, as_json):
    """Requests, errors, tokens, cost and p50 latency per version of a prompt, with the labels on each."""
    version_table(slug, span, as_json)


@prompt.command("compare", hidden=True)
@click.argument("slug")
@click.option("--days", type=click.IntRange(1), default=7, show_default=True)
@json_option
@with_appcontext
@committed
def prompt_compare(slug, days, as_json):
    """`prompt stats SLUG --since DAYSd` under its first name."""
    version_table(slug, timedelta(days=days), as_json)


@prompt.command("rollback")
@click.argument("slug")
@click.argument("version", type=int)
@with_appcontext
@committed
def prompt_rollback(slug, version):
    """Make VERSION live (roll back or forward); `prompt rollback SLUG 0` follows the newest again."""
    manage.set_live(ACTOR, manage.get_prompt(slug), version or None)
    say(f"prompt {slug}: live version is now {version or 'the newest'}")


@prompt.command("delete")
@click.argument("slug")
@with_appcontext
@committed
def prompt_delete(slug):
    """Delete a prompt and its versions."""
    manage.delete_prompt(ACTOR, manage.get_prompt(slug))
    say(f"deleted prompt {slug}")


# -- request log --------------------------------------------------------------------------------------
LOG_FIELDS = ("request_id", "created_at", "user", "key_id", "model", "prompt", "prompt_version", "endpoint",
              "inbound_format", "stream", "status", "error_type", "input_tokens", "output_tokens", "cached_tokens",
              "usage_estimated", "cost", "latency_ms", "ttft_ms", "tags")


LOG_HEADERS = ("TIME (UTC)", "USER", "MODEL", "ENDPOINT", "STATUS", "TOKENS IN/OUT", "COST $", "LATENCY",
               "ERROR")


def log_cells(entry: RequestLog, owner: str | None) -> tuple:
    """One request as table cells; a dash where there is nothing (no tokens on a refused call, no cost)."""
    model = entry.model or "-"
    if entry.prompt:
        model += f":{entry.prompt}" + (f"@{entry.prompt_version}" if entry.prompt_version else "")
    tokens = "-" if entry.input_tokens is None and entry.output_tokens is None else \
        f"{entry.input_tokens or 0}/{entry.output_tokens or 0}" + ("~" if entry.usage_estimated else "")
    cost = f"{entry.cost:.6f}" if entry.cost is not None else "-"
    latency = f"{entry.latency_ms:.0f} ms" if entry.latency_ms is not None else "-"
    return (utc(entry.created_at), owner or "-", model, entry.endpoint or "-", entry.status, tokens, cost, latency,
            entry.error_type or "-")


@cli.command("log")
@click.option("--user", "user_name")
@click.option("--group", "group_name", help="Requests of the group's members.")
@click.option("--tag", help="Only requests carrying this tag.")
@click.option("--limit", type=click.IntRange(1, 100000), default=20)
@json_option
@with_appcontext
@committed
def log_cmd(user_name, group_name, tag, limit, as_json):
    """Recent requests, newest first (times in UTC; ~ marks estimated tokens)."""
    query = sa.select(RequestLog, User.name).outerjoin(User, User.id == RequestLog.user_id)
    if user_name:
        query = query.where(RequestLog.user_id == manage.get_user(user_name).id)
    if tag:
        query = query.where(tagged(tag))
    if group_name:
        query = query.where(RequestLog.user_id.in_(groups.member_ids(groups.get_group(group_name))))
    query = query.order_by(RequestLog.created_at.desc(), RequestLog.id.desc()).limit(limit)
    found = db.session.execute(query).all()
    if as_json:
        for entry, owner in found:
            click.echo(to_json({f: (owner if f == "user" else getattr(entry, f)) for f in LOG_FIELDS}))
    elif found:
        table(LOG_HEADERS, [log_cells(entry, owner) for entry, owner in found], numeric=(4, 5, 6, 7))
    else:
        say("no requests logged yet", err=True)


# -- retention and roll-ups ---------------------------------------------------------------------------
@cli.command("prune")
@click.option("--days", type=click.IntRange(0), default=None,
              help="Keep this many days of request-log rows (default PROMPTPROXY_RETENTION_DAYS; 0 = keep all).")
@with_appcontext
def prune_cmd(days):
    """Delete request-log rows older than the retention period; usage roll-ups (charts, totals) are kept."""
    from .rollups import prune

    days = current_app.config["RETENTION_DAYS"] if days is None else days
    if days <= 0:
        say("retention is off (0 days): nothing pruned; pass --days N or set PROMPTPROXY_RETENTION_DAYS")
        return
    say(f"pruned {prune(db.session, days)} request-log rows older than {days} days (roll-ups kept)")


@cli.group()
def rollups():
    """Usage roll-ups behind the dashboard's charts."""


@rollups.command("rebuild")
@with_appcontext
def rollups_rebuild():
    """Recompute the roll-ups from the request-log rows still present (pruned days are lost)."""
    from .rollups import rebuild

    with db.engine.begin() as conn:
        count = rebuild(conn)
    say(f"rebuilt roll-ups from {count} request-log rows")


@cli.command("rotate-encryption-key")
@with_appcontext
def rotate_encryption_key():
    """Re-encrypt every stored secret under PROMPTPROXY_ENCRYPTION_KEY (old keys in PROMPTPROXY_OLD_ENCRYPTION_KEYS)."""
    from .rotation import RotationError, rotate_secrets

    gw = current_app.extensions["promptproxy"]
    try:
        counts = rotate_secrets(gw.box)
        if counts["rotated"]:
            manage.audit(ACTOR, "rotate", "encryption_key", "secrets", counts)
        db.session.commit()
    except RotationError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    say(f"re-encrypted {counts['rotated']} secret(s); {counts['current']} already under the current key")
    if counts["rotated"] or counts["current"]:
        say("you may now remove the old keys from PROMPTPROXY_OLD_ENCRYPTION_KEYS")


# -- declarative configuration ------------------------------------------------------------------------
@cli.command("apply")
@click.argument("path", type=click.File("r", encoding="utf-8"))
@click.option("--dry-run", is_flag=True, help="Print the differences; commit nothing.")
@with_appcontext
def apply_cmd(path, dry_run):
    """Create or update providers, models, prompts and users from a YAML file (see docs/configuration.md)."""
    from . import declarative

    try:
        result = declarative.apply(declarative.load(path.read()))
    except declarative.ConfigFileError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    for warning in result.warnings:
        say(f"warning: {warning}", err=True)
    for change in result.changes:
        say(str(change))
    count = len(result.changes)
    if dry_run:
        db.session.rollback()  # applied inside the transaction to validate it; nothing is committed
        say(f"dry run: {count} change(s) would be made; nothing was written")
    else:
        db.session.commit()
        say(f"applied {count} change(s)" if count else "no changes")


@cli.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File (default: stdout).")
@with_appcontext
def export_cmd(output):
    """Write providers, models, prompts and users as YAML for `apply` (secrets never in clear)."""
    from . import declarative

    text = declarative.export_text()
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        say(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def main() -> None:
    """Console-script entry point: configuration errors and bugs print one line, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        say("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.message = printable(exc.message)  # a bad option value is echoed back in the message
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        say(f"Error: {exc}", err=True)
        sys.exit(2)
    except sa.exc.OperationalError as exc:
        say(f"Error: database problem: {str(exc.orig).splitlines()[0]} "
            "(did you run `promptproxy db upgrade`?)", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # a bug: say so in one line
        say(f"Error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
