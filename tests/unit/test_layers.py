"""The import graph of gateway/ has no cycles, and no package imports one of a higher layer (walked with ast).

Layers, lowest first: a module may import its own package and any package of a lower or equal layer. The
runtime never imports the development set-up (dev/), and nothing in gateway/ imports the adapters or the demo.
"""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"

# (package -> layer). Modules directly in gateway/ are named by their module name.
LAYERS: dict[str, int] = {
    "wire": 0,
    "logs": 1, "schemas": 1, "crypto": 1, "gc_policy": 1,
    "config": 2, "metrics": 2, "state": 2,
    "kafka": 3,
    "audit": 4,
    "relay": 5, "files": 5,  # files and relay: egress runs the claim-check step, the assembler the checks
    "http": 6,
    "runtime": 7, "console": 7,
    "dev": 8,
    "cli": 9,
}
FACADE = "gateway"  # gateway/__init__.py re-exports the public surface; it is above every layer


def module_name(path: Path) -> str:
    rel = path.relative_to(GATEWAY.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """gateway.* modules imported at module level or inside functions (TYPE_CHECKING imports count too)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ("gateway", "adapters")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root in ("gateway", "adapters"):
                # `from gateway.x import y` may name a submodule y: count it when one exists.
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if module_exists(sub) else node.module)
    return found


def module_exists(name: str) -> bool:
    base = GATEWAY.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in GATEWAY.rglob("*.py")}


def test_every_package_and_module_of_gateway_has_a_layer() -> None:
    tops = {p.stem if p.is_file() else p.name for p in GATEWAY.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert tops - {"_schemas"} <= set(LAYERS)


def test_every_module_opens_with_a_docstring_saying_its_job() -> None:
    modules = [*GATEWAY.rglob("*.py"), *(GATEWAY.parent / "adapters").rglob("*.py")]
    missing = [str(p.relative_to(GATEWAY.parent)) for p in modules if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_no_module_imports_a_higher_layer_or_the_adapters() -> None:
    wrong = []
    for module, deps in graph().items():
        pkg = package_of(module)
        if pkg == FACADE:
            continue
        for dep in deps:
            if dep.startswith("adapters"):
                wrong.append(f"{module} -> {dep}")
                continue
            target = package_of(dep)
            if target == FACADE or (target != pkg and LAYERS[target] > LAYERS[pkg]):
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_the_import_graph_has_no_cycles() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d not in g:
                continue
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []
