"""What a test needs, read from its code: the markers `browser`, `agents`, `slow` and `postgres` (see pyproject).

A test is marked from what its function, the fixtures it uses and the test helpers they call refer to, so a new
test gets its markers without anyone remembering them:

- browser: it uses the shared Chromium (`browser`, `page`) or launches Playwright itself;
- agents: it drives an agent CLI installed under tests/e2e/agents (Codex, Claude Code);
- slow: it starts a process (a `serve` subprocess, the CLI, the OpenID Provider, an agent CLI);
- postgres: it is skipped without PROMPTPROXY_TEST_DATABASE_URL or PROMPTPROXY_TEST_REDIS_URL.
"""
from __future__ import annotations

import functools
import inspect
import subprocess
import types

# Names that mean a process is started or a browser launched, however the code imported them (a function-local
# `import subprocess` leaves no global to resolve).
SPAWN_NAMES = frozenset({"subprocess", "Popen", "check_output", "create_subprocess_exec", "create_subprocess_shell",
                         "multiprocessing"})
BROWSER_NAMES = frozenset({"sync_playwright", "async_playwright"})
SPAWNERS = (subprocess.Popen, subprocess.run, subprocess.call, subprocess.check_call, subprocess.check_output)
BROWSER_FIXTURES = frozenset({"_chromium"})
SERVICE_FIXTURES = frozenset({"redis_prefix"})
SERVICE_VARIABLES = ("PROMPTPROXY_TEST_DATABASE_URL", "PROMPTPROXY_TEST_REDIS_URL")


def code_names(code: types.CodeType) -> set[str]:
    """Every global and attribute name a code object (and the functions and classes nested in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def _ours(obj) -> bool:
    """Test code (helpers, fixtures, servers), as opposed to the product, a library or this reader."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None) or ""
    return (name == "tests" or name.startswith("tests.")) and name != __name__


def _functions(obj) -> list:
    """The plain functions behind a function, a fixture, a method or a class (its methods)."""
    obj = inspect.unwrap(getattr(obj, "_get_wrapped_function", lambda: obj)())
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        found = []
        for member in vars(obj).values():
            member = getattr(member, "__func__", member)
            if isinstance(member, property):
                member = member.fget
            if isinstance(member, types.FunctionType):
                found.append(member)
        return found
    return []


class Reader:
    """Follows what test code refers to, through the test helpers it calls, and says what that needs."""

    def __init__(self, agent_binaries=()):
        self.agent_binaries = {id(b) for b in agent_binaries}
        self._cache: dict[int, frozenset[str]] = {}

    def needs(self, obj, _seen: set[int] | None = None) -> frozenset[str]:
        """The markers that a function, fixture, class or value calls for."""
        seen = _seen if _seen is not None else set()
        if id(obj) in self._cache:
            return self._cache[id(obj)]
        if id(obj) in seen:
            return frozenset()
        seen.add(id(obj))
        found: set[str] = set()
        if id(obj) in self.agent_binaries:
            found.add("agents")
        if obj is subprocess or _spawner(obj):
            found.add("slow")
        if _ours(obj):
            for func in _functions(obj):
                found |= self._function_needs(func, seen)
        result = frozenset(found)
        if _seen is None:
            self._cache[id(obj)] = result
        return result

    def _function_needs(self, func: types.FunctionType, seen: set[int]) -> set[str]:
        names = code_names(func.__code__)
        found = set()
        if names & SPAWN_NAMES:
            found.add("slow")
        if names & BROWSER_NAMES:
            found.add("browser")
        scopes = [func.__globals__]
        for name in names:  # `procs.Server(...)`, `clients.CLAUDE`: look the other names up in that module too
            value = func.__globals__.get(name)
            if isinstance(value, types.ModuleType) and _ours(value):
                scopes.append(vars(value))
        for scope in scopes:
            for name in names & scope.keys():
                value = scope[name]
                if id(value) in self.agent_binaries or value is subprocess or _ours(value) or _spawner(value):
                    found |= self.needs(value, seen)
        return found


def _spawner(value) -> bool:
    try:
        return value in SPAWNERS
    except TypeError:  # an unhashable or oddly comparing value
        return False


def skip_reasons(item) -> str:
    """The reasons of the test's skipif marks, joined (they name the services it needs)."""
    return " ".join(str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif"))


@functools.cache
def agent_binaries() -> tuple:
    """The agent CLIs' paths (tests/e2e/clients.py): code that refers to them drives an agent."""
    from .e2e import clients

    return (clients.CODEX, clients.CLAUDE)


def markers_for(item, reader: Reader) -> set[str]:
    """The markers `item` needs, from its function, its fixtures and their helpers."""
    found = set(reader.needs(getattr(item, "function", None)))
    for name in item.fixturenames:
        if name in BROWSER_FIXTURES:
            found.add("browser")
        if name in SERVICE_FIXTURES:
            found.add("postgres")
        for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
            found |= reader.needs(fixturedef.func)
    if any(variable in skip_reasons(item) for variable in SERVICE_VARIABLES):
        found.add("postgres")
    return found
