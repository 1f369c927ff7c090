"""The installed console script as a real process: the few checks every other CLI test leaves to them.

Every other CLI test runs in-process through tests/cli_runner.py's run_cli; these make sure the script the package
installs starts, reaches the database and exits as run_cli says it does.
"""
from __future__ import annotations

import re

import pytest

from .cli_runner import cli_env, run_console

pytestmark = pytest.mark.slow


def test_the_console_script_prints_its_version():
    done = run_console("--version")
    assert re.fullmatch(r"promptproxy \d+\.\d+\.\d+\S*\n", done.stdout) and done.stderr == ""


def test_the_console_script_creates_and_lists_on_the_database(db_url, tmp_path):
    env = cli_env(db_url, tmp_path / "inst")
    assert run_console("user", "create", "alice", "--email", "alice@example.com", env=env).stdout.startswith(
        "created user alice")
    listed = run_console("user", "list", "--json", env=env).stdout
    assert '"name":"alice"' in listed and '"email":"alice@example.com"' in listed


def test_the_console_script_fails_with_one_line_and_a_non_zero_exit(db_url, tmp_path):
    done = run_console("user", "create", "bad name", env=cli_env(db_url, tmp_path / "inst"), ok=False)
    assert done.exit_code == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["Error: user name must be 1-64 characters without spaces, ':' or '@'"]
