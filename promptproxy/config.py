"""Configuration: defaults, then the instance settings file, then PROMPTPROXY_* variables, then test overrides."""
from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from .settings import BY_NAME, SETTINGS, Setting

# The instance settings file (TOML; the names declared in settings.py, those of PROMPTPROXY_* without the prefix).
# `make run` writes a development one allowing local upstreams, so the server and every CLI command agree.
SETTINGS_FILE = "promptproxy.toml"

# Every setting, with its type and default, is declared once in settings.py; this is the derived name -> default.
DEFAULTS = {s.name: s.default for s in SETTINGS}

_KINDS = {bool: "boolean", int: "whole number", float: "number", str: "string"}
_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class ConfigError(RuntimeError):
    """Configuration that the server refuses to start with."""


def _coerce(setting: Setting, raw: str):
    """Parse an environment string (or a file value as text) to the setting's type."""
    if setting.type is bool:
        if raw.lower() not in _BOOL:
            raise ConfigError(f"expected a boolean, got {raw!r}")
        return _BOOL[raw.lower()]
    return setting.type(raw)


def _from_toml(setting: Setting, value):
    """A settings-file value as the setting's type: scalars as in the environment; arrays and tables refused."""
    if isinstance(value, bool):
        value = str(value).lower()
    elif not isinstance(value, str | int | float):
        raise ConfigError(f"expected a {_KINDS[setting.type]}, got {value!r} (a list is one comma-separated string)")
    return _coerce(setting, str(value))


def from_file(instance: Path) -> dict:
    """Settings from the instance folder's promptproxy.toml (none when it does not exist), typed as declared."""
    path = instance / SETTINGS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out = {}
    for name, value in data.items():
        if name not in BY_NAME:
            raise ConfigError(f"{path}: unknown setting {name!r} (names are those of PROMPTPROXY_* without the prefix)")
        try:
            out[name] = _from_toml(BY_NAME[name], value)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{path}: {name}: {exc}") from None
    return out


def from_env(environ=os.environ, file_settings: dict | None = None) -> dict:
    """Read PROMPTPROXY_* variables over the settings file and the defaults, typed as declared."""
    cfg = {**DEFAULTS, **(file_settings or {})}
    for setting in SETTINGS:
        raw = environ.get(f"PROMPTPROXY_{setting.name}")
        if raw is None or raw == "":
            continue
        try:
            cfg[setting.name] = _coerce(setting, raw)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"PROMPTPROXY_{setting.name}: {exc}") from None
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
