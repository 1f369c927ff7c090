"""docker-compose.yml's command lines, run through the image's entrypoint script outside Docker (no engine here).

Each service's environment comes from the compose file (secrets from a stand-in .env) over the Dockerfile's ENV;
only what names Docker's own network changes: the database (a test one) and Redis (the test one, or none).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from ..conftest import REDIS_URL, free_port, wait_for

pytestmark = pytest.mark.slow  # the image's entrypoint script and `serve` as real processes

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
DOTENV = {"POSTGRES_PASSWORD": "pw-" + "p" * 32, "PROMPTPROXY_SECRET_KEY": "s" * 40,
          "PROMPTPROXY_ENCRYPTION_KEY": "e" * 40}


def image_env() -> dict:
    """The ENV of the Dockerfile's final stage."""
    final = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1].replace("\\\n", " ")
    env = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


def interpolate(value) -> str:
    """Compose's ${NAME:?message} from the stand-in .env."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: DOTENV[m.group(1)], str(value))


@pytest.fixture
def service_env(tmp_path, db_url):
    """service name -> the environment its container would have, pointed at this test's database."""
    if not os.environ.get("PROMPTPROXY_TEST_DATABASE_URL"):
        Path(db_url[len("sqlite:///"):]).unlink()  # an empty database: the migrate service creates the schema

    def make(name: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}
        env.update({k: v for k, v in image_env().items() if k != "PATH"})
        env.update({k: interpolate(v) for k, v in (COMPOSE["services"][name].get("environment") or {}).items()})
        assert "@postgres:5432/" in env.pop("PROMPTPROXY_DATABASE_URL")  # the compose network's database
        env.update(PROMPTPROXY_DATABASE_URL=db_url, PROMPTPROXY_INSTANCE_PATH=str(tmp_path / "data"),
                   PROMPTPROXY_HOST="127.0.0.1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
        env.pop("PROMPTPROXY_REDIS_URL")
        if REDIS_URL:
            env.update(PROMPTPROXY_REDIS_URL=REDIS_URL, PROMPTPROXY_REDIS_PREFIX=f"compose-{free_port()}")
        return env

    return make


def run(env: dict, *argv: str) -> subprocess.CompletedProcess:
    """`docker compose run SERVICE ARGV`: the entrypoint with the service's command line."""
    return subprocess.run([str(ENTRYPOINT), *argv], env=env, cwd=tmp_cwd(env), capture_output=True, text=True,
                          timeout=120)


def tmp_cwd(env: dict) -> str:
    """The image's WORKDIR is the app; outside Docker, a folder of the test's own."""
    path = Path(env["PROMPTPROXY_INSTANCE_PATH"]).parent
    path.mkdir(exist_ok=True)
    return str(path)


def documented_admin_command() -> tuple[str, list[str]]:
    """The `docker compose run --rm SERVICE ...` line the compose file tells users to type."""
    found = re.search(r"docker compose run --rm (\S+) (promptproxy create-admin .*)$", COMPOSE_TEXT, re.M)
    assert found, "docker-compose.yml no longer documents create-admin"
    argv = shlex.split(found.group(2).replace(" E ", " admin@example.com ").replace(" P", " pw-0123456789abc"))
    return found.group(1), argv


def serve(env: dict, *argv: str) -> subprocess.Popen:
    """Start a service's default command (the server); return once /readyz answers 200 and it printed its banner
    (with workers, another worker can answer /readyz before the first one prints it)."""
    env = {**env, "PROMPTPROXY_PORT": str(free_port())}
    log = Path(tmp_cwd(env)) / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ENTRYPOINT), *argv], env=env, cwd=tmp_cwd(env), stdout=out,
                                stderr=subprocess.STDOUT)
    proc.log = log  # what stop() returns
    url = f"http://127.0.0.1:{env['PROMPTPROXY_PORT']}/readyz"

    def ready() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200 and "serving on" in log.read_text()
        except requests.ConnectionError:
            return proc.poll() is not None  # it exited: stop waiting

    if not wait_for(ready, 60) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        pytest.fail("the service did not become ready:\n" + log.read_text())
    return proc


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGTERM as `docker stop` sends it; the exit code and what the process printed."""
    proc.terminate()
    proc.wait(60)
    return proc.returncode, proc.log.read_text()


def test_migrate_then_the_documented_create_admin_then_a_replica_serves(service_env):
    migrate = COMPOSE["services"]["migrate"]
    assert "entrypoint" not in migrate  # the image's entrypoint must stay, so `run migrate CMD` runs CMD
    env = service_env("migrate")
    done = run(env, *migrate["command"])
    assert done.returncode == 0, done.stderr

    service, argv = documented_admin_command()
    created = run(service_env(service), *argv)
    assert created.returncode == 0, created.stderr
    assert "created admin admin <admin@example.com>" in created.stdout

    listed = run(env, "user", "list")  # a bare subcommand goes to promptproxy
    assert listed.returncode == 0 and "admin@example.com" in listed.stdout

    replica = service_env("promptproxy1")
    assert replica["PROMPTPROXY_SKIP_UPGRADE"] == "1" and "command" not in COMPOSE["services"]["promptproxy1"]
    proc = serve(replica)
    code, output = stop(proc)
    assert code == 0, output  # exec'd: the server itself got SIGTERM and drained
    assert "Running upgrade" not in output and "PromptProxy serving on http://127.0.0.1:" in output


def test_docker_run_with_no_command_migrates_an_empty_database_then_serves(service_env):
    env = {k: v for k, v in service_env("promptproxy1").items() if k != "PROMPTPROXY_SKIP_UPGRADE"}
    proc = serve(env, "--threads", "8")  # options only: they go to `serve`
    code, output = stop(proc)
    assert code == 0, output
    assert "threads=8" in output  # "(threads=8)", or "(workers=N, threads=8 each)" on a machine with N cores


def test_a_failing_command_fails_the_run(service_env):
    env = service_env("migrate")
    assert run(env, *COMPOSE["services"]["migrate"]["command"]).returncode == 0
    bad = run(env, "promptproxy", "create-admin", "--email", "x@example.com")
    assert bad.returncode == 2 and "Missing option '--password'" in bad.stderr
