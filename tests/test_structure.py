"""The package's shape: packages depend in one direction (imports inside functions
count), device code never imports the simulators, and no module outgrows 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "appliance"
MAX_LINES = 450
# The composition root and the command line may wire anything in, sim/ included.
ROOTS = {"appliance.app", "appliance.cli", "appliance.__main__"}


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module's appliance imports, at the top and inside functions alike."""
    out: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = module_of(path)
        found = out.setdefault(mod, set())
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("appliance"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    name = f"{base}.{node.module}" if node.module else base
                else:
                    name = node.module or ""
                if name.startswith("appliance"):
                    found.add(name)
                    found.update(f"{name}.{a.name}" for a in node.names)
    return out


def package_of(mod: str) -> str:
    """appliance.media.pipeline -> media; a top-level module is its own package."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "appliance"


def package_graph() -> dict[str, set[str]]:
    mods = imports()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for mod, targets in mods.items():
        if mod in ROOTS:
            continue
        src = package_of(mod)
        for t in targets:
            while t not in known and "." in t:
                t = t.rpartition(".")[0]  # (an imported name, not a module)
            dst = package_of(t)
            if t in known and dst != src and t != "appliance":
                graph.setdefault(src, set()).add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, seen = [], set()

    def walk(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif len(path) < 12:
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_packages_depend_in_one_direction():
    graph = package_graph()
    assert cycles(graph) == [], "\n".join(" -> ".join(c) for c in cycles(graph))


def test_modules_import_in_one_direction_too():
    """Within a package as between packages: two modules that import each other (inside
    a function or not) are one module in two files, or a contract that wants its own."""
    mods = imports()
    graph: dict[str, set[str]] = {}
    for mod, targets in mods.items():
        for t in targets:
            while t not in mods and "." in t:
                t = t.rpartition(".")[0]
            if t in mods and t not in (mod, "appliance"):
                graph.setdefault(mod, set()).add(t)
    assert cycles(graph) == [], "\n".join(" -> ".join(c) for c in cycles(graph))


def test_device_code_never_imports_the_simulators():
    offenders = sorted(f"{mod} imports {t}" for mod, targets in imports().items()
                       if package_of(mod) != "sim" and mod not in ROOTS
                       for t in targets if t == "appliance.sim" or t.startswith("appliance.sim."))
    assert offenders == [], "\n".join(offenders)


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    # (so that a cycle hidden in a function cannot pass)
    mods = imports()
    assert "appliance.transport.bond" in mods["appliance.outputs.srt"] or any(
        t.startswith("appliance.transport") for t in mods["appliance.outputs.srt"])


if __name__ == "__main__":
    for src, dsts in sorted(package_graph().items()):
        print(f"{src} -> {', '.join(sorted(dsts))}")
def test_no_module_over_450_lines():
    long = sorted(f"{p.relative_to(ROOT)}: {n}" for p in PKG.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > MAX_LINES)
    assert long == [], long


