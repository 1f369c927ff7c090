"""The dashboard blueprint (HTML, Flask-Login sessions, CSRF); other modules add routes to `bp`."""
from __future__ import annotations

import importlib.util

from flask import Blueprint

bp = Blueprint("admin", __name__)

# Route modules register on `bp` when imported; prompt_library (the rich prompt editor) is optional.
from . import (  # noqa: E402, F401
    audit,
    auth,
    deployments,
    groups,
    keys,
    llm_models,
    mcp_servers,
    oidc,
    overview,
    prompts,
    providers,
    requests_log,
    security,
    users,
    webhooks,
)

# Only a missing prompt_library module is tolerated; an error inside it still raises.
if importlib.util.find_spec(f"{__name__}.prompt_library") is not None:
    from . import prompt_library  # noqa: F401
