"""``table --matrix`` of one's own models placed with ``evaluate --grid-cell``: the legend's Rows/Columns line
describes our kWTA layers and a pruning recipe (``training.pruning.pruned_layers``), which such a record does not
hold. Before, nothing told a reader that those cells' row and column are only what the evaluation declared; now a
note names the declared cells (README, "Your own models in a matrix")."""

from __future__ import annotations

from eval_helpers import make_record
from kwta_robust.matrix import build_matrices, legend, parse_grid_cell

NOTE = ("row and column are the k/N and weight sparsity the evaluation declared (model.grid_cell), not read from our "
        "kWTA layers or a pruning recipe")


def _declared(label: str, cell: str):
    record = make_record(label=label)
    record.model["grid_cell"] = parse_grid_cell(cell)
    return record


def test_a_matrix_of_declared_cells_says_its_rows_and_columns_were_declared() -> None:
    records = [_declared("mine-0.1", "kwta_ratio=0.1,weight_sparsity=0"),
               _declared("mine-relu", "kwta_ratio=1,weight_sparsity=0")]
    notes = legend(build_matrices(records))
    declared = [n for n in notes if NOTE in n]
    assert declared == [f"declared with evaluate --grid-cell (every cell): {NOTE}; the probe's k and the weights' "
                        "zeros are checked against them (else marked)"]


def test_only_the_declared_cells_are_named_beside_a_record_of_our_own_layers() -> None:
    ours = make_record(label="ours")
    ours.model.update(kwta_ratio=0.2)  # our kWTA layers at k/N 0.2, dense: placed by what the record states
    records = [ours, _declared("mine-0.1", "kwta_ratio=0.1,weight_sparsity=0")]
    notes = legend(build_matrices(records))
    assert [n for n in notes if NOTE in n] == [f"declared with evaluate --grid-cell (k/N 0.1 × 0 (dense)): {NOTE}; "
                                               "the probe's k and the weights' zeros are checked against them (else "
                                               "marked)"]
    assert not [n for n in legend(build_matrices([ours])) if NOTE in n]  # our own records alone: no such note
