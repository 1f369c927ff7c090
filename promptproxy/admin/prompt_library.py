"""The prompt library pages: version history, diff, preview, labels, rollback, and the playground."""
from __future__ import annotations

import difflib
import json

import orjson
import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import manage, stats
from ..api.routes import stream_response
from ..core import prompts as P
from ..core.call import Call
from ..core.catalog import principal_from
from ..core.errors import GatewayError
from ..dialects.anthropic import AnthropicDialect
from ..dialects.envelopes import openai_body
from ..dialects.openai import OpenAIDialect
from ..dialects.responses import ResponsesDialect
from ..extensions import db
from ..models import ApiKey, Model, Prompt, PromptLabel, PromptVersion, User
from ..proxy import pipeline
from . import bp
from .auth import actor, admin_required
from .views import hx_target, save

PLAYGROUND_ENDPOINT = "/admin/playground"
PLAYGROUND_MAX_TOKENS = 1024  # Anthropic's API requires max_tokens; the playground's answers are short


def _versions(prompt: Prompt) -> list[PromptVersion]:
    return list(db.session.scalars(sa.select(PromptVersion).where(PromptVersion.prompt_id == prompt.id)
                                   .order_by(PromptVersion.version.desc())))


def _labels(prompt: Prompt) -> dict[str, list[tuple[int, int]]]:
    """{label: [(version, percent), ...]}: one version at 100 %, or a rollout's split."""
    return {lab.label: [(int(v), int(p)) for v, p in lab.split] if lab.split else [(lab.version, 100)]
            for lab in db.session.scalars(sa.select(PromptLabel).where(PromptLabel.prompt_id == prompt.id)
                                          .order_by(PromptLabel.label))}


def _version_stats(prompt: Prompt) -> dict:
    """The per-version table over the chosen range (?range=24h|7d|30d): requests, errors, tokens, cost, p50."""
    name = request.args.get("range", "24h")
    name = name if name in stats.RANGES else "24h"
    since, until, _ = stats.window(name)
    return {"range_name": name, "ranges": list(stats.RANGES), "since": since, "until": until,
            "version_rows": stats.prompt_versions(prompt, since, until)}


def _version_or_404(prompt: Prompt, number) -> PromptVersion:
    try:
        return manage.get_version(prompt, int(number))
    except (manage.ManageError, TypeError, ValueError):
        abort(404)


@bp.get("/prompts/<int:prompt_id>")
@admin_required
def prompt_detail(prompt_id: int):
    """Version history with labels and per-version traffic, rollback and forward, and forms for diff and preview."""
    prompt = db.get_or_404(Prompt, prompt_id)
    table = _version_stats(prompt)
    if hx_target() == "version-stats":  # the range switch swaps only the table
        return render_template("admin/prompt_library/_version_stats.html", prompt=prompt, **table)
    versions = _versions(prompt)
    labels = _labels(prompt)
    by_version: dict[int, list[str]] = {}
    for label, split in labels.items():
        for number, percent in split:
            by_version.setdefault(number, []).append(label if percent == 100 else f"{label} {percent}%")
    live = prompt.live_version or prompt.latest_version
    newest = versions[0] if versions else None
    return render_template("admin/prompt_library/detail.html", prompt=prompt, versions=versions, labels=labels,
                           by_version=by_version, live=live, newest=newest,
                           variables=_variable_fields(newest) if newest else [], **table)


@bp.post("/prompts/<int:prompt_id>/live")
@admin_required
def prompt_set_live(prompt_id: int):
    """Roll back or forward to a version; an empty version follows the newest again."""
    prompt = db.get_or_404(Prompt, prompt_id)
    raw = request.form.get("version", "").strip()
    number = int(raw) if raw.isdigit() and int(raw) > 0 else None
    _, error = save(lambda: manage.set_live(actor(), prompt, number))
    flash(error or (f"Version {number} is live now." if number else "The newest version is live now."),
          "error" if error else "info")
    return redirect(url_for("admin.prompt_detail", prompt_id=prompt.id), 303)


