"""Persona walk 49: `table --matrix` on a record of a top-k of your own that rounds ``ratio · N`` (set to 0.1: 14 of
a 12 × 12 channel, 2 of 16, 6 of 64) told the user to declare ``--grid-cell kwta_ratio=0.0972`` ("every gate's",
though 2/16 is 0.125), a row of its own beside the 0.1 the family's other records declare. The suggestion is now the
shortest ratio every gate's k is within one unit of (the rule a declaration is checked by), never the ReLU row."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import cell_coordinates
from kwta_robust.matrix_checks import declarable_ratio, grid_ratio_conflict


def _own(*counts: tuple[int, int]):
    layers = [{"name": f"act{i}", "kinds": ["gate"], "grouping": "channel", "evidence": {"k": k, "group_size": n}}
              for i, (k, n) in enumerate(counts, 1)]
    record = make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label="mine",
                         detection={"n": 4, "probed": 7, "layers": layers})
    record.model.update({"activation": "none", "kwta_ratio": None})
    return record


def _refusal(record) -> str:
    with pytest.raises(ConfigError) as info:
        cell_coordinates(record)
    return str(info.value)


@pytest.mark.parametrize("counts, ratio", [(((14, 144), (2, 16), (6, 64)), 0.1),  # round(0.1 · N)
                                           (((43, 144), (5, 16), (19, 64)), 0.3)])  # round(0.3 · N)
def test_the_row_to_declare_is_the_ratio_the_gates_were_set_to(counts, ratio) -> None:
    record = _own(*counts)
    assert declarable_ratio(record) == ratio
    message = _refusal(record)
    assert f"--grid-cell kwta_ratio={ratio:g},weight_sparsity=S (k/N {ratio:g}: every gate" in message
    assert "\n" not in message
    record.model["grid_cell"] = {"kwta_ratio": ratio, "weight_sparsity": 0.0, "pruning_method": "declared"}
    assert grid_ratio_conflict(record) is None  # what it suggests passes the check a declaration gets


def test_the_printed_ratio_is_named_where_the_suggestion_differs_and_the_relu_row_is_never_suggested() -> None:
    message = _refusal(_own((14, 144), (2, 16), (6, 64)))
    assert "the tables print 0.0972, the largest gate's k/N" in message
    assert "kwta_ratio=0.0972" not in message
    assert declarable_ratio(_own((36, 144), (4, 16), (16, 64))) == 0.25  # exact: two digits, as before
    assert declarable_ratio(_own((31, 32))) == 0.97  # 1 (the ReLU twin's row, 32 of 32) is never offered
