"""Which matrix cells are marked not comparable (:mod:`kwta_robust.matrix_checks`) at the edges: a declared
grid-cell sparsity exactly the tolerance from the measured one, ties between configs, another data set."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.matrix_checks import config_differences, grid_cell_conflict
from kwta_robust.results import EvalRecord


def declared(sparsity: float, overall: float, layers: dict | None = None) -> dict:
    """A record's ``model`` declaring grid-cell weight sparsity ``sparsity`` and measuring ``overall`` (and, per
    layer, ``layers``; default: every layer at ``overall``)."""
    return {"grid_cell": {"kwta_ratio": 0.1, "weight_sparsity": sparsity},
            "weight_sparsity": {"overall": overall, "layers": layers if layers is not None else {"fc": overall}}}


@pytest.mark.parametrize("sparsity, overall", [(0.12, 0.17), (0.5, 0.55), (0.0, 0.05)])
def test_more_zeros_than_declared_by_exactly_the_tolerance_is_no_conflict(sparsity: float, overall: float) -> None:
    """SPARSITY_TOLERANCE (0.05): contradicted only 'beyond' it; 0.12 + 0.05 reads 0.16999999999999998 in binary
    floating point, and 17% measured against 12% declared used to be called a contradiction."""
    assert grid_cell_conflict(declared(sparsity, overall)) is None
    conflict = grid_cell_conflict(declared(sparsity, overall + 0.005))
    assert conflict is not None and "of all conv/linear weights are zero" in conflict


@pytest.mark.parametrize("sparsity, sparsest", [(0.14, 0.09), (0.5, 0.45), (0.07, 0.02)])
def test_a_sparsest_layer_exactly_the_tolerance_below_the_declared_sparsity_is_no_conflict(
        sparsity: float, sparsest: float) -> None:
    """0.14 - 0.05 reads 0.09000000000000001: a layer at 9% against 14% declared used to contradict it."""
    assert grid_cell_conflict(declared(sparsity, 0.0, {"a": 0.0, "b": sparsest})) is None
    conflict = grid_cell_conflict(declared(sparsity, 0.0, {"a": 0.0, "b": sparsest - 0.005}))
    assert conflict is not None and "its sparsest layer has" in conflict


def cell(config_hash: str, dataset: str = "toy", seed: int = 0) -> EvalRecord:
    record = make_record([make_result("pgd", [1] * 6 + [0] * 4)])
    record.config_hash, record.config = config_hash, {"seed": seed, "batch_size": 16}
    record.dataset["name"] = dataset
    return record


def test_between_two_configs_the_first_cell_is_the_reference() -> None:
    found = config_differences({"a": cell("h1"), "b": cell("h2", seed=1)})
    assert list(found) == ["b"] and found["b"].endswith("(differs in: seed)")


def test_a_cell_on_another_data_set_names_it() -> None:
    found = config_differences({"a": cell("h1"), "b": cell("h1"), "c": cell("h1", dataset="cifar10")})
    assert list(found) == ["c"] and "(differs in: data set cifar10 test)" in found["c"]
