"""Reproducibility audit: what a record must say for a reviewer to reproduce it, and what ``diff`` calls the same
result. CPU numbers are bit-identical only on one kind of CPU, so a CPU record must name the processor; a sweep
cell's record names the folder it was written to, which is where it ran, not what it computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kwta_robust.api import evaluate_model
from kwta_robust.cli import main
from kwta_robust.record_diff import record_differences
from tests.test_reproducibility import CONFIG, Stateful, toy_data


def cpuinfo_model_name() -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo``, read here on its own (``None`` where there is none)."""
    path = Path("/proc/cpuinfo")
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def test_a_cpu_record_names_its_processor() -> None:
    """On Linux ``platform.processor()`` is empty, so every CPU record had ``device_name: ''``: two records of two
    kinds of CPU (whose last bits may differ) showed no provenance difference for ``diff`` to explain."""
    x, y = toy_data(8)
    record = evaluate_model(Stateful().eval(), {**CONFIG, "device": "cpu"}, x, y, threads=1)
    name = record.provenance["device_name"]
    assert isinstance(name, str) and name.strip() != ""
    expected = cpuinfo_model_name()
    if expected is not None:  # Linux: the processor's model name, as /proc/cpuinfo spells it
        assert name == expected


def sweep_cell_record(tmp_path: Path, folder: str) -> Path:
    """A record as a sweep writes it into ``<folder>/cells/<cell>/``, whose ``sweep_cell`` names that folder."""
    x, y = toy_data(8)
    record = evaluate_model(Stateful().eval(), CONFIG, x, y, threads=1).to_dict()
    record["model"]["sweep_cell"] = {"kwta_ratio": 0.25, "weight_sparsity": 0.0, "pruning_method": "none",
                                     "directory": str(tmp_path / folder / "cells" / "kwta0.25-dense")}
    out = tmp_path / f"{folder}.json"
    out.write_text(json.dumps(record))
    return out


def test_one_sweep_run_in_two_folders_is_the_same_result(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same sweep run with another --out-dir (or executor) wrote cells that ``diff`` called different
    (exit 1) for their folder alone: ``model.sweep_cell.directory`` is where the record went, like the
    checkpoint's path, which was already skipped."""
    first, second = sweep_cell_record(tmp_path, "inline"), sweep_cell_record(tmp_path, "pool")
    a, b = (json.loads(p.read_text()) for p in (first, second))
    assert a["model"]["sweep_cell"]["directory"] != b["model"]["sweep_cell"]["directory"]
    assert record_differences(a, b) == []
    assert main(["diff", str(first), str(second)]) == 0
    assert capsys.readouterr().out.startswith("same result")
    b["model"]["sweep_cell"]["kwta_ratio"] = 0.5  # the cell's grid position still counts
    assert record_differences(a, b) == ["model.sweep_cell.kwta_ratio: 0.25 != 0.5"]
