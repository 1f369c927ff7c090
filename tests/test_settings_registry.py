"""One settings registry: every setting the code reads is declared, every declared one is read, the docs follow it.

The scanner reads promptproxy/ with `ast`: a key written as a constant in UPPER_SNAKE_CASE, read by subscript or by
`.get`/`.setdefault`/`.pop` on anything but the process environment, is a read of the app config, whatever the
config object is called where it is read (`cfg`, `config`, `app.config`, `current_app.config`, `defaults`, ...).
A key that is not a constant, read from an object that is evidently the config, cannot be checked and fails too.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from promptproxy import config, settings
from promptproxy.settings import BY_NAME, SETTINGS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "promptproxy"
DOCS = ROOT / "docs" / "configuration.md"
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Objects read with UPPER_CASE keys that are not the app config.
NOT_CONFIG = frozenset({"os.environ", "environ"})
# Names that are the config wherever they appear (a non-constant key on these cannot be checked). Constant keys are
# found on any name (catalog.py's `defaults`, __init__.py's `settings`); `defaults[name]` is often a plain dict.
CONFIG_NAMES = frozenset({"cfg", "config"})
# Flask's and its extensions' own keys: reading them is reading the framework's settings, not ours.
FRAMEWORK = frozenset(Flask.default_config)
FRAMEWORK_PREFIXES = ("SQLALCHEMY_", "WTF_")
# Declared settings that no code of ours reads, and why that is right.
READ_ELSEWHERE = {"SESSION_COOKIE_SECURE": "Flask reads it for the dashboard's session cookie"}
# PROMPTPROXY_* variables the docs name that are not settings of the app.
NOT_SETTINGS = {
    "INSTANCE_PATH": "locates the instance folder, so it is read before the settings file can be",
    "TEST_DATABASE_URL": "the test suite's PostgreSQL", "TEST_REDIS_URL": "the test suite's Redis",
    "REQUIRE_AGENTS": "the test suite: fail instead of skipping without the agent CLIs",
    "SKIP_UPGRADE": "the Docker entrypoint's, not the app's",
    "KEY": "a client-side variable in docs/agents.md (the gateway key an agent sends)",
}


@dataclass(frozen=True)
class Read:
    """One read of the app config: the name (None when not a constant) and where."""

    name: str | None
    where: str


def _is_config(node: ast.expr) -> bool:
    """Whether an expression is evidently the app config: `cfg`, `config`, `<anything>.config`, ..."""
    if isinstance(node, ast.Name):
        return node.id in CONFIG_NAMES
    return isinstance(node, ast.Attribute) and node.attr == "config"


def config_reads(source: str, filename: str = "<string>") -> list[Read]:
    """Every read of the app config in a module's source."""
    reads = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            receiver, key = node.value, node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "setdefault", "pop") and node.args):
            receiver, key = node.func.value, node.args[0]
        else:
            continue
        if ast.unparse(receiver) in NOT_CONFIG:
            continue
        where = f"{filename}:{node.lineno}"
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            if NAME.match(key.value):
                reads.append(Read(key.value, where))
        elif _is_config(receiver) and not isinstance(key, ast.Constant | ast.Slice):
            reads.append(Read(None, f"{where}: {ast.unparse(node)}"))
    return reads


TEMPLATE_READ = re.compile(r"\bconfig(?:\.get\(\s*|\[\s*|\.)['\"]?([A-Z][A-Z0-9_]*)")


def template_reads(text: str, filename: str) -> list[Read]:
    """Reads of `config` in a Jinja template (`config.X`, `config["X"]`, `config.get("X")`)."""
    return [Read(m.group(1), f"{filename}:{text.count(chr(10), 0, m.start()) + 1}")
            for m in TEMPLATE_READ.finditer(text)]


def all_reads() -> list[Read]:
    """Every config read in promptproxy/ (the registry's loader may read names it loops over) and templates/."""
    reads = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        found = config_reads(path.read_text(encoding="utf-8"), rel)
        reads += [r for r in found if r.name is not None or path.name != "config.py"]
    for path in sorted((ROOT / "templates").rglob("*.html")):
        reads += template_reads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return reads


def problems(reads: list[Read], declared=BY_NAME) -> list[str]:
    """Reads of undeclared settings and reads that cannot be checked, one line each."""
    out = []
    for read in reads:
        if read.name is None:
            out.append(f"{read.where}: a setting read by a computed name; read it by its literal name")
        elif read.name not in declared and read.name not in FRAMEWORK and not read.name.startswith(FRAMEWORK_PREFIXES):
            out.append(f"{read.where}: {read.name} is read but not declared in promptproxy/settings.py")
    return out


