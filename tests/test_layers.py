"""The package's layers import only downward, with no import cycle (imports inside functions
count too), and no blueprint imports another: a newcomer finds each behaviour's home from the
folder layout, and a change to the web cannot reach into a worker through a back door."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pixshift"

# The floors, top to bottom, by what sits in pixshift/: a folder (a sub-package) or a module. A
# module may import its own floor or any below it; every entry of pixshift/ must be on a floor.
FLOORS = {
    "entry points": {"__main__", "server", "worker", "cli"},
    "app factory": {"__init__"},
    "web": {"web"},
    "uploads": {"uploads"},
    "pipeline": {"pipeline"},
    "webhooks": {"webhooks"},
    "imaging, net, storage": {"imaging", "net", "storage"},
    "foundations": {"db", "config", "events", "logs", "failures"},
}
BLUEPRINTS = ("pixshift.web.pages", "pixshift.web.api", "pixshift.web.downloads", "pixshift.web.errors")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its code. ``from x import name``
    counts as importing ``x.name`` when that is a module, else ``x`` itself."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                named = [f"{source}.{alias.name}" for alias in node.names]
                targets = [t for t in named if t in known] + ([source] if any(t not in known for t in named) else [])
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    room = module.split(".")[1] if "." in module else "__init__"
    return next(index for index, rooms in enumerate(FLOORS.values()) if room in rooms)


def test_every_room_is_on_a_floor():
    rooms = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert rooms == set().union(*FLOORS.values())


def test_the_import_graph_is_found():
    graph = imports()
    assert (
        "pixshift.pipeline.processing" in graph["pixshift.pipeline.tasks"]
        and "pixshift.net.fetch" in graph["pixshift.pipeline.processing"]
    )
    assert "pixshift" in graph["pixshift.worker"]  # `from . import create_app` counts as the package


def test_no_import_cycle():
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_every_import_runs_down_the_layers():
    names = list(FLOORS)
    upward = [
        f"{m} ({names[layer_of(m)]}) imports {t} ({names[layer_of(t)]})"
        for m, targets in imports().items()
        for t in targets
        if layer_of(t) < layer_of(m)
    ]
    assert upward == []


def test_no_blueprint_imports_another():
    def blueprint(module: str) -> str | None:
        return next((b for b in BLUEPRINTS if module == b or module.startswith(b + ".")), None)

    crossing = [
        f"{m} imports {t}"
        for m, targets in imports().items()
        for t in targets
        if blueprint(m) and blueprint(t) and blueprint(m) != blueprint(t)
    ]
    assert crossing == []
