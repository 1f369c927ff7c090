"""Extensions created unbound and bound in create_app."""
from __future__ import annotations

from pathlib import Path

from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base for all models."""


db = SQLAlchemy(model_class=Base)
MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
login = LoginManager()
csrf = CSRFProtect()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_conn, record) -> None:
    """WAL, a busy timeout, NORMAL sync and foreign keys on every SQLite connection."""
    if type(dbapi_conn).__module__.startswith("sqlite3"):
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "busy_timeout=10000", "synchronous=NORMAL", "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()


class LazyExtensions(dict):
    """app.extensions, binding Flask-Migrate on first use: it imports Alembic (~11 MB), which serving never needs.

    Flask-Migrate's commands read `current_app.extensions["migrate"]`; that lookup creates the binding.
    """

    def __init__(self, app, data: dict):
        super().__init__(data)
        self.app = app

    def __missing__(self, key: str):
        if key != "migrate":
            raise KeyError(key)
        from flask_migrate import Migrate

        Migrate(self.app, db, directory=MIGRATIONS_DIR, render_as_batch=True)  # sets self["migrate"]
        return dict.__getitem__(self, "migrate")


class ApiAwareSessionInterface(SecureCookieSessionInterface):
    """No cookie session under /v1: API calls never use it, and opening one signs nothing but costs CPU."""

    def open_session(self, app, request):
        """A null session for the API, the signed cookie session elsewhere."""
        if request.path.startswith("/v1/"):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def save_session(self, app, session, response) -> None:
        """Nothing to save for a null session."""
        if self.is_null_session(session):
            return
        super().save_session(app, session, response)
