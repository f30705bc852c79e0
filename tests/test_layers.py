"""Imports run downward and never in a circle: read from the source, every import (lazy ones too).

Layers, lowest first: the core (``mkt`` but its CLI and organisms), ``mkt.cliargs`` (argument
types over the core), ``mkt.organisms`` (the zoo, training, the organism key), ``analyses``,
then the programs: the demo and ``mkt.cli`` (which dispatches to all of them). Outside the core's own package nothing imports a private (``_``) name of another layer,
and ``bench/`` uses the public API only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "cliargs", "organisms", "analyses", "demo", "cli")
MAY_IMPORT = {
    "core": {"core"},
    "cliargs": {"core", "cliargs"},
    "organisms": {"core", "organisms"},
    "analyses": {"core", "cliargs", "organisms", "analyses"},
    "demo": {"core", "organisms", "demo"},
    "cli": set(LAYERS),
}


def layer(module: str) -> str | None:
    if module == "analyses" or module.startswith("analyses."):
        return "analyses"
    if not (module == "mkt" or module.startswith("mkt.")):
        return None  # a third-party module
    for prefix, name in (("mkt.cli.", "cli"), ("mkt.organisms.demo.", "demo"), ("mkt.organisms.", "organisms")):
        if (module + ".").startswith(prefix):
            return name
    return "cliargs" if module == "mkt.cliargs" else "core"


def modules(*packages: str) -> dict[str, Path]:
    """Dotted name -> file of every module under ``packages`` (a package is its ``__init__``)."""
    found = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(module, imported name or "", line) of every import in the file, lazy ones included, and of
    every private attribute read off an imported module (``answers._cache``) as an import of it."""
    is_package = path.name == "__init__.py"
    found, bound = [], {}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
            bound.update({alias.asname: alias.name for alias in node.names if alias.asname})
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in known else (base, alias.name, node.lineno))
                if sub in known:
                    bound[alias.asname or alias.name] = sub
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((bound[node.value.id], node.attr, node.lineno))
    return found


KNOWN = modules("mkt", "analyses")


def edges() -> list[tuple[str, str, str, int]]:
    return [(name, target, imported, line) for name, path in KNOWN.items()
            for target, imported, line in imports(path, name, KNOWN) if layer(target)]


def test_imports_only_run_downward_and_cross_layers_publicly():
    wrong = []
    for source, target, imported, line in edges():
        if layer(target) not in MAY_IMPORT[layer(source)]:
            wrong.append(f"{source}:{line} ({layer(source)}) imports {target} ({layer(target)})")
        elif layer(source) != layer(target) and (imported.startswith("_") or
                                                 any(p.startswith("_") for p in target.split(".")[1:]
                                                     if p != "__init__")):
            wrong.append(f"{source}:{line} imports the private {target}.{imported}".rstrip("."))
    for path in (ROOT / "bench").rglob("*.py"):
        for target, imported, line in imports(path, "bench." + path.stem, KNOWN):
            if layer(target) and (imported.startswith("_") or any(p.startswith("_") for p in target.split("."))):
                wrong.append(f"bench/{path.name}:{line} imports the private {target}.{imported}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_module_imports_itself_through_a_circle():
    graph: dict[str, set[str]] = {name: set() for name in KNOWN}
    for source, target, _, _ in edges():
        if target in KNOWN and target != source:
            graph[source].add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "circular imports:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source, target, allowed", [
    ("mkt.models", "mkt.organisms.zoo", False), ("mkt.pipeline", "mkt.cli", False),
    ("mkt.significance", "analyses.ablation", False), ("analyses.ablation", "mkt.cli.options", False),
    ("analyses._common", "mkt.organisms.demo", False), ("mkt.eval.tasks", "mkt.organisms.zoo", False),
    ("mkt.organisms.demo", "mkt.pipeline", True), ("mkt.cli.analyze", "analyses", True),
])
def test_the_rule_itself_tells_upward_from_downward(source, target, allowed):
    assert (layer(target) in MAY_IMPORT[layer(source)]) is allowed
