"""Configuration: defaults, then the instance settings file, then PROMPTPROXY_* variables, then test overrides."""
from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

# The instance settings file (TOML, the names below without the PROMPTPROXY_ prefix). `make run` writes a
# development one allowing local upstreams, so the server and every CLI command in another shell agree.
SETTINGS_FILE = "promptproxy.toml"

DEFAULTS = {
    "DATABASE_URL": None,  # default: SQLite in the instance folder
    "SECRET_KEY": None,
    "ENCRYPTION_KEY": None,
    "OLD_ENCRYPTION_KEYS": "",  # comma-separated keys still accepted for decryption (rotation)
    "REDIS_URL": None,
    "HOST": "127.0.0.1",
    "PORT": 8090,
    "THREADS": 512,  # per worker process (started as needed): a burst of streams may split unevenly over workers
    "WORKERS": "auto",  # `serve` processes on one socket: a number, or auto = the CPUs this process may use
    "SHARED_STORE": "",  # set by the supervisor: SQLite file shared by its workers (limits, breakers, throttle)
    "MAX_BODY_BYTES": 10 * 1024 * 1024,
    "CONNECT_TIMEOUT": 5.0,
    "FIRST_BYTE_TIMEOUT": 60.0,
    "IDLE_TIMEOUT": 90.0,
    "TOTAL_TIMEOUT": 600.0,
    "RETRY_MAX": 2,  # retries per model before the first byte (then the fallbacks)
    "RETRY_BACKOFF": 0.5,  # first backoff in seconds, doubling, with jitter
    "RETRY_BACKOFF_MAX": 8.0,
    "RETRY_AFTER_CAP": 20.0,  # a longer upstream Retry-After is passed on instead of waited for
    "BREAKER_THRESHOLD": 1,  # 0 switches circuit breakers off (the old setting; other values are ignored)
    "BREAKER_MIN_REQUESTS": 10,  # answers within BREAKER_WINDOW before a provider's breaker may open (0 = off)
    "BREAKER_FAILURE_RATE": 0.5,  # share of those answers that must be failures (connect, timeout, 5xx)
    "BREAKER_WINDOW": 30.0,  # seconds of answers the breaker looks at
    "BREAKER_COOLDOWN": 30.0,  # seconds open before one half-open probe (then one per cool-down)
    # anthropic-beta flags a client may turn on (others are dropped): what Claude Code sends, prompt caching and
    # token counting. Flags can enable paid features the price table does not cover, hence a list.
    "ANTHROPIC_BETA_ALLOW": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
                            "mid-conversation-tool-changes-2026-07-01,thinking-token-count-2026-05-13,"
                            "advanced-tool-use-2025-11-20,effort-2025-11-24,fine-grained-tool-streaming-2025-05-14,"
                            "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11,token-counting-2024-11-01",
    "ANTHROPIC_MCP_SERVERS": False,  # let clients send `mcp_servers` (Anthropic's MCP connector) on /v1/messages
    "MAX_RESPONSE_BYTES": 64 * 1024 * 1024,
    "MAX_EVENT_BYTES": 8 * 1024 * 1024,  # one upstream server-sent event (502 bad_upstream_response above it)
    "CONNECTION_LIMIT": 0,  # waitress connection_limit; 0 = 2 x THREADS (at least 100)
    "CHANNEL_TIMEOUT": 120,  # waitress: idle client connections closed after this many seconds
    "OUTBUF_HIGH_WATERMARK": 1024 * 1024,  # waitress: a slow reader blocks its stream beyond this many bytes
    "LOG_BODIES": False,
    "ALLOW_PRIVATE_UPSTREAMS": False,
    "ENV": "development",
    "CACHE_TTL": 1.0,
    "LOG_FLUSH_INTERVAL": 0.2,
    "LOG_BATCH_SIZE": 500,
    "DEFAULT_MAX_TOKENS": 4096,
    "LIMITS_FAIL_OPEN": True,
    "REDIS_PREFIX": "promptproxy",  # key prefix, so several deployments (or test runs) can share one Redis
    "RETENTION_DAYS": 0,  # prune request-log rows older than this (roll-ups are kept); 0 = keep forever
    "LOG_QUEUE_MAX": 50_000,  # queued log rows before requests wait for the database (backpressure)
    "METRICS_TOKEN": "",  # when set, GET /metrics needs `Authorization: Bearer <token>`
    "ACCESS_LOG": True,  # one JSON line per request on stderr (logger promptproxy.access)
    "SHUTDOWN_GRACE": 30.0,  # seconds SIGTERM waits for in-flight requests and streams
    "TRUSTED_PROXIES": 0,
    "SESSION_COOKIE_SECURE": False,
    "SESSION_IDLE_MINUTES": 30,  # dashboard: idle timeout
    "SESSION_MAX_HOURS": 12,  # dashboard: absolute session lifetime
    "LOGIN_MAX_FAILURES": 10,  # dashboard: login attempts per (email, IP) per 15 minutes (a success resets)
    "LOGIN_HASH_CONCURRENCY": 2,  # dashboard: password checks at once (scrypt takes ~128 MiB each)
    "LOGIN_HASH_WAIT": 10.0,  # dashboard: seconds a login waits for a check slot before a 429
    # Alerts by webhook (docs/alerts.md)
    "ALERTS_WORKER": True,  # run the delivery thread (it starts with `serve`, or when an event is queued)
    "ALERT_BUDGET_THRESHOLDS": "50,80,100",  # percent of a user's or key's budget that fires an alert, once each
    "ALERT_ERROR_RATE": 0.2,  # share of a model's answers with status >= 500 that fires an alert
    "ALERT_ERROR_WINDOW": 300.0,  # seconds of the request log the error rate looks at (one alert per window)
    "ALERT_ERROR_MIN_REQUESTS": 20,  # requests within the window before the rate counts
    "ALERT_KEY_EXPIRY_DAYS": 7,  # alert this many days before an API key expires
    "ALERT_CHECK_INTERVAL": 60.0,  # seconds between error-rate and key-expiry checks in each instance
    "ALERT_POLL_INTERVAL": 1.0,  # seconds between looks at the outbox
    "ALERT_MAX_ATTEMPTS": 8,  # deliveries tried this often, then marked failed
    "ALERT_RETRY_BACKOFF": 10.0,  # seconds before the first retry, doubling, at most ALERT_RETRY_BACKOFF_MAX
    "ALERT_RETRY_BACKOFF_MAX": 3600.0,
    "ALERT_TIMEOUT": 10.0,  # seconds a receiver has to answer
    # dashboard single sign-on (OpenID Connect, docs/sso.md); on when ISSUER, CLIENT_ID and CLIENT_SECRET are set
    "OIDC_ISSUER": "",
    "OIDC_CLIENT_ID": "",
    "OIDC_CLIENT_SECRET": "",
    "OIDC_ALLOWED_DOMAINS": "",  # comma-separated email domains whose unknown users are created as members
    # further domains whose verified emails may sign in as the existing user with that email (`*`: any domain);
    # the allowed domains always may. Outside both, SSO never signs in as an existing user (a password admin included)
    "OIDC_LINK_DOMAINS": "",
    "OIDC_GROUPS_CLAIM": "",  # a claim listing group names: memberships of existing groups follow it
    "OIDC_ADMIN_GROUP": "",  # a name in that claim that makes the user an admin (and its absence a member)
    "OIDC_SCOPES": "openid email profile",
    "OIDC_NAME": "",  # the button's "Sign in with …" (default: the issuer's host)
}

