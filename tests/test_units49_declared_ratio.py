"""The activation column of a model of your own (audit 49): it printed the largest gate's measured k/N, ``top-k
0.0972``, for a top-k set to 0.1 (14 of a 12 × 12 channel) even where the record declares ``grid_cell.kwta_ratio:
0.1``, the row the matrices place it in. Where the declared ratio fits every gate (each gate's k within one unit of
the k it gives: the rule ``declarable_ratio`` suggests a declaration by) the column shows it; a declaration the gates
contradict, or none, leaves the measured k/N."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
import kwta_robust.layer_text as layer_text  # declared_ratio: new in units 49, looked up at run time
from kwta_robust.matrix_checks import grid_ratio_conflict
from kwta_robust.narrow import narrow_markdown
from kwta_robust.report import activation_text

COUNTS = ((14, 144), (2, 16), (6, 64))  # a top-k set to 0.1 that rounds 0.1 · N


def _own(declared: float | None, counts=COUNTS):
    layers = [{"name": f"act{i}", "kinds": ["gate"], "grouping": "channel", "evidence": {"k": k, "group_size": n}}
              for i, (k, n) in enumerate(counts, 1)]
    record = make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label="mine",
                         detection={"n": 4, "probed": 7, "layers": layers})
    record.model.update({"activation": "none", "kwta_ratio": None, "num_kwta_layers": 0})
    if declared is not None:
        record.model["grid_cell"] = {"kwta_ratio": declared, "weight_sparsity": 0.0, "pruning_method": "declared"}
    return record


def test_the_declared_ratio_the_gates_fit_is_shown() -> None:
    record = _own(0.1)
    assert activation_text(record) == "top-k 0.1 channel (3 found by the probe)"
    assert "| top-k 0.1 channel (3 found by the probe) |" in narrow_markdown([record])
    assert grid_ratio_conflict(record) is None and layer_text.declared_ratio(record) == 0.1


@pytest.mark.parametrize("declared", [None, 0.3, 1.0])
def test_without_a_fitting_declaration_the_measured_ratio_stays(declared: float | None) -> None:
    record = _own(declared)
    assert activation_text(record) == "top-k 0.0972 channel (3 found by the probe)"
    assert layer_text.declared_ratio(record) is None


def test_a_declaration_one_gate_misses_by_more_than_a_unit_shows_the_measured_ratio() -> None:
    record = _own(0.1, counts=((14, 144), (2, 16), (8, 64)))  # 8 of 64: 2 units from floor(0.1 · 64) = 6
    assert grid_ratio_conflict(record) is None  # not flagged (one gate fits), but the declaration fits not every gate
    assert activation_text(record).startswith("top-k 0.0972 ") and layer_text.declared_ratio(record) is None
