"""Every module has a layer, layers point one way, and no module imports itself back: imports inside functions count."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = "promptproxy"
PACKAGE = Path(__file__).resolve().parent.parent / ROOT

# Lower = lower layer; a module may import its own layer or lower, never higher. An entry names a module or a whole
# package; the most specific entry wins; `promptproxy` names the package's own __init__ (create_app), nothing else.
SHARED, ADAPTERS, DATA, FEATURES, LIFECYCLE, CALLERS, EDGE = range(7)
RANKS = {
    # Types and plumbing every layer uses. proxy/tags.py is pure tag rules that manage.py uses to check a key's
    # default tags: it belongs in core/, ranked here until it moves (pipeline.py, which imports it, is in flux).
    SHARED: ("promptproxy.core", "promptproxy.models", "promptproxy.extensions", "promptproxy.crypto",
             "promptproxy.netguard", "promptproxy.config", "promptproxy.settings", "promptproxy.proxy.tags"),
    # One wire each: upstream providers, upstream HTTP, MCP servers' JSON-RPC, and the dialects' pure translations
    # and envelopes (the dialect classes that plan a call are CALLERS below).
    ADAPTERS: ("promptproxy.providers", "promptproxy.transport", "promptproxy.mcp.client", "promptproxy.dialects"),
    # The one audited place that changes stored data (manage and its siblings), and the reads over it.
    DATA: ("promptproxy.manage", "promptproxy.groups", "promptproxy.mcp.servers", "promptproxy.sso",
           "promptproxy.declarative", "promptproxy.rotation", "promptproxy.rollups", "promptproxy.stats"),
    # What the lifecycle calls or hosts: none of them imports the lifecycle.
    FEATURES: ("promptproxy.routing", "promptproxy.ratelimit", "promptproxy.observe", "promptproxy.cache",
               "promptproxy.alerts", "promptproxy.mcp", "promptproxy.dialects.responses_store"),
    LIFECYCLE: ("promptproxy.proxy",),
    # What drives the lifecycle: a dialect builds the pipeline's Plan (proxy.pipeline, resolve, inject); the MCP
    # hub scrubs upstream text with proxy.send and its calls are meant to run through the lifecycle too. So they
    # sit above it, not with the adapters and features their packages otherwise hold.
    CALLERS: ("promptproxy.dialects.openai", "promptproxy.dialects.anthropic", "promptproxy.dialects.responses",
              "promptproxy.mcp.hub"),
    # HTTP, the command line and the server process.
    EDGE: ("promptproxy", "promptproxy.api", "promptproxy.admin", "promptproxy.errors", "promptproxy.ops",
           "promptproxy.cli", "promptproxy.cli_common", "promptproxy.cli_webhook", "promptproxy.server",
           "promptproxy.workers", "promptproxy.shutdown", "promptproxy.wsgierrors", "promptproxy.internals"),
}


def rank(module: str) -> int | None:
    """The layer of a module (the most specific entry wins); None when no entry covers it."""
    best = None
    for level, entries in RANKS.items():
        for entry in entries:
            covers = module == entry or (entry != ROOT and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[1]):
                best = (level, len(entry))
    return best[0] if best else None


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of a package tree by dotted name (a package by its own name, for its __init__)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that a module imports anywhere in it, in functions too (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == ROOT or m.startswith(ROOT + ".")}


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, itself left out."""
    return {n: {m for m in imports(n, p, known) if m in known and m != n} for n, p in known.items()}


def upward(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each ranked module that imports a higher layer, with those imports."""
    out = {}
    for name, targets in graph.items():
        mine = rank(name)
        higher = sorted(m for m in targets if mine is not None and (rank(m) or 0) > mine)
        if higher:
            out[name] = higher
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (a -> ... -> a), each shortest from its first module, none through a module already reported.

    A module importing its own package is no cycle: `from . import bp` reads the blueprint that the package's
    __init__ defines before it imports its modules. The root package is not exempt: it is the app factory."""
    edges = {n: {m for m in ts if m == ROOT or n.rsplit(".", 1)[0] != m} for n, ts in graph.items()}
    found: list[list[str]] = []
    for start in sorted(edges):
        trail = _path_back(edges, start)
        if trail and not any(set(trail) & set(c) for c in found):
            found.append(trail)
    return found


def _path_back(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import path from `start` back to itself (breadth-first), or None."""
    parents: dict[str, str] = {}
    queue, seen = [start], {start}
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                trail = [node]
                while trail[-1] != start:
                    trail.append(parents[trail[-1]])
                return [*reversed(trail), start]
            if nxt not in seen:
                seen.add(nxt)
                parents[nxt] = node
                queue.append(nxt)
    return None


MODULES = modules()
GRAPH = import_graph(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_layer_and_imports_none_above_it(name):
    mine = rank(name)
    assert mine is not None, f"{name} has no layer: add it (or its package) to RANKS in tests/test_layers.py"
    higher = upward({name: GRAPH[name]}).get(name)
    assert not higher, f"{name} (layer {mine}) imports a higher layer: {higher}"


def test_no_import_cycles_counting_imports_inside_functions():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def plant(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    """A throwaway `promptproxy` tree with these files (every folder a package); its import graph."""
    package = tmp_path / ROOT
    for rel, text in {"__init__.py": "", **files}.items():
        path = package / rel
        for folder in path.relative_to(package).parents:
            (package / folder).mkdir(parents=True, exist_ok=True)
            (package / folder / "__init__.py").touch()
        path.write_text(text)
    return import_graph(modules(package))


def test_the_checker_catches_an_upward_import_inside_a_function(tmp_path):
    graph = plant(tmp_path, {
        "api/errors.py": "def error_response():\n    pass\n",
        "providers/bad.py": "def render():\n    from ..api.errors import error_response\n    return error_response\n",
        "providers/good.py": "from ..core.errors import GatewayError\n",
        "core/errors.py": "class GatewayError(Exception):\n    pass\n",
    })
    assert upward(graph) == {"promptproxy.providers.bad": ["promptproxy.api.errors"]}


def test_the_checker_catches_a_cycle_through_a_function_level_import(tmp_path):
    graph = plant(tmp_path, {
        "manage.py": "from .mcp import servers\n",
        "mcp/servers.py": "def grant():\n    from ..manage import audit\n    return audit\n",
        # The blueprint pattern is no cycle: the package defines `bp` before it imports its modules.
        "admin/__init__.py": "bp = object()\nfrom . import audit  # noqa\n",
        "admin/audit.py": "from . import bp\n",
    })
    assert cycles(graph) == [["promptproxy.manage", "promptproxy.mcp.servers", "promptproxy.manage"]]


def test_the_checker_does_not_exempt_the_app_factory_from_cycles(tmp_path):
    graph = plant(tmp_path, {
        "__init__.py": "def create_app():\n    from . import server\n    return server\n",
        "server.py": "def serve():\n    from promptproxy import create_app\n    return create_app\n",
    })
    assert cycles(graph) == [["promptproxy", "promptproxy.server", "promptproxy"]]


def test_a_new_package_has_no_layer_until_placed_and_a_new_module_takes_its_package_s(tmp_path):
    graph = plant(tmp_path, {"billing/invoices.py": "", "routing/weights.py": ""})
    assert sorted(m for m in graph if rank(m) is None) == ["promptproxy.billing", "promptproxy.billing.invoices"]
    assert rank("promptproxy.routing.weights") == FEATURES
