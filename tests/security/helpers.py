"""Shared helpers for the security tests: the CLI's settings for the test app, raw HTTP."""
from __future__ import annotations

import socket
from pathlib import Path

from ..cli_runner import process_env

ROOT = Path(__file__).resolve().parents[2]


def app_env(app, **extra) -> dict:
    """PROMPTPROXY_* settings for the CLI (tests/cli_runner.py's run_cli) on the test app's database and keys."""
    env = {
        "PROMPTPROXY_DATABASE_URL": app.config["DATABASE_URL"], "PROMPTPROXY_SECRET_KEY": app.config["SECRET_KEY"],
        "PROMPTPROXY_ENCRYPTION_KEY": app.config["ENCRYPTION_KEY"], "PROMPTPROXY_INSTANCE_PATH": app.instance_path,
        "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli_env(app, **extra) -> dict:
    """The whole environment for a `promptproxy serve` subprocess on the test app's database and keys."""
    return process_env(app_env(app, **extra))


def raw_http(base: str, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are to the live server; return everything it answers."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                out += part
                if b"\r\n\r\n" in out and _complete(out):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def _complete(out: bytes) -> bool:
    head, _, body = out.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_and_body(raw: bytes) -> tuple[int, dict, bytes]:
    """Parse a raw HTTP/1.1 answer into status, lower-cased headers and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
