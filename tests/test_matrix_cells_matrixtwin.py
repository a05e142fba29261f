"""One reading of the grid cell a record's model states by itself (:func:`kwta_robust.matrix_checks.own_cell`):
``cell_coordinates`` places a record that declares no cell by it, and ``check_sweep_cell`` compares a sweep cell with
it (before, each read ``activation``/``kwta_ratio``/``training.pruning`` in its own way: a kWTA record whose
``kwta_ratio`` was NaN or infinite got a matrix row of its own). The ReLU twin and valid records sit where they
sat."""

from __future__ import annotations

import math

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DENSE, RELU_RATIO, build_matrices, cell_coordinates
from kwta_robust.matrix_checks import check_sweep_cell, own_cell

MODELS = [  # (model fields, the cell they state)
    ({"activation": "relu"}, (RELU_RATIO, 0.0, DENSE)),  # the ReLU twin, no training section: dense
    ({"activation": "kwta", "kwta_ratio": 0.1}, (0.1, 0.0, DENSE)),
    ({"activation": "kwta", "kwta_ratio": 0.25, "training": {}}, (0.25, 0.0, DENSE)),
    ({"activation": "kwta", "kwta_ratio": 0.1, "training": {"pruning": {"method": "magnitude",
                                                                        "target_sparsity": 0.8}}},
     (0.1, 0.8, "magnitude")),
    ({"activation": "relu", "training": {"pruning": {"method": "random", "target_sparsity": 0.5}}},
     (RELU_RATIO, 0.5, "random")),
]


def record_of(model: dict):
    record = make_record([make_result("pgd", [1, 0, 1, 0])])
    record.model.pop("activation")
    record.model.update(model)
    return record


@pytest.mark.parametrize(("model", "cell"), MODELS)
def test_a_record_is_placed_where_its_model_says_and_a_sweep_cell_is_checked_against_the_same(model, cell) -> None:
    record = record_of(model)
    coords = cell_coordinates(record)
    assert (coords.kwta_ratio, coords.weight_sparsity, coords.pruning_method) == cell
    ratio, sparsity, method = own_cell(record.model, RELU_RATIO, DENSE)
    assert (ratio, sparsity if sparsity is not None else 0.0, method or DENSE) == cell
    declared = {"kwta_ratio": cell[0], "weight_sparsity": cell[1], "pruning_method": cell[2]}
    check_sweep_cell("r", {**record.model, "sweep_cell": declared}, RELU_RATIO, DENSE)  # its own cell: accepted
    if "training" in model:  # a sweep cell naming another column than the model's pruning: refused
        with pytest.raises(ConfigError, match="model.sweep_cell puts it at"):
            check_sweep_cell("r", {**record.model, "sweep_cell": {**declared, "weight_sparsity": 0.3}},
                             RELU_RATIO, DENSE)


@pytest.mark.parametrize("ratio", [math.nan, math.inf])
def test_a_kwta_record_whose_ratio_is_no_finite_number_gets_no_row_of_its_own(ratio: float) -> None:
    record = record_of({"activation": "kwta", "kwta_ratio": ratio})
    with pytest.raises(ConfigError, match=r"has activation 'kwta' \(kwta_ratio (nan|inf)\); a matrix row needs ReLU"):
        build_matrices([record])


def test_the_relu_twin_and_a_kwta_row_share_one_matrix() -> None:
    relu, kwta = record_of({"activation": "relu"}), record_of({"activation": "kwta", "kwta_ratio": 0.1})
    relu.model["label"], kwta.model["label"] = "relu", "kwta"
    clean = build_matrices([kwta, relu])[0]
    assert clean.ratios == [RELU_RATIO, 0.1] and clean.sparsities == [0.0]
    assert clean.labels == {(RELU_RATIO, 0.0): "relu", (0.1, 0.0): "kwta"}


def test_a_kwta_record_at_ratio_one_is_still_no_relu_twin() -> None:
    with pytest.raises(ConfigError, match="is a kWTA model at k/N 1.0, which keeps every unit"):
        cell_coordinates(record_of({"activation": "kwta", "kwta_ratio": 1.0}))
