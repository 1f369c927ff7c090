"""The settings registry: every setting the code reads, declared once with its type, default and one-line help.

`config.py` loads them (defaults, the settings file, PROMPTPROXY_* variables); docs/configuration.md's table is
generated from here (`make docs-config`); tests/test_settings_registry.py fails on a read of an undeclared name.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One setting: `PROMPTPROXY_<name>` in the environment, `<name>` in the instance's promptproxy.toml."""

    name: str
    type: type  # bool, int, float or str: what environment strings and file values are coerced to
    default: object
    help: str  # one line, for the docs table
    shown: str = ""  # the default as the docs show it, when the value alone would mislead (None, "", derived)


S = Setting
_CLAUDE_CODE_BETAS = ("claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
                      "mid-conversation-tool-changes-2026-07-01,thinking-token-count-2026-05-13,"
                      "advanced-tool-use-2025-11-20,effort-2025-11-24,fine-grained-tool-streaming-2025-05-14,"
                      "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11,token-counting-2024-11-01")

SETTINGS: tuple[Setting, ...] = (
    # -- storage and secrets
    S("DATABASE_URL", str, None, "the database, e.g. `postgresql+psycopg://user@host/db`",
      "SQLite in the instance folder"),
    S("SECRET_KEY", str, None, "signs dashboard sessions (32+ characters; required in production)",
      "generated into the instance folder"),
    S("ENCRYPTION_KEY", str, None, "encrypts upstream secrets at rest; must differ from `SECRET_KEY`",
      "generated into the instance folder"),
    S("OLD_ENCRYPTION_KEYS", str, "", "comma-separated previous keys still accepted for decryption (rotation)"),
    S("ENV", str, "development", "`production` refuses to start without strong `SECRET_KEY` and `ENCRYPTION_KEY`"),
    S("REDIS_URL", str, None, "Redis shared by several instances: rate limits, deployment health, response cache"),
    S("REDIS_PREFIX", str, "promptproxy", "prefix of every Redis key, so several deployments can share one Redis"),
    # -- the server
    S("HOST", str, "127.0.0.1", "where `serve` listens"),
    S("PORT", int, 8090, "where `serve` listens"),
    S("THREADS", int, 512, "most waitress threads per worker process (started as needed); each live stream holds one"),
    S("WORKERS", str, "auto", "`serve` processes on one socket: a number, or `auto` (the CPUs this process may use)"),
    S("SHARED_STORE", str, "", "set by `serve` for its workers: the SQLite file they share (limits, breakers, "
      "login throttle); not for users", "set by `serve`"),
    S("MAX_BODY_BYTES", int, 10 * 1024 * 1024, "request body limit (413 above it)"),
    S("CONNECTION_LIMIT", int, 0, "waitress connection limit; 0 = 2 x `THREADS` (at least 100)"),
    S("CHANNEL_TIMEOUT", int, 120, "seconds before waitress closes an idle client connection"),
    S("OUTBUF_HIGH_WATERMARK", int, 1024 * 1024, "bytes buffered for a slow reader before its stream waits"),
    S("SHUTDOWN_GRACE", float, 30.0, "seconds SIGTERM waits for in-flight requests and streams"),
    S("TRUSTED_PROXIES", int, 0, "number of proxies in front whose `X-Forwarded-For` is trusted"),
    S("ALLOW_PRIVATE_UPSTREAMS", bool, False, "allow provider and webhook URLs on loopback and private networks"),
    # -- upstream calls
    S("CONNECT_TIMEOUT", float, 5.0, "seconds to connect to an upstream (providers may override)"),
    S("FIRST_BYTE_TIMEOUT", float, 60.0, "seconds an upstream has for its first byte (providers may override)"),
    S("IDLE_TIMEOUT", float, 90.0, "seconds an upstream stream may pause (providers may override)"),
    S("TOTAL_TIMEOUT", float, 600.0, "seconds an upstream call may take in all (providers may override)"),
    S("MAX_RESPONSE_BYTES", int, 64 * 1024 * 1024, "largest upstream answer (502 above it)"),
    S("MAX_EVENT_BYTES", int, 8 * 1024 * 1024, "largest upstream server-sent event (502 `bad_upstream_response`)"),
    S("DEFAULT_MAX_TOKENS", int, 4096, "`max_tokens` sent to upstreams that need one and reserved for budgets"),
    S("ANTHROPIC_BETA_ALLOW", str, _CLAUDE_CODE_BETAS, "`anthropic-beta` flags clients may pass to Anthropic "
      "providers (others are dropped)", "Claude Code's flags, prompt caching, token counting"),
    S("ANTHROPIC_MCP_SERVERS", bool, False, "let clients send `mcp_servers` (Anthropic's MCP connector)"),
    # -- retries, breakers, deployments
    S("RETRY_MAX", int, 2, "retries per model before the first byte (then the fallbacks)"),
    S("RETRY_BACKOFF", float, 0.5, "seconds before the first retry, doubling, with jitter"),
    S("RETRY_BACKOFF_MAX", float, 8.0, "longest wait between retries, in seconds"),
    S("RETRY_AFTER_CAP", float, 20.0, "a longer upstream `Retry-After` is passed on instead of waited for"),
    S("BREAKER_THRESHOLD", int, 1, "0 turns circuit breakers off (other values are ignored)"),
    S("BREAKER_MIN_REQUESTS", int, 10, "requests within the window before a provider's breaker may open (0 = off)"),
    S("BREAKER_FAILURE_RATE", float, 0.5, "share of those requests that must fail (connect, timeout, 5xx) to open it"),
    S("BREAKER_WINDOW", float, 30.0, "seconds of requests the breaker looks at"),
    S("BREAKER_COOLDOWN", float, 30.0, "seconds open before one half-open probe (then one per cool-down)"),
    S("BREAKER_MIN_KEYS", int, 2, "distinct API keys whose requests got 5xx before those count toward opening"),
    S("DEPLOYMENT_EJECT_AFTER", int, 3, "consecutive failures that eject a deployment of a model"),
    S("DEPLOYMENT_EJECT_SECONDS", float, 10.0, "seconds of a first ejection, doubling with each ejection in a row"),
    S("DEPLOYMENT_EJECT_MAX_SECONDS", float, 300.0, "longest ejection, and longest pause after an upstream 429"),
    # -- response cache
    S("RESPONSE_CACHE_MAX_ENTRY_BYTES", int, 256 * 1024, "an answer larger than this is not cached"),
    S("RESPONSE_CACHE_MAX_BYTES", int, 64 * 1024 * 1024, "database cache: oldest entries dropped above this total"),
    S("RESPONSE_CACHE_PRUNE_EVERY", int, 100, "database cache: writes between two prunings (expired, then oldest)"),
    # -- limits
    S("LIMITS_ENABLED", bool, True, "`false` installs the no-op limiter: no RPM, TPM, concurrency or budgets"),
    S("LIMITS_FAIL_OPEN", bool, True, "Redis unreachable: admit without rate limits (`false`: 503 + `Retry-After`)"),
    S("LIMITS_RETRY_SECONDS", float, 5.0, "after a Redis error: seconds limit checks skip Redis, and the 503's "
      "`Retry-After`"),
    # -- request log and catalog
    S("LOG_BODIES", bool, False, "store request and response bodies in the request log"),
    S("LOG_FLUSH_INTERVAL", float, 0.2, "seconds between request-log writes"),
    S("LOG_BATCH_SIZE", int, 500, "request-log rows per database write"),
    S("LOG_QUEUE_MAX", int, 50_000, "queued log rows before requests wait for the database (backpressure)"),
    S("RETENTION_DAYS", int, 0, "prune request-log rows older than this (roll-ups are kept); 0 = keep forever"),
    S("CACHE_TTL", float, 1.0, "seconds between checks for configuration changes (revoked keys, access lists)"),
    # -- operations
    S("METRICS_TOKEN", str, "", "when set, `GET /metrics` needs `Authorization: Bearer <token>`; "
      "unset, it answers on a loopback listener only"),
    S("ACCESS_LOG", bool, True, "one JSON line per request on stderr (logger `promptproxy.access`)"),
    # -- dashboard
    S("SESSION_COOKIE_SECURE", bool, False, "send the dashboard cookie over HTTPS only (set `true` behind TLS)"),
    S("SESSION_IDLE_MINUTES", int, 30, "dashboard sessions end after this many idle minutes"),
    S("SESSION_MAX_HOURS", int, 12, "dashboard sessions end this many hours after login at the latest"),
    S("LOGIN_MAX_FAILURES", int, 10, "login attempts per (email, client address) per 15 minutes (a success resets)"),
    S("LOGIN_HASH_CONCURRENCY", int, 2, "password checks at once in the instance (scrypt takes ~128 MiB each)"),
    S("LOGIN_HASH_WAIT", float, 10.0, "seconds a login waits for a check slot before a 429"),
    # -- alerts by webhook
    S("ALERT_BUDGET_THRESHOLDS", str, "50,80,100", "percentages of a user's or key's budget that alert, once each"),
    S("ALERT_ERROR_RATE", float, 0.2, "share of a model's answers with status >= 500 that alerts"),
    S("ALERT_ERROR_WINDOW", float, 300.0, "seconds of the request log the error rate looks at (one alert per window)"),
    S("ALERT_ERROR_MIN_REQUESTS", int, 20, "requests within the window before the error rate counts"),
    S("ALERT_KEY_EXPIRY_DAYS", int, 7, "days before an API key expires that it is announced"),
    S("ALERT_CHECK_INTERVAL", float, 60.0, "seconds between error-rate and key-expiry checks in each instance"),
    S("ALERT_POLL_INTERVAL", float, 1.0, "seconds between looks at the outbox (a new event wakes it at once)"),
    S("ALERT_MAX_ATTEMPTS", int, 8, "deliveries tried this often, then marked failed"),
    S("ALERT_RETRY_BACKOFF", float, 10.0, "seconds before the first retry of a delivery, doubling"),
    S("ALERT_RETRY_BACKOFF_MAX", float, 3600.0, "longest wait between delivery retries, in seconds"),
    S("ALERT_TIMEOUT", float, 10.0, "seconds a receiver has to answer"),
    # -- single sign-on (OpenID Connect); on when ISSUER, CLIENT_ID and CLIENT_SECRET are set
    S("OIDC_ISSUER", str, "", "the OpenID Provider's issuer URL"),
    S("OIDC_CLIENT_ID", str, "", "this gateway's client id at the provider"),
    S("OIDC_CLIENT_SECRET", str, "", "this gateway's client secret at the provider"),
    S("OIDC_ALLOWED_DOMAINS", str, "", "comma-separated email domains whose unknown users are created as members"),
    S("OIDC_LINK_DOMAINS", str, "", "further domains whose verified emails may sign in as the existing user "
      "(`*`: any)"),
    S("OIDC_GROUPS_CLAIM", str, "", "a claim listing group names: memberships of existing groups follow it"),
    S("OIDC_ADMIN_GROUP", str, "", "a name in that claim that makes the user an admin (its absence, a member)"),
    S("OIDC_SCOPES", str, "openid email profile", "scopes asked of the provider"),
    S("OIDC_NAME", str, "", "the button's \"Sign in with …\"", "the issuer's host"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

BEGIN = "<!-- settings:begin (generated from promptproxy/settings.py by `make docs-config`; do not edit) -->"
END = "<!-- settings:end -->"
_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def shown_default(setting: Setting) -> str:
    """The default as the docs table shows it."""
    if setting.shown:
        return setting.shown
    value = setting.default
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if setting.name.endswith(("_BYTES", "_WATERMARK")) and value >= 1024:
        size, unit = (value / 1024**2, "MiB") if value >= 1024**2 else (value / 1024, "KiB")
        return f"`{value}` ({size:g} {unit})"
    return f"`{value}`"


def markdown_table() -> str:
    """The docs table of every setting, in declaration order."""
    lines = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{s.name}` | {_TYPES[s.type]} | {shown_default(s)} | {s.help} |" for s in SETTINGS]
    return "\n".join(lines)


def splice(text: str) -> str:
    """`text` with the table between its BEGIN and END markers replaced by the registry's."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing")
    return f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"
