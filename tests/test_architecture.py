# The shape of the tree: provnet's import graph has no cycles (function-level imports included, so none can hide)
# and its dependencies point down the layers design.md names.
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "provnet"
# cli -> runtime -> (api, metadata, dhcp, agents, dataplane, doctor) -> registry -> model; lab runs what an
# operator runs (runtime, the registry), never the CLI
LAYERS = {"model": 0, "config": 0, "metrics": 0, "binding": 0, "identity": 1, "registry": 1,
          "api": 2, "metadata": 2, "dhcp": 2, "dataplane": 2, "agents": 2, "doctor": 2,
          "runtime": 3, "lab": 4, "cli": 5}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the provnet modules it imports anywhere in its body (a package's own ancestors excluded: Python
    imports them for any submodule)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                resolved = resolve(target) if target.startswith("provnet") else None
                if resolved and resolved != module and not module.startswith(resolved + "."):
                    graph[module].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_the_import_graph_has_no_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_hidden_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    graph = import_graph()
    unlayered = sorted(m for m in graph if m != "provnet" and layer(m) is None)
    assert unlayered == [], "add the new top-level module or package to LAYERS"
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if m != "provnet" and d != "provnet" and layer(d) > layer(m))  # type: ignore[operator]
    assert upward == []


def test_every_module_says_what_it_is_for() -> None:
    missing = [str(p.relative_to(ROOT.parent)) for p in modules().values()
               if not p.read_text().lstrip().startswith(("#", '"""')) and p.read_text().strip()]
    assert missing == []
