"""Login, logout, first-run set-up, and the decorators other dashboard modules import."""
from __future__ import annotations

import functools
import hmac
import threading
import time
from collections import deque
from datetime import timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.security import check_password_hash

from .. import manage, sso
from ..core.state import make_state
from ..crypto import hash_key
from ..extensions import db, login
from ..manage import ManageError
from ..models import Setting, User
from . import bp
from .forms import LoginForm, SetupForm

GENERIC_FAILURE = "Wrong email or password, or too many attempts. Try again later."
HASH_LEASE = 60.0  # seconds a password-check slot stays taken by a worker killed mid-check (a check takes < 1 s)
HASH_POLL = 0.02  # seconds between looks for a slot another worker may have freed (a check takes ~0.1-0.5 s)
SETUP_KEY = "setup_token"
# Checked for unknown emails and unusable accounts: same scrypt cost as a real password (manage.set_password), so
# the answer takes as long whether the email exists or not. Its password is unknown; it never matches anything.
DUMMY_HASH = ("scrypt:131072:8:1$zQODQlTnrceP9IPd$9a049f5efb124dc3081c6671b67ac95755052a4dca61dc672fde27dc39908e4"
              "41f246c4befbfe69b2cace4c2e639315be2fe20b2e31fd8b7bc4c22d6182f78cc")


@bp.record_once
def _configure(state) -> None:
    """Session lifetimes (idle via the permanent cookie, absolute via login_at) and the login view."""
    app = state.app
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(minutes=app.config.get("SESSION_IDLE_MINUTES", 30))
    app.extensions["admin_login_throttle"] = throttle_for(app)
    app.extensions["admin_hash_slots"] = hash_slots_for(app.config)


def throttle_for(app):
    """The login throttle, counted in the gateway's shared state: one count for all workers and instances, not N."""
    limit = app.config.get("LOGIN_MAX_FAILURES", 10)
    gateway = app.extensions.get("promptproxy")
    state = gateway.state if gateway is not None else make_state(app)
    if state.kind == "memory":
        return Throttle(limit, 15 * 60)
    from ..core.sharedstore import SharedThrottle

    # A store that fails falls back to this process's count: password login must not depend on Redis.
    return SharedThrottle(state.limits_storage(), limit, 15 * 60, errors=state.errors,
                          fallback=Throttle(limit, 15 * 60))


