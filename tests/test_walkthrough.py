"""The README's walk-through, typed in a second shell as written: no variable exported, the settings file that
`make run` writes is all the CLI needs to register a loopback upstream; a production instance still refuses it.

The only stand-ins: PROMPTPROXY_INSTANCE_PATH points at a temporary folder instead of the checkout's instance/
(so a developer's data is never touched), and free ports replace 9300 and 8090.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from promptproxy import config

from .conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
WALK = README.split("## Five-minute walk-through")[1].split("## Concepts")[0]


def sh_blocks(text: str) -> list[str]:
    """The ```sh code blocks of a Markdown text."""
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def step(number: int) -> str:
    """The text of walk-through step NUMBER."""
    return WALK.split(f"**{number}. ")[1].split(f"**{number + 1}. ")[0]


def second_shell(instance: Path) -> dict:
    """`source .venv/bin/activate` in a fresh terminal: the venv first on PATH, no PROMPTPROXY_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=sys.prefix,
               PROMPTPROXY_INSTANCE_PATH=str(instance))
    return env


def listening(port: int) -> bool:
    """Something accepts connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True


def bash(env: dict, script: str) -> subprocess.CompletedProcess:
    """Run lines as a person would type them, stopping at the first failure."""
    return subprocess.run(["bash", "-c", "set -eo pipefail\n" + script], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def mock_upstream():
    """The README's own mock (bench/mock_upstream.py) on a free port instead of 9300."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "bench/mock_upstream.py", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: listening(port), 20), f"mock upstream on port {port} did not start"
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_make_run_settings_let_the_walk_through_run_as_written(tmp_path, mock_upstream):
    env = second_shell(tmp_path / "instance")
    made = subprocess.run(["make", "-s", "dev-settings"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)  # what `make run` writes before serving
    assert made.returncode == 0, made.stderr
    assert config.from_file(tmp_path / "instance") == {"ALLOW_PRIVATE_UPSTREAMS": True}
    assert bash(env, "promptproxy db upgrade").returncode == 0

    mock_block = next(b for b in sh_blocks(step(1)) if "9300" in b)
    typed = "\n".join([mock_block.replace("9300", str(mock_upstream)), *sh_blocks(step(2)), *sh_blocks(step(3)),
                       'printf "key=%s\\n" "$PP_KEY"'])
    assert "export PP_KEY=" in typed  # the README says where $PP_KEY comes from
    done = bash(env, typed)
    assert done.returncode == 0, done.stderr
    assert "base URL points at" not in done.stderr
    key = re.search(r"^key=(pp-\S+)$", done.stdout, re.M).group(1)

    port = free_port()
    server = subprocess.Popen(["promptproxy", "serve", "--port", str(port), "--threads", "8"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: listening(port), 20), f"server on port {port} did not start"
        requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).raise_for_status()
        call_env = {**env, "PP_KEY": key}
        curl = sh_blocks(step(4))[0].replace("8090", str(port))
        answer = bash(call_env, curl)
        assert answer.returncode == 0 and '"content":"tok tok' in answer.stdout, answer.stdout + answer.stderr
        sdk = re.search(r"```python\n(.*?)```", step(4), re.S).group(1).replace("8090", str(port))
        ran = subprocess.run([sys.executable, "-c", sdk], env=call_env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("tok tok") and "gpt-4o-mini:translator" in ran.stdout
    finally:
        server.terminate()
        server.communicate(timeout=30)
    log = bash(env, sh_blocks(step(6))[0])
    assert log.returncode == 0 and log.stdout.startswith("TIME (UTC)")
    assert re.search(r"Z  alice  gpt-4o-mini:translator@1 +/v1/chat/completions +200 ", log.stdout), log.stdout


def test_production_without_the_settings_file_still_refuses_loopback_upstreams(tmp_path):
    env = {**second_shell(tmp_path / "data"), "PROMPTPROXY_ENV": "production",
           "PROMPTPROXY_SECRET_KEY": "s" * 40, "PROMPTPROXY_ENCRYPTION_KEY": "e" * 40}
    assert bash(env, "promptproxy db upgrade").returncode == 0
    mock_block = next(b for b in sh_blocks(step(1)) if "9300" in b)
    refused = bash(env, mock_block)
    assert refused.returncode == 1
    assert "base URL points at a private or special address" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert bash(env, "promptproxy provider list").stdout == ""


def test_a_set_variable_wins_over_the_settings_file(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / config.SETTINGS_FILE).write_text("ALLOW_PRIVATE_UPSTREAMS = true\n")
    env = {**second_shell(instance), "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "0"}
    assert bash(env, "promptproxy db upgrade").returncode == 0
    refused = bash(env, "promptproxy provider create mock --base-url http://127.0.0.1:9300/v1")
    assert refused.returncode == 1 and "private or special address" in refused.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("ALLOW_PRIVATE_UPSTREAM = true\n", "unknown setting 'ALLOW_PRIVATE_UPSTREAM'"),
    ("ALLOW_PRIVATE_UPSTREAMS = \"maybe\"\n", "ALLOW_PRIVATE_UPSTREAMS: expected a boolean, got 'maybe'"),
    ("PORT = \"eighty\"\n", "PORT: invalid literal"),
    ("ALLOW_PRIVATE_UPSTREAMS = \n", "Invalid value"),
])
def test_a_bad_settings_file_is_a_one_line_error_naming_it(tmp_path, text, message):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / config.SETTINGS_FILE).write_text(text)
    with pytest.raises(config.ConfigError, match=re.escape(message)) as raised:
        config.from_file(instance)
    assert str(instance / config.SETTINGS_FILE) in str(raised.value)


def test_a_bad_settings_file_stops_every_command_with_exit_2(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / config.SETTINGS_FILE).write_text("NOPE = 1\n")
    done = bash(second_shell(instance), "promptproxy user list")
    assert done.returncode == 2 and "unknown setting 'NOPE'" in done.stderr and "Traceback" not in done.stderr


def test_typed_settings_from_the_file(tmp_path):
    (tmp_path / config.SETTINGS_FILE).write_text('PORT = 9000\nCONNECT_TIMEOUT = 2\nLOG_BODIES = "on"\n')
    assert config.from_file(tmp_path) == {"PORT": 9000, "CONNECT_TIMEOUT": 2.0, "LOG_BODIES": True}
    assert config.from_file(tmp_path / "absent") == {}
