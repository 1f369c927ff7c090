"""Run the `promptproxy` command in the test process: the one helper for tests of CLI behaviour.

    from ..cli_runner import run_cli, cli_env   # `from .cli_runner import ...` in tests/ itself

    env = cli_env(db_url, tmp_path / "cli-instance")   # the test database, the test keys
    done = run_cli("user", "create", "alice", env=env)  # fails the test, with the output, unless it exits 0
    assert done.stdout.startswith("created user alice")
    done = run_cli("user", "create", "bad name", env=env, ok=False)   # an error is the point: check it yourself
    assert done.exit_code == 1 and "user name must be" in done.stderr

`run_cli` calls the console script's own entry point, `promptproxy.cli:main` (one-line errors, its exit codes), under
Click's CliRunner, with the environment a subprocess would get: the PROMPTPROXY_* variables in `env` and no others
(the test process's own, e.g. PROMPTPROXY_TEST_DATABASE_URL, are hidden). A `python -m promptproxy.cli` subprocess
costs 1-2.5 s of imports per call; this costs milliseconds.

What a separate process would have kept to itself is put back after every run: os.environ (Flask's CLI sets
FLASK_RUN_FROM_CLI), the working directory, logging (create_app sets levels; `db upgrade` runs Alembic's fileConfig,
which replaces the root handlers), and the app the command built (its threads stopped and its engine disposed, so
SQLite files close and PostgreSQL connections go back). Warnings are written to stderr as Python's last-resort
handler would. The program name is `promptproxy`, as in the console script's `--help`. Like CliRunner it swaps
process-wide state while it runs: one run at a time, from the test's own thread.

It starts no server: `serve` reaching the server fails with an error (start servers as subprocesses,
tests/ops/procs.py). Keep real subprocesses for what needs a process of its own: `serve`, signals, what a fresh
interpreter imports, and the console script itself: `run_console(ARGS, env=...)` runs `.venv/bin/promptproxy` and
returns the same Result (a few smoke tests in tests/test_cli_smoke.py; everything else goes through `run_cli`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

from .conftest import ENC_KEY

ROOT = Path(__file__).resolve().parent.parent
PROG = "promptproxy"
SECRET_KEY = "test-secret-key-0123456789abcdefgh"


@dataclass(frozen=True)
class Result:
    """A finished run: its exit code and what it printed on each stream (and on both, in order)."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    output: str

    def __str__(self) -> str:
        return (f"`{PROG} {' '.join(self.args)}` exited {self.exit_code}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


def cli_env(db_url: str, instance: Path | str, **extra: str) -> dict[str, str]:
    """PROMPTPROXY_* settings for the test database with the test keys (as tests/conftest.py's app uses)."""
    return {"PROMPTPROXY_DATABASE_URL": str(db_url), "PROMPTPROXY_SECRET_KEY": SECRET_KEY,
            "PROMPTPROXY_ENCRYPTION_KEY": ENC_KEY, "PROMPTPROXY_INSTANCE_PATH": str(instance), **extra}


def process_env(env: dict | None = None) -> dict[str, str]:
    """The whole environment for a subprocess (`serve`, the console script): this one without its PROMPTPROXY_*
    variables, the checkout on PYTHONPATH, then `env`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}
    out.update(PYTHONPATH=str(ROOT), **(env or {}))
    return out


def run_cli(*args, env: dict | None = None, ok: bool = True, input=None) -> Result:
    """Run `promptproxy ARGS` in-process with the PROMPTPROXY_* settings in `env`; with `ok`, fail unless it exits 0."""
    from promptproxy import cli as cli_module

    args = tuple(str(a) for a in args)
    overrides = {k: None for k in os.environ if k.startswith("PROMPTPROXY_")}  # only what the test passed
    overrides.update(env or {})
    apps: list = []
    saved_env, saved_logging = dict(os.environ), _logging_state()
    try:
        with contextlib.ExitStack() as stack:
            out, err, mixed = stack.enter_context(CliRunner().isolation(input=input, env=overrides, color=False))
            stack.enter_context(contextlib.chdir(ROOT))
            stack.enter_context(mock.patch.object(sys, "argv", [PROG, *args]))
            stack.enter_context(mock.patch.object(cli_module, "create_app", partial(_recorded, apps,
                                                                                   cli_module.create_app)))
            stack.enter_context(mock.patch.object(cli_module.cli, "main", partial(cli_module.cli.main, args=list(args),
                                                                                 prog_name=PROG)))
            stack.enter_context(mock.patch("promptproxy.server.serve", _no_server))
            _last_resort_to(sys.stderr)
            code = _exit_code(cli_module.main)
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        _restore_logging(saved_logging)
        os.environ.clear()
        os.environ.update(saved_env)
        for app in apps:
            _close(app)
    result = Result(args, code, *(s.getvalue().decode("utf-8", "replace") for s in (out, err, mixed)))
    if ok:
        assert result.exit_code == 0, str(result)
    return result


def run_console(*args, env: dict | None = None, ok: bool = True) -> Result:
    """Run the installed console script (`.venv/bin/promptproxy ARGS`) as a real process: for the few smoke tests of
    the script itself (tests/test_cli_smoke.py); `output` is stdout then stderr."""
    script = Path(sys.executable).parent / PROG
    assert script.exists(), f"no console script at {script}: install the package (make install-test)"
    args = tuple(str(a) for a in args)
    done = subprocess.run([str(script), *args], env=process_env(env), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    result = Result(args, done.returncode, done.stdout, done.stderr, done.stdout + done.stderr)
    if ok:
        assert result.exit_code == 0, str(result)
    return result


def _recorded(apps: list, create_app, *args, **kwargs):
    """create_app, keeping the app so the helper can close it afterwards."""
    app = create_app(*args, **kwargs)
    apps.append(app)
    return app


def _no_server(*args, **kwargs):
    raise RuntimeError("run_cli starts no server: run `promptproxy serve` as a subprocess (tests/ops/procs.py)")


def _exit_code(main) -> int:
    """What the process would exit with: 0 on return, SystemExit's code, 1 (message on stderr) for a non-int."""
    try:
        main()
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def _last_resort_to(stream) -> None:
    """WARNING and above on the run's stderr, as Python's last-resort handler prints them in a process without logging
    set up (in the test process pytest's own handlers would take them instead). Removed with the restore."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logging.root.addHandler(handler)


def _loggers() -> list[logging.Logger]:
    return [logging.root, *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]


def _logging_state() -> dict:
    """Level, handlers, propagation and disabled flag of every logger."""
    return {lg: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in _loggers()}


def _restore_logging(state: dict) -> None:
    """Put every logger back as it was; loggers made during the run go back to the defaults."""
    for lg in _loggers():
        level, handlers, propagate, disabled = state.get(lg, (logging.NOTSET, [], True, False))
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled


def _close(app) -> None:
    """Stop the app's threads and pools and dispose of its engine (a process would have ended)."""
    from promptproxy.extensions import db

    app.extensions["promptproxy"].close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
