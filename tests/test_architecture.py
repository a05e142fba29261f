"""The package's shape, read from the source (AST, nothing imported): no import circle between the project's
modules (imports inside functions and under ``TYPE_CHECKING`` count), the library never imports the command line,
``attacks`` never imports ``kwta_robust``, no module is longer than 500 lines, and no line of the Python files in
``kwta_robust``, ``attacks``, ``benchmarks`` and ``tests`` is wider than 120 columns.

A package's ``__init__`` re-exporting its modules is not a circle: importing ``a.b.c`` runs ``a/b/__init__.py``
first, but that is Python's loading order, not a dependency of ``a.b.c`` on the package (edges are the names a
module writes in its import statements)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kwta_robust", "attacks")
MAX_LINES = 500
WIDTH_CHECKED = ("kwta_robust", "attacks", "benchmarks", "tests")
MAX_COLUMNS = 120
CLI = ("kwta_robust.cli", "kwta_robust.commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "kwta_robust.sweep.run" in edges and "kwta_robust.sweep.cells" in edges["kwta_robust.sweep.run"]
    assert "attacks.base" in edges["kwta_robust.specs"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_the_library_never_imports_the_command_line() -> None:
    edges = graph()
    offenders = {name: sorted(t for t in targets if t.startswith(CLI)) for name, targets in edges.items()
                 if not name.startswith(CLI)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_attacks_never_import_kwta_robust() -> None:
    edges = graph()
    assert {name: sorted(targets) for name, targets in edges.items()
            if name.startswith("attacks") and any(t.startswith("kwta_robust") for t in targets)} == {}


def test_no_module_over_500_lines() -> None:
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_no_line_over_120_columns() -> None:
    wide = [f"{path.relative_to(ROOT)}:{number}" for folder in WIDTH_CHECKED
            for path in sorted((ROOT / folder).rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
            if len(line) > MAX_COLUMNS]
    assert not wide, f"lines over {MAX_COLUMNS} columns: {', '.join(wide)}"
