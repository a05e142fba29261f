""":func:`kwta_robust.samples.select_samples` is imported from its home module, not through
:mod:`kwta_robust.evaluate` (which imported it from there and was the name's home before ``samples.py``; the README
and docs never named ``kwta_robust.evaluate.select_samples``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_select_samples_is_imported_from_kwta_robust_samples() -> None:
    through = []
    for folder in ("kwta_robust", "attacks", "benchmarks", "tests", "scripts", "studies"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == "kwta_robust.evaluate" and any(
                        alias.name == "select_samples" for alias in node.names):
                    through.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert through == []
    from kwta_robust import samples
    from kwta_robust.shard_jobs import select_samples

    assert select_samples is samples.select_samples