# -- the scanner itself --------------------------------------------------------------------------------------------
PLANTED = '''
import os
from flask import current_app

def build(app, cfg, gw, config, name):
    a = cfg.get("PLANTED_A", 3)
    b = app.config["PLANTED_B"]
    c = current_app.config.get("PLANTED_C")
    d = gw.app.config["PLANTED_D"]
    e = config.setdefault("PLANTED_E", 1)
    f = int(defaults["PLANTED_F"]) + settings.get("PLANTED_G", 0)
    home = os.environ.get("PLANTED_ENV") or os.environ["PLANTED_ENV2"]
    app.config["PLANTED_WRITTEN"] = 1
    lower = cfg.get("lowercase_key")
    dynamic = cfg[name]
    also = app.config.get(name.upper())
    return a, b, c, d, e, f, home, lower, dynamic, also
'''


def test_the_scanner_finds_every_form_of_config_read_in_a_planted_module():
    reads = config_reads(PLANTED, "planted.py")
    assert sorted(r.name for r in reads if r.name) == [f"PLANTED_{c}" for c in "ABCDEFG"]
    dynamic = [r.where for r in reads if r.name is None]
    assert len(dynamic) == 2 and "cfg[name]" in dynamic[0] and "app.config.get(name.upper())" in dynamic[1]


def test_a_planted_undeclared_read_fails_naming_the_setting_and_the_line():
    reads = config_reads('def f(cfg):\n    return cfg.get("RETRY_MAX"), cfg.get("NOT_A_SETTING", 1)\n', "m.py")
    assert problems(reads) == ["m.py:2: NOT_A_SETTING is read but not declared in promptproxy/settings.py"]
    reads = config_reads("def f(cfg, n):\n    return cfg[n]\n", "m.py")
    assert problems(reads) == ["m.py:2: cfg[n]: a setting read by a computed name; read it by its literal name"]


def test_the_scanner_finds_reads_in_templates():
    text = '<p>{{ config.OIDC_NAME }}</p>\n{% if config["LOG_BODIES"] %}{{ config.get("PLANTED_T") }}{% endif %}'
    assert [(r.name, r.where) for r in template_reads(text, "t.html")] == [
        ("OIDC_NAME", "t.html:1"), ("LOG_BODIES", "t.html:2"), ("PLANTED_T", "t.html:2")]


def test_the_scanner_sees_the_reads_of_the_real_code():
    names = {r.name for r in all_reads()}
    # One of each form: cfg.get, app.config[...], current_app.config[...], a parameter named `defaults`.
    assert {"DEPLOYMENT_EJECT_AFTER", "OIDC_SCOPES", "RETENTION_DAYS", "FIRST_BYTE_TIMEOUT"} <= names


# -- the real code ----------------------------------------------------------------------------------------------------
def test_every_setting_the_code_reads_is_declared():
    found = problems(all_reads())
    assert not found, "\n".join(found)


def test_every_declared_setting_is_read_somewhere():
    read = {r.name for r in all_reads()}
    dead = sorted(s.name for s in SETTINGS if s.name not in read and s.name not in READ_ELSEWHERE)
    assert not dead, f"declared in promptproxy/settings.py but never read (remove them, or say why): {dead}"
    stale = sorted(name for name in READ_ELSEWHERE if name in read or name not in BY_NAME)
    assert not stale, f"READ_ELSEWHERE lists settings that are read here or not declared: {stale}"


def test_the_registry_is_well_formed():
    assert len(BY_NAME) == len(SETTINGS), "a setting is declared twice"
    for s in SETTINGS:
        assert NAME.match(s.name), s.name
        assert s.type in (bool, int, float, str), s.name
        assert s.default is None or type(s.default) is s.type, f"{s.name}: default {s.default!r} is not {s.type}"
        assert s.help and "\n" not in s.help and "|" not in s.help, f"{s.name}: help must be one line, no `|`"
    assert config.DEFAULTS == {s.name: s.default for s in SETTINGS}


