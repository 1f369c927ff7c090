"""PromptProxy: a self-hosted LLM gateway with stored system prompts."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, redirect

from . import config as cfgmod
from .extensions import ApiAwareSessionInterface, LazyExtensions, csrf, db, login

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: configuration, extensions, blueprints, hooks."""
    app = Flask(__name__, instance_path=os.environ.get("PROMPTPROXY_INSTANCE_PATH") or str(ROOT / "instance"),
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    # As flaskr does: the instance file, or the test's own settings (so a developer's file never leaks into tests).
    settings = cfgmod.from_env(file_settings=cfgmod.from_file(Path(app.instance_path)) if test_config is None else None)
    settings.update(test_config or {})
    settings = cfgmod.finalize(settings, Path(app.instance_path))
    app.config.from_mapping(settings)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings["DATABASE_URL"],
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings["DATABASE_URL"]),
        MAX_CONTENT_LENGTH=settings["MAX_BODY_BYTES"],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
        JSON_SORT_KEYS=False,
    )
    app.extensions = LazyExtensions(app, app.extensions)  # Flask-Migrate is bound when a `db` command needs it
    db.init_app(app)
    login.init_app(app)
    app.session_interface = ApiAwareSessionInterface()
    csrf.init_app(app)

    from .core.catalog import install_revision_hook
    from .proxy.gateway import Gateway

    install_revision_hook()
    app.extensions["promptproxy"] = Gateway(app)
    register_blueprints(app)
    from . import ops

    ops.install(app)
    logging.getLogger("promptproxy").setLevel(logging.INFO)
    return app


def register_blueprints(app: Flask) -> None:
    """API at /v1 (CSRF-exempt, bearer auth); the dashboard at /admin."""
    from .api import hooks, messages, responses  # noqa: F401  (they add /v1/messages and /v1/responses)
    from .api.openapi import bp as openapi_bp
    from .api.routes import bp as api_bp

    csrf.exempt(api_bp)
    app.register_blueprint(api_bp, url_prefix="/v1")
    hooks.install(app)
    app.register_blueprint(openapi_bp)  # GET /openapi.json
    from .api.mcp import bp as mcp_bp

    csrf.exempt(mcp_bp)
    app.register_blueprint(mcp_bp)  # /mcp: the MCP gateway
    try:
        from .admin import bp as admin_bp
    except ModuleNotFoundError as exc:  # a missing dashboard is tolerated; a broken one must fail loudly
        if exc.name != "promptproxy.admin":
            raise
        admin_bp = None
    if admin_bp is not None:
        app.register_blueprint(admin_bp, url_prefix="/admin")

    @app.get("/_/")
    def original_admin():
        """The original project's dashboard path."""
        return redirect("/admin", 302)

    @app.get("/healthz")
    def healthz():
        """Alive."""
        return {"status": "ok"}


def engine_options(url: str) -> dict:
    """SQLite: WAL, busy timeout, foreign keys on every connection; others: pre-ping."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 40}