class Throttle:
    """Failed attempts per (email, IP) in a sliding window; in memory, so per process (a restart forgets)."""

    def __init__(self, limit: int, window: float, max_keys: int = 50_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple, now: float) -> deque:
        hits = self._hits.get(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def blocked(self, key: tuple) -> bool:
        """True when the key has used up its failures."""
        with self._lock:
            return len(self._recent(key, time.monotonic())) >= self.limit

    def attempt(self, key: tuple) -> bool:
        """Count an attempt before it is checked; False when the key has used up its attempts (nothing counted)."""
        with self._lock:
            now = time.monotonic()
            hits = self._recent(key, now)
            if len(hits) >= self.limit:
                return False
            if len(self._hits) >= self.max_keys:
                self._hits.clear()  # bounded memory beats perfect memory under a spray attack
            hits.append(now)
            self._hits[key] = hits
            return True

    def fail(self, key: tuple) -> None:
        """Count one failure."""
        with self._lock:
            now = time.monotonic()
            if len(self._hits) >= self.max_keys:
                self._hits.clear()  # bounded memory beats perfect memory under a spray attack
            hits = self._recent(key, now)
            hits.append(now)
            self._hits[key] = hits

    def reset(self, key: tuple) -> None:
        """Forget a key after a success."""
        with self._lock:
            self._hits.pop(key, None)


def throttle() -> Throttle:
    """This app's login throttle."""
    return current_app.extensions["admin_login_throttle"]


class HashSlots:
    """At most `cap` password checks at once: each scrypt check takes ~128 MiB, so a burst of logins is queued.

    The threads of this process queue on a semaphore. With `shared` (the leases of `serve --workers N`'s shared
    file) a check also needs one of the instance's `cap` leases, so N workers together still hash `cap` at once.
    """

    def __init__(self, cap: int, shared=None):
        self.cap = max(int(cap), 1)
        self._slots = threading.BoundedSemaphore(self.cap)
        self.shared = shared

    def check(self, stored: str, password: str, wait: float) -> bool | None:
        """The password check; None when no slot freed within `wait` seconds (the caller answers 429)."""
        deadline = time.monotonic() + wait
        if not self._slots.acquire(timeout=wait):
            return None
        try:
            lease = self._lease(deadline)
            if lease is None:
                return None
            try:
                return check_password_hash(stored, password)
            finally:
                if self.shared is not None:
                    self.shared.release(lease)
        finally:
            self._slots.release()

    def _lease(self, deadline: float):
        """One of the instance's leases, polled until `deadline` (another process frees it); True when unshared."""
        if self.shared is None:
            return True
        while (lease := self.shared.acquire()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(HASH_POLL, left))
        return lease


def hash_slots_for(cfg) -> HashSlots:
    """Password-check slots for this process, shared with the other workers when there is a shared store.

    The cap bounds one machine's memory, so it is per instance (the workers' shared file), not per Redis: a Redis
    shared by several instances would make their caps one, and make password login (the way in when single sign-on
    is down) depend on Redis.
    """
    cap = max(int(cfg.get("LOGIN_HASH_CONCURRENCY", 2)), 1)
    if not cfg.get("SHARED_STORE"):
        return HashSlots(cap)
    from ..core.sharedstore import SharedSemaphore, shared_file

    return HashSlots(cap, SharedSemaphore(shared_file(cfg["SHARED_STORE"]), "login-hash", cap, HASH_LEASE))


def hash_slots() -> HashSlots:
    """This app's password-check slots."""
    return current_app.extensions["admin_hash_slots"]


@login.user_loader
def load_user(session_id: str) -> User | None:
    """`id:session_version`; a changed version (password change, logout elsewhere) or a disabled user ends it."""
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.lstrip("-").isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.active or user.session_version != int(version):
        return None
    if not user.password_hash and session.get("auth") != "oidc":  # no password: only a single sign-on session
        return None
    max_age = current_app.config.get("SESSION_MAX_HOURS", 12) * 3600
    if time.time() - session.get("login_at", 0) > max_age:
        return None
    return user


@login.unauthorized_handler
def unauthorized():
    """HTML: to the login page; HTMX: 401 with HX-Redirect so the whole page goes there."""
    target = url_for("admin.login", next=request.full_path.rstrip("?") if request.method == "GET" else None)
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Redirect": target}
    return redirect(target)


def login_required(view):
    """Any logged-in dashboard user (admin or member)."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            return unauthorized()
        return view(*args, **kwargs)
    return wrapped


def admin_required(view):
    """Administrators only; members get a 403 page."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            return unauthorized()
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapped


def safe_next(target: str | None) -> str:
    """Only a relative path inside the dashboard, in printable ASCII; anything else goes to the overview."""
    default = url_for("admin.overview")
    if not target or not all(" " < c < "\x7f" for c in target) or "\\" in target:
        return default  # control characters would break the Location header (a 500), or split it
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not (parts.path == "/admin" or parts.path.startswith("/admin/")):
        return default
    if ".." in parts.path.split("/"):
        return default  # /admin/../x leaves the dashboard once the browser resolves it
    return target


def has_admin() -> bool:
    """True once any administrator exists."""
    return db.session.scalar(sa.select(User.id).where(User.role == "admin").limit(1)) is not None


def start_session(user: User) -> None:
    """A fresh session (new CSRF token, nothing carried over from before login)."""
    session.clear()
    login_user(user)
    session["login_at"] = time.time()
    session.permanent = True


@bp.route("/login", methods=["GET", "POST"], endpoint="login")
def login_page():
    """Email and password; one message for every failure, and one password check per attempt, known email or not."""
    form = LoginForm()
    if request.method == "POST" and form.validate_on_submit():
        key = ((form.email.data or "").strip().lower(), request.remote_addr)
        if not throttle().attempt(key):  # counted before the expensive check, so a blocked key costs no hash
            return login_failed(form, 429)
        user = db.session.scalar(sa.select(User).where(User.email == key[0]))
        usable = user is not None and user.active and bool(user.password_hash)
        ok = hash_slots().check(user.password_hash if usable else DUMMY_HASH, form.password.data or "",
                                float(current_app.config.get("LOGIN_HASH_WAIT", 10.0)))
        if ok is None:
            return login_failed(form, 429)
        if ok and usable:
            throttle().reset(key)
            start_session(user)
            return redirect(safe_next(request.args.get("next")), 303)
        return login_failed(form, 429 if throttle().blocked(key) else 401)
    status = 400 if request.method == "POST" else 200
    return render_template("admin/login.html", form=form, setup=not has_admin(), sso=sso_button()), status


def sso_button() -> str | None:
    """The "Sign in with …" name when single sign-on is configured."""
    return sso.button_name(current_app.config) if sso.enabled(current_app.config) else None


def login_failed(form, status: int):
    """The login page with the one generic message."""
    form.form_errors.append(GENERIC_FAILURE)
    return render_template("admin/login.html", form=form, setup=not has_admin(), sso=sso_button()), status


@bp.post("/logout")
def logout():
    """End this session and every other one of this user (the session version moves on)."""
    if current_user.is_authenticated:
        user = db.session.get(User, current_user.id)
        user.session_version = (user.session_version or 0) + 1
        db.session.commit()
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("admin.login"), 303)


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: the one-time token printed by the server creates the first administrator."""
    if has_admin():
        abort(404)
    stored = db.session.get(Setting, SETUP_KEY)
    form = SetupForm()
    if request.method == "POST" and form.validate_on_submit():
        key = ("setup", request.remote_addr)
        given = hash_key(form.token.data or "")
        if stored is None or throttle().blocked(key) or not hmac.compare_digest(given, stored.value):
            throttle().fail(key)
            form.token.errors = ["This set-up token is not valid. Use the one the server printed at start."]
            return render_template("admin/setup.html", form=form, has_token=stored is not None), 403
        try:
            user = manage.create_user("setup", form.name.data, email=form.email.data, role="admin",
                                      password=form.password.data, all_models=True, all_prompts=True)
        except ManageError as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
            return render_template("admin/setup.html", form=form, has_token=True), 422
        db.session.delete(stored)
        db.session.commit()
        start_session(user)
        flash(f"Welcome, {user.name}. You are the first administrator.")
        return redirect(url_for("admin.overview"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("admin/setup.html", form=form, has_token=stored is not None), status


def actor() -> str:
    """The audit name of the logged-in user."""
    return f"web:{current_user.name}"


def is_member() -> bool:
    """True for a logged-in non-admin."""
    return current_user.is_authenticated and not current_user.is_admin

