"""Layers point one way: HTTP edge -> dialects -> pipeline -> provider adapters -> shared types; no import cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "promptproxy"
SHARED = ("promptproxy.core", "promptproxy.core.catalog", "promptproxy.core.usage", "promptproxy.core.sse",
          "promptproxy.core.grammar", "promptproxy.core.prompts", "promptproxy.models", "promptproxy.extensions",
          "promptproxy.crypto", "promptproxy.netguard", "promptproxy.config", "promptproxy.settings")
# Lower rank = lower layer. A module may import its own rank or lower, never higher.
RANKS = [(0, SHARED), (1, ("promptproxy.providers", "promptproxy.mcp.client", "promptproxy.transport")),
         (2, ("promptproxy.proxy", "promptproxy.rollups", "promptproxy.alerts", "promptproxy.mcp",
              "promptproxy.routing", "promptproxy.ratelimit", "promptproxy.observe", "promptproxy.cache")),
         (3, ("promptproxy.dialects",)),
         (4, ("promptproxy.api", "promptproxy.admin", "promptproxy.cli", "promptproxy.cli_webhook"))]


def rank(module: str) -> int | None:
    """The layer of a module (the most specific prefix wins); None for modules outside the layering."""
    best = None
    for level, prefixes in RANKS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    return best[0] if best else None


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The promptproxy modules a module imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("promptproxy")}


MODULES = modules()


@pytest.mark.parametrize("name", sorted(n for n in MODULES if rank(n) is not None))
def test_no_module_imports_a_higher_layer(name):
    mine = rank(name)
    upward = sorted(m for m in imports(name, MODULES[name]) if (rank(m) or 0) > mine)
    assert not upward, f"{name} (layer {mine}) imports a higher layer: {upward}"


def test_no_import_cycles_at_module_level():
    graph = {n: {m for m in imports(n, p, top_level_only=True) if m in MODULES and m != n} for n, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):  # a package importing its own child is fine
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_the_layer_check_sees_a_planted_upward_import(tmp_path):
    """The check itself can fail: a provider importing the edge is caught."""
    path = tmp_path / "bad.py"
    path.write_text("from ..api.errors import error_response\n")
    assert imports("promptproxy.providers.bad", path) == {"promptproxy.api.errors"}
    assert rank("promptproxy.api.errors") > rank("promptproxy.providers.bad")