_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class ConfigError(RuntimeError):
    """Configuration that the server refuses to start with."""


def _coerce(default, raw: str):
    """Parse an environment string to the type of its default."""
    if isinstance(default, bool):
        if raw.lower() not in _BOOL:
            raise ConfigError(f"expected a boolean, got {raw!r}")
        return _BOOL[raw.lower()]
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def from_file(instance: Path) -> dict:
    """Settings from the instance folder's promptproxy.toml (none when it does not exist), typed like the defaults."""
    path = instance / SETTINGS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out = {}
    for name, value in data.items():
        if name not in DEFAULTS:
            raise ConfigError(f"{path}: unknown setting {name!r} (names are those of PROMPTPROXY_* without the prefix)")
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        try:
            out[name] = _coerce(DEFAULTS[name], raw)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{path}: {name}: {exc}") from None
    return out


def from_env(environ=os.environ, file_settings: dict | None = None) -> dict:
    """Read PROMPTPROXY_* variables over the settings file and the defaults, typed like the defaults."""
    cfg = {**DEFAULTS, **(file_settings or {})}
    for name, default in DEFAULTS.items():
        raw = environ.get(f"PROMPTPROXY_{name}")
        if raw is None or raw == "":
            continue
        try:
            cfg[name] = _coerce(default, raw)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"PROMPTPROXY_{name}: {exc}") from None
    return cfg


def _instance_secret(instance: Path, name: str) -> str:
    """Read or create a development secret kept in the instance folder (created 0600, never readable by others)."""
    path = instance / name
    instance.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made earlier, or by another process starting at the same moment
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def finalize(cfg: dict, instance: Path) -> dict:
    """Fill derived settings; refuse weak secrets in production."""
    if not cfg["DATABASE_URL"]:
        instance.mkdir(parents=True, exist_ok=True)
        cfg["DATABASE_URL"] = f"sqlite:///{instance / 'promptproxy.db'}"
    production = cfg["ENV"] == "production"
    for name in ("SECRET_KEY", "ENCRYPTION_KEY"):
        value = cfg[name]
        if production and (not value or len(value) < 32):
            raise ConfigError(
                f"PROMPTPROXY_{name} must be set to at least 32 random characters in production "
                f"(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not value:
            cfg[name] = _instance_secret(instance, name.lower())
    if cfg["SECRET_KEY"] == cfg["ENCRYPTION_KEY"]:
        raise ConfigError("PROMPTPROXY_ENCRYPTION_KEY must differ from PROMPTPROXY_SECRET_KEY")
    cfg["OLD_ENCRYPTION_KEYS"] = old_keys(cfg.get("OLD_ENCRYPTION_KEYS"))
    return cfg


def old_keys(value) -> tuple[str, ...]:
    """PROMPTPROXY_OLD_ENCRYPTION_KEYS as a tuple: a comma-separated string or a list."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(k.strip() for k in items if k and k.strip())
