"""The import graph keeps its shape: layers import strictly downward (common -> the exercise packages -> the
exercise table -> studies -> the CLI), and inside common its roles do too (errors and the course's limits ->
file I/O -> configs -> run infrastructure -> training math and the course's submission); the exercises do not
import each other, no module imports itself back through others (no circle), and no source file grows past
~300 lines."""
from __future__ import annotations

import ast

from helpers import REPO

LAYERS = {"common": 0, "ex08_autoencoder": 1, "ex09_keypoints": 1, "exercises": 2, "studies": 3, "tutorial": 4,
          "experiments": 5}
COMMON_LAYERS = {"errors": 0, "limits": 0, "files": 1, "plots": 1, "config": 2, "config_docs": 3, "run": 3,
                 "training": 4, "course": 4, "experiment": 5}
"""common's modules and role packages (common/<role>/), bottom first."""
MAX_LINES = 320


def modules() -> dict[str, ast.Module]:
    out = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports_of(tree: ast.Module, name: str) -> set[str]:
    """The repo modules ``name`` imports anywhere in its body (functions included: lazy imports count too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in LAYERS}


def test_layers_import_strictly_downward():
    mods = modules()
    bad = []
    for name, tree in mods.items():
        here = name.split(".")[0]
        for target in imports_of(tree, name):
            there = target.split(".")[0]
            if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] == 1 and there != here):
                bad.append(f"{name} imports {target}")
    assert bad == []


def test_common_roles_import_strictly_downward():
    roles = {p.stem if p.is_file() else p.name for p in (REPO / "common").iterdir()
             if p.suffix == ".py" and p.stem != "__init__" or p.is_dir() and (p / "__init__.py").is_file()}
    assert roles == set(COMMON_LAYERS), "a new part of common/ needs its place in COMMON_LAYERS"
    bad = []
    for name, tree in modules().items():
        if name.startswith("common."):
            here = name.split(".")[1]
            for target in imports_of(tree, name):
                there = target.split(".")[1] if target.startswith("common.") else None
                if there in COMMON_LAYERS and there != here and COMMON_LAYERS[there] >= COMMON_LAYERS[here]:
                    bad.append(f"{name} imports {target}")
    assert bad == []


def test_no_import_circle():
    mods = modules()
    graph = {name: {t for t in imports_of(tree, name) if t in mods and t != name} for name, tree in mods.items()}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert cycles == []


def test_no_source_file_is_over_300_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for package in LAYERS for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert long == []


def test_the_cli_and_the_studies_know_the_exercises_only_through_the_table():
    named = [f"{p.relative_to(REPO)}:{i}" for package in ("experiments", "studies")
             for p in (REPO / package).rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if any(w in line for w in ("ex08", "ex09", "only_step", "evaluate_ex09"))]
    assert named == []