@bp.post("/prompts/<int:prompt_id>/labels")
@admin_required
def prompt_set_label(prompt_id: int):
    """Create or move a label (production, staging, ...)."""
    prompt = db.get_or_404(Prompt, prompt_id)
    label = request.form.get("label", "").strip()
    raw = request.form.get("version", "").strip()  # a version, or a rollout: `3=90 4=10`
    _, error = save(lambda: manage.set_label(actor(), prompt, label, split=manage.parse_split(raw.split())))
    flash(error or f"Label {label} points at version {raw}.", "error" if error else "info")
    return redirect(url_for("admin.prompt_detail", prompt_id=prompt.id), 303)


def _document(version: PromptVersion) -> list[str]:
    """A version as lines to compare: its text, then its variables, tools and parameters as JSON."""
    lines = version.text.splitlines()
    for name in ("variables", "tools", "params"):
        value = getattr(version, name)
        if value:
            lines += ["", f"# {name}"] + json.dumps(value, indent=2, sort_keys=True).splitlines()
    return lines


@bp.get("/prompts/<int:prompt_id>/diff")
@admin_required
def prompt_diff(prompt_id: int):
    """A unified diff between any two versions (text, variables, tools and parameters)."""
    prompt = db.get_or_404(Prompt, prompt_id)
    a = _version_or_404(prompt, request.args.get("a"))
    b = _version_or_404(prompt, request.args.get("b"))
    lines = list(difflib.unified_diff(_document(a), _document(b), f"{prompt.slug}@{a.version}",
                                      f"{prompt.slug}@{b.version}", lineterm="", n=3))
    rows = [(_line_class(line), line) for line in lines]
    template = "_diff.html" if hx_target() == "diff" else "diff.html"
    return render_template(f"admin/prompt_library/{template}", prompt=prompt, a=a, b=b, rows=rows)


def _line_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")


def _variable_fields(version: PromptVersion) -> list[tuple[str, str]]:
    """(name, default) for every variable the text uses."""
    defaults = version.variables or {}
    return [(name, "" if name not in defaults else str(defaults[name])) for name in P.variables_in(version.text)]


@bp.get("/prompts/<int:prompt_id>/preview")
@admin_required
def prompt_preview(prompt_id: int):
    """The text with variables filled exactly as a request would fill them (blank fields use defaults)."""
    prompt = db.get_or_404(Prompt, prompt_id)
    version = _version_or_404(prompt, request.args.get("version") or prompt.live_version or prompt.latest_version)
    values = {name: request.args[f"var_{name}"] for name, _ in _variable_fields(version)
              if request.args.get(f"var_{name}")}
    try:
        rendered, error = P.render(version.text, values, version.variables), None
    except P.PromptError as exc:
        rendered, error = None, str(exc)
    template = "_preview.html" if hx_target() == "preview" else "preview.html"
    return render_template(f"admin/prompt_library/{template}", prompt=prompt, version=version, rendered=rendered,
                           error=error, fields=_variable_fields(version), values=values)


# -- playground --------------------------------------------------------------------------------------
@bp.get("/playground")
@admin_required
def playground():
    """Pick a model, a prompt and version, type a message; the answer streams in (see static/js/app.js)."""
    return render_template("admin/prompt_library/playground.html", chosen=request.args, **_choices())


def _choices() -> dict:
    """Chat models and prompts to pick from."""
    return {"models": db.session.scalars(sa.select(Model.slug).where(Model.enabled, Model.kind == "chat")
                                         .order_by(Model.slug)).all(),
            "prompts": db.session.scalars(sa.select(Prompt).where(Prompt.latest_version > 0)
                                          .order_by(Prompt.slug)).all()}


PLAYGROUND_DIALECTS = {"chat": lambda: OpenAIDialect("chat"), "responses": ResponsesDialect,
                       "messages": AnthropicDialect}


def _playground_body(data, api: str) -> dict:
    """The body a client of the chosen API would send for the playground's fields."""
    def text(name: str) -> str:
        return str(data.get(name) or "").strip()

    model = text("model")
    if text("prompt"):
        model += ":" + text("prompt") + (f"@{text('version')}" if text("version") else "")
    message = data.get("message") or ""
    if api == "responses":
        body = {"model": model, "input": message, "stream": True, "store": False}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": message}], "stream": True}
        if api == "messages":
            body["max_tokens"] = PLAYGROUND_MAX_TOKENS
    variables = data.get("variables")
    if isinstance(variables, str) and variables.strip():
        try:
            variables = orjson.loads(variables)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "Variables must be a JSON object.", param="prompt_variables") from None
    if variables:
        body["prompt_variables"] = variables
    return body


