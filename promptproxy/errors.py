"""HTML error pages for the dashboard (the API has its own JSON errors)."""
from __future__ import annotations

from flask import g, render_template
from jinja2 import TemplateNotFound
from werkzeug.exceptions import HTTPException

TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          413: "Request too large", 429: "Too many requests", 500: "Something went wrong"}


def html_error(status: int, exc: HTTPException | None = None):
    """A small error page in the dashboard's style (a redirect or other response passes through)."""
    if exc is not None and exc.code is not None and exc.code < 400:
        return exc
    title = TITLES.get(status, exc.name if exc else "Error")
    message = exc.description if exc is not None and status != 500 else None
    try:
        body = render_template("errors/error.html", status=status, title=title, message=message,
                               request_id=g.get("request_id"))
    except TemplateNotFound:
        body = f"<!doctype html><title>{status} {title}</title><h1>{status} {title}</h1>"
    return body, status
