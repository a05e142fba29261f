"""One k/N read from gates that truncate ``ratio · N`` at layers of several sizes (Xiao et al.'s ``int(sr · size)``):
a Xiao-style CIFAR ResNet at sparse ratio 0.1 has gates of 8192 units keeping ``int(819.2) = 819`` (0.1 to three
digits) and of 4096 keeping ``int(409.6) = 409`` (0.0999). Read as two ratios, the model's tables showed no k/N
and a ``--grid-cell kwta_ratio=0.2`` declared on it raised no ``grid-cell-ratio`` flag (not judged)."""

from __future__ import annotations

import pytest

from eval_helpers import make_record
from kwta_robust.layer_text import common_ratio, detected_gates_text
from kwta_robust.matrix_checks import grid_ratio_conflict

#: (name, k, group size) of the gates the layer probe found in that model (its record, trained on CIFAR-10 files).
XIAO_GATES = [("layer1.sparse1", 819, 8192), ("layer1.sparse2", 819, 8192), ("layer2.sparse1", 409, 4096),
              ("layer2.sparse2", 409, 4096)]


def _foreign_record(gates: list[tuple[str, int, int]], declared: float | None = None):
    """A record of a model without our kWTA layers (``nn.ReLU`` + foreign top-k gates) and the gates' evidence."""
    layers = [{"name": name, "module_class": "Sparsify2D_vol", "kinds": ["gate"], "grouping": "volume",
               "evidence": {"grouping": "volume", "k": k, "group_size": n}} for name, k, n in gates]
    record = make_record(detection={"layers": layers})
    record.model.update(activation="relu", num_kwta_layers=0, kwta_ratio=None)
    if declared is not None:
        record.model["grid_cell"] = {"kwta_ratio": declared, "weight_sparsity": 0.0, "pruning_method": "none"}
    return record


def test_truncated_gates_of_two_sizes_show_one_ratio() -> None:
    assert detected_gates_text(_foreign_record(XIAO_GATES)) == "top-k 0.1 volume (4 found by the probe)"
    assert common_ratio([(k, n) for _, k, n in XIAO_GATES]) == 819 / 8192


def test_a_declared_ratio_those_gates_contradict_is_flagged() -> None:
    assert grid_ratio_conflict(_foreign_record(XIAO_GATES, declared=0.1)) is None
    assert grid_ratio_conflict(_foreign_record(XIAO_GATES, declared=0.2)) == (
        "declared --grid-cell kwta_ratio=0.2 but the layer probe measured k/N 819/8192 (0.1) at its top-k gates "
        "in layers layer1.sparse1, layer1.sparse2, layer2.sparse1, layer2.sparse2; declare the cell again with the "
        "ratio the model has (nothing is evaluated again): --grid-cell kwta_ratio=0.1,weight_sparsity=0")


@pytest.mark.parametrize("pairs", [
    [(819, 8192), (64, 4096)],      # a Sparsify2D_kactive head (k = 64) beside the 0.1 gates: two ratios
    [(819, 8192), (200, 1000)],     # 0.1 and 0.2
    [(819, 8192), (406, 4096)],     # 3 units below 0.1 · 4096: more than rounding
])
def test_gates_of_other_ratios_still_show_none(pairs: list[tuple[int, int]]) -> None:
    assert common_ratio(pairs) is None
    record = _foreign_record([(f"g{i}", k, n) for i, (k, n) in enumerate(pairs)], declared=0.5)
    assert grid_ratio_conflict(record) is None  # not judged: no one k/N to hold the declaration against
    assert detected_gates_text(record) == f"top-k volume ({len(pairs)} found by the probe)"
