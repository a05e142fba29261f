"""The benchmark modules for the benchmark smoke tests (``benchmarks`` lives at the repository root, outside the
installed packages), as a module-scoped fixture: ``from bench_fixtures import bench``."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("_common", "bench_kwta_layer", "bench_harness_overhead", "bench_cascade", "bench_gradient_estimation",
         "bench_memory", "bench_peers", "bench_record_scale", "bench_scaleout", "bench_strength",
         "strength_variants", "_strength_seeds", "strength_checks", "budget_bound_coverage")


@pytest.fixture(scope="module")
def bench() -> dict[str, ModuleType]:
    """The benchmark modules, importable while the tests of one module run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield {name: importlib.import_module(f"benchmarks.{name}") for name in NAMES}
