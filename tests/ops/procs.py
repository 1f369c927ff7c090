"""Run `python -m promptproxy.cli serve` as a real subprocess on a free port against a test database."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..conftest import ENC_KEY, free_port

ROOT = Path(__file__).resolve().parents[2]


def server_env(db_url: str, instance: Path, **extra: str) -> dict:
    """Environment for a gateway process sharing the test database and encryption key."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTPROXY_DATABASE_URL": db_url,
           "PROMPTPROXY_ENCRYPTION_KEY": ENC_KEY, "PROMPTPROXY_SECRET_KEY": "test-secret-key-0123456789abcdefgh",
           "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1", "PROMPTPROXY_INSTANCE_PATH": str(instance)}
    env.update(extra)
    return env


class Server:
    """One gateway process; stderr goes to a file the test can read."""

    def __init__(self, env: dict, log_path: Path, threads: int = 16, workers: int | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "promptproxy.cli", "serve", "--port", str(self.port), "--threads", str(threads),
             *(["--workers", str(workers)] if workers else [])],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return
            except (requests.ConnectionError, requests.Timeout):  # workers bind late: the socket is bound first
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("gateway did not start:\n" + log_path.read_text()) from None
                time.sleep(0.05)

    def output(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