# -- every declared name is accepted, typed, from both sources ------------------------------------------------------
SAMPLES = {bool: ("yes", True), int: ("7", 7), float: ("2.5", 2.5), str: ("some-value", "some-value")}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_setting_is_accepted_typed_from_the_environment_and_the_file(setting, tmp_path):
    raw, value = SAMPLES[setting.type]
    assert config.from_env({f"PROMPTPROXY_{setting.name}": raw})[setting.name] == value
    toml_value = {bool: "true", int: "7", float: "2.5", str: '"some-value"'}[setting.type]
    (tmp_path / config.SETTINGS_FILE).write_text(f"{setting.name} = {toml_value}\n")
    assert config.from_file(tmp_path) == {setting.name: value}


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("DEPLOYMENT_EJECT_AFTER", "three", "PROMPTPROXY_DEPLOYMENT_EJECT_AFTER: invalid literal for int()"),
    ("LIMITS_RETRY_SECONDS", "soon", "PROMPTPROXY_LIMITS_RETRY_SECONDS: could not convert string to float"),
    ("LIMITS_ENABLED", "maybe", "PROMPTPROXY_LIMITS_ENABLED: expected a boolean, got 'maybe'"),
])
def test_a_bad_value_in_the_environment_is_an_error_naming_the_variable(name, raw, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.from_env({f"PROMPTPROXY_{name}": raw})


@pytest.mark.parametrize(("text", "message"), [
    ("RESPONSE_CACHE_MAX_BYTES = 1.5\n", "RESPONSE_CACHE_MAX_BYTES: invalid literal for int()"),
    ('DEPLOYMENT_EJECT_SECONDS = "long"\n', "DEPLOYMENT_EJECT_SECONDS: could not convert string to float"),
    ('OIDC_LINK_DOMAINS = ["a.example", "b.example"]\n',
     "OIDC_LINK_DOMAINS: expected a string, got ['a.example', 'b.example'] (a list is one comma-separated string)"),
    ("RESPONSE_CACHE_PRUNE_EVERY = {every = 3}\n", "RESPONSE_CACHE_PRUNE_EVERY: expected a whole number"),
    ("ALERTS_WORKER = true\n", "unknown setting 'ALERTS_WORKER'"),  # declared once, never read: removed
])
def test_a_bad_value_in_the_file_is_an_error_naming_the_file_and_the_setting(tmp_path, text, message):
    (tmp_path / config.SETTINGS_FILE).write_text(text)
    with pytest.raises(config.ConfigError, match=re.escape(message)) as raised:
        config.from_file(tmp_path)
    assert str(tmp_path / config.SETTINGS_FILE) in str(raised.value)


def test_an_unknown_variable_is_not_a_setting():
    assert "NOT_A_SETTING" not in config.from_env({"PROMPTPROXY_NOT_A_SETTING": "1"})


# -- the docs ---------------------------------------------------------------------------------------------------------
def test_the_docs_table_is_the_one_the_registry_generates():
    text = DOCS.read_text(encoding="utf-8")
    assert settings.splice(text) == text, (
        "docs/configuration.md's settings table differs from promptproxy/settings.py: run `make docs-config`")


def test_the_table_lists_every_setting_with_its_type_and_default():
    table = settings.markdown_table().splitlines()
    assert len(table) == 2 + len(SETTINGS)
    row = next(line for line in table if line.startswith("| `DEPLOYMENT_EJECT_AFTER` |"))
    assert row == ("| `DEPLOYMENT_EJECT_AFTER` | integer | `3` | consecutive failures that eject a deployment of a "
                   "model |")
    assert "| `LIMITS_FAIL_OPEN` | boolean | `true` |" in settings.markdown_table()
    assert "| `REDIS_URL` | string | unset |" in settings.markdown_table()


def test_splice_keeps_the_prose_and_refuses_a_file_without_markers():
    text = f"before\n{settings.BEGIN}\nold table\n{settings.END}\nafter\n"
    assert settings.splice(text) == f"before\n{settings.BEGIN}\n{settings.markdown_table()}\n{settings.END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        settings.splice("no markers here")


def test_the_script_prints_the_table_and_rewrites_a_stale_one(capsys, monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("docs_config", ROOT / "scripts" / "docs_config.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--print"]) == 0
    assert capsys.readouterr().out.strip() == settings.markdown_table()
    stale = tmp_path / "docs" / "configuration.md"  # a copy: the test never writes the checkout's docs
    stale.parent.mkdir()
    stale.write_text(f"# Title\n\nprose\n{settings.BEGIN}\n| old |\n{settings.END}\n\nmore prose\n")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.setattr(script, "DOCS", stale)
    assert script.main([]) == 0
    assert capsys.readouterr().out.strip() == "docs/configuration.md: updated"
    assert stale.read_text() == (f"# Title\n\nprose\n{settings.BEGIN}\n{settings.markdown_table()}\n{settings.END}"
                                 "\n\nmore prose\n")
    assert script.main([]) == 0
    assert capsys.readouterr().out.strip() == "docs/configuration.md: unchanged"


def _documented_names() -> dict[str, str]:
    """Setting names the docs mention: every PROMPTPROXY_* and the first column of settings tables."""
    found = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        header = ""
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            for name in re.findall(r"PROMPTPROXY_([A-Z0-9_]+)", line):
                found.setdefault(name, where)
            if not line.startswith("|"):
                header = ""
                continue
            if not header:  # a table's first row names its columns
                header = line.split("|")[1].strip().lower()
                continue
            if header.startswith(("variable", "setting")):
                for name in re.findall(r"`(?:PROMPTPROXY_)?([A-Z][A-Z0-9_]+)`", line.split("|")[1]):
                    found.setdefault(name, where)
    return found


def test_every_setting_the_docs_name_is_declared():
    documented = _documented_names()
    assert {"DEPLOYMENT_EJECT_AFTER", "ALERT_TIMEOUT", "LIMITS_ENABLED", "SESSION_IDLE_MINUTES"} <= set(documented)
    unknown = [f"{where}: {name}" for name, where in documented.items() if name not in BY_NAME
               and name not in NOT_SETTINGS]
    assert not unknown, "the docs name settings that are not declared:\n" + "\n".join(unknown)