def _principal():
    """The logged-in admin as a caller: their own model and prompt access, no key (key_id stays empty)."""
    user = db.session.get(User, current_user.id)
    return principal_from(ApiKey(id=None, user_id=user.id), user)


def _start(gw, call, data):
    """The /v1 pipeline as the logged-in admin in the chosen API's dialect, with a closing stats event."""
    api = str(data.get("api") or "chat")
    if api not in PLAYGROUND_DIALECTS:
        raise GatewayError(400, f"Unknown API `{api[:20]}`: choose chat, responses or messages.", param="api")
    call.inbound = "openai" if api == "chat" else PLAYGROUND_DIALECTS[api]().name
    body = _playground_body(data, api)
    gw.catalog.refresh()
    call.principal = _principal()
    events = pipeline.run(gw, call, PLAYGROUND_DIALECTS[api](), body)

    def rest():
        yield from events
        yield b"event: stats\ndata: " + orjson.dumps(_stats(call)) + b"\n\n"

    return rest()


def _stats(call) -> dict:
    usage = call.usage or {}
    latency = call.row()["latency_ms"]
    return {"request_id": call.request_id, "model": call.serving.slug,
            "prompt": call.prompt.slug if call.prompt else None,
            "version": call.version.version if call.version else None, "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"), "estimated": call.usage_estimated, "cost": call.cost,
            "latency_ms": latency, "ttft_ms": call.ttft_ms, "status": call.status}


@bp.post("/playground/run")
@admin_required
def playground_run():
    """Run one streamed chat call as the logged-in admin, through the same path as /v1, logged as them."""
    gw = current_app.extensions["promptproxy"]
    call = Call(endpoint=PLAYGROUND_ENDPOINT, client_ip=request.remote_addr)
    data = request.get_json(silent=True) if request.is_json else request.form
    try:
        if not isinstance(data, dict) and not hasattr(data, "get"):
            raise GatewayError(400, "The request body must be a JSON object.")
        stream = _start(gw, call, data)
    except GatewayError as err:
        call.fail(err)
        gw.record(call)  # once: a call the pipeline already recorded is not recorded again
        if request.is_json:
            return current_app.response_class(orjson.dumps(openai_body(err)), status=err.status,
                                              mimetype="application/json")
        flash(err.message, "error")
        return redirect(url_for("admin.playground", **{k: v for k, v in data.items() if k != "csrf_token"}), 303)
    if request.is_json:
        return stream_response(stream, {"x-request-id": call.request_id})
    return _answer_page(stream, data)


def _answer_page(stream, data):
    """Without JavaScript: wait for the whole answer and show it on the page."""
    text, stats, error = [], {}, None
    for frame in stream:
        for event in frame.split(b"\n\n"):
            name, payload = _event(event)
            if name == "stats":
                stats = payload
            elif payload is not None:
                piece, failed = answer_text(payload)
                text.append(piece)
                error = failed or error
    return render_template("admin/prompt_library/playground.html", answer="".join(text), stats=stats, error=error,
                           chosen=data, **_choices())


def _event(raw: bytes) -> tuple[str, dict | None]:
    """(event name, JSON data) of one SSE frame; data None when it is not a JSON object."""
    name, data = "message", b""
    for line in raw.split(b"\n"):
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data += line[6:]
    try:
        payload = orjson.loads(data) if data.startswith(b"{") else None
    except orjson.JSONDecodeError:
        payload = None
    return name, payload if isinstance(payload, dict) else None


def answer_text(event: dict) -> tuple[str, str | None]:
    """(text, error message) carried by one streamed event of any dialect (static/js/app.js does the same)."""
    if isinstance(event.get("error"), dict):
        return "", event["error"].get("message")
    kind = event.get("type")
    if kind == "response.output_text.delta":
        return str(event.get("delta") or ""), None
    if kind == "response.failed":
        return "", ((event.get("response") or {}).get("error") or {}).get("message")
    if kind == "content_block_delta" and (event.get("delta") or {}).get("type") == "text_delta":
        return str(event["delta"].get("text") or ""), None
    return "".join(str((c.get("delta") or {}).get("content") or "") for c in event.get("choices") or ()
                   if isinstance(c, dict)), None
