"""What every CLI command module shares: the audit actor, one transaction per change, and safe output."""
from __future__ import annotations

import functools
import re
from datetime import datetime

import click
import orjson

from .extensions import db
from .manage import ManageError

ACTOR = "cli"


def committed(fn):
    """Run a change in one transaction; ManageError becomes a one-line error and exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            db.session.commit()
            return result
        except ManageError as exc:
            db.session.rollback()
            raise click.ClickException(printable(exc)) from None

    return wrapper


# C0 and C1 controls, line and paragraph separators, zero-width and bidirectional overrides: stored text (a model
# name a client sent, a description) could otherwise forge output lines or rewrite the terminal.
UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    return NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable(value) -> str:
    """Text with every control character shown as an escape (\\n, \\x1b, \\u2028): one value, one line."""
    return UNSAFE_CHARS.sub(_escape, str(value))


def say(*fields, err: bool = False) -> None:
    """Print plain-text fields, tab-separated, each with its control characters escaped."""
    click.echo("\t".join(printable(f) for f in fields), err=err)


def to_json(obj) -> str:
    """One JSON line; database times are naive UTC, so they are written with a `Z` (2026-01-02T03:04:05.678Z)."""
    return orjson.dumps(obj, default=str, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z).decode()


def utc(when: datetime | None) -> str:
    """A database time for a person: 2026-01-02T03:04:05Z (always UTC, and saying so)."""
    return f"{when:%Y-%m-%dT%H:%M:%S}Z" if when else "-"


def row(obj: dict, as_json: bool, *fields) -> None:
    """One listed item: a JSON object, or tab-separated plain-text fields."""
    if as_json:
        click.echo(to_json(obj))
    else:
        say(*fields)


def table(headers: tuple[str, ...], rows: list[tuple], numeric: tuple[int, ...] = ()) -> None:
    """Aligned plain-text columns under a header (each cell escaped; the `numeric` columns right-aligned)."""
    cells = [[printable(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = [i in numeric for i in range(len(headers))]

    def line(values) -> str:
        padded = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True))
        return "  ".join(padded).rstrip()

    click.echo(line(headers))
    for r in cells:
        click.echo(line(r))


def emit(obj, as_json: bool) -> None:
    """Print a dict as JSON or as aligned `key: value` lines."""
    if as_json:
        click.echo(to_json(obj))
    else:
        for key, value in obj.items():
            say(f"{key}: {value}")


def json_option(fn):
    """--json flag."""
    return click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")(fn)
