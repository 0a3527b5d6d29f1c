"""The package's layers: every import points down, and no modules import each other in a
cycle. Lazy imports inside functions count for the layers (they are dependencies all the
same); ``if TYPE_CHECKING:`` imports do not."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "embodied_rl"
LAYERS = {  # a subpackage may import only subpackages of a lower layer (and itself)
    "utils": 0, "config": 0,
    "envs": 1, "policies": 1, "rl": 1,
    "datasets": 2, "evaluation": 2,
    "preference": 3,
    "agents": 4, "llm": 4,
    "runners": 5,
    "cli": 6,
}  # fmt: skip


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports(top_level_only: bool) -> dict[str, set[str]]:
    """``{module: {embodied_rl modules it imports}}`` (module scope only, if asked);
    ``from package import submodule`` counts as importing the submodule only."""
    files = {_module(p) for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        module = _module(path)
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        nodes = tree.body if top_level_only else ast.walk(tree)
        for node in nodes:
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                names = [s for s in subs if s in files] or [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("embodied_rl.") and name != module:
                    graph[module].add(name)
    return graph


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_import_points_down_the_layers():
    upward = []
    for module, targets in imports(top_level_only=False).items():
        source = _package(module)
        if source is None:  # embodied_rl/__init__.py: headless rendering set-up
            continue
        assert source in LAYERS, f"new subpackage {source!r}: give it a layer in LAYERS"
        for target in targets:
            package = _package(target)
            if package in LAYERS and package != source and LAYERS[package] >= LAYERS[source]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    """Module-scope imports form no cycle (a cycle breaks as soon as the import order
    changes)."""
    files = {_module(p) for p in ROOT.rglob("*.py")}
    graph = {m: {t for t in ts if t in files} for m, ts in imports(top_level_only=True).items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
