"""A matrix's dense column is shared by every pruning method's matrix, so ``table --matrix`` of a sweep's records
beside one's own models declared with ``evaluate --grid-cell`` (pruned ones, at ``weight_sparsity=0.5``) put the
sweep's dense models in the ``declared`` matrix, unmarked, beside the pruned cells of the other model family: a
paper would read the row as one family before and after pruning (65% clean dense, 25% pruned, measured with a
sweep's CNN beside a CNN of one's own). Now such a dense cell carries the not-comparable mark with the reason and
the fix (README, "Cells that are not comparable")."""

from __future__ import annotations

import pytest
from eval_helpers import make_record
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_matrices
from kwta_robust.matrix import build_matrices, parse_grid_cell

FAMILY = "another model family"


def _ours(label: str) -> object:
    record = make_record(label=label)
    record.model.update(kwta_ratio=0.2)  # our kWTA layers at k/N 0.2, dense: placed by what the record states
    return record


def _declared(label: str, cell: str) -> object:
    record = make_record(label=label)
    record.model["grid_cell"] = parse_grid_cell(cell)
    return record


def _declared_matrix(records: list) -> object:
    return next(m for m in build_matrices(records) if m.pruning_method == "declared" and m.metric == "clean")


def test_a_dense_cell_of_our_training_beside_declared_pruned_cells_is_marked() -> None:
    pruned = _declared("mine-0.2-p50", "kwta_ratio=0.2,weight_sparsity=0.5")
    m = _declared_matrix([_ours("ours-dense"), pruned])
    assert m.labels[(0.2, 0.0)] == "ours-dense"
    assert (0.2, 0.0) in m.warnings and FAMILY in m.warnings[(0.2, 0.0)][0]
    assert "render each family with a table --matrix of its own" in m.warnings[(0.2, 0.0)][0]
    assert (0.2, 0.5) not in m.warnings  # the pruned cell of the matrix's own family is not marked
    note = [n for n in m.notes if FAMILY in n]
    assert len(note) == 1 and "ours-dense" in note[0] and note[0].startswith("warning: * = not comparable")
    # the same pruned cell beside a dense model of its own family: nothing marked
    own = _declared_matrix([_declared("mine-0.2", "kwta_ratio=0.2,weight_sparsity=0"), pruned])
    assert own.warnings == {} and not [n for n in own.notes if FAMILY in n]


def test_the_mark_reaches_the_markdown_matrix_and_the_csv_warnings_column() -> None:
    records = [_ours("ours-dense"), _declared("mine-0.2-p50", "kwta_ratio=0.2,weight_sparsity=0.5")]
    matrices = build_matrices(records)
    markdown = render_matrices(matrices, "md")
    declared = markdown[markdown.index("(declared pruning"):]
    assert "| 0.2" in declared and "* |" in declared.split("| 0.2", 1)[1].split("\n", 1)[0]
    rows = [r for r in render_matrices(matrices, "csv").splitlines() if r.startswith("clean,") and "ours-dense" in r]
    assert len(rows) == 1 and FAMILY in rows[0]  # in the declared matrix's long rows only


def test_a_declared_dense_cell_beside_our_pruned_cells_is_marked_not_one_declared_with_our_method() -> None:
    ours = _ours("ours-magnitude0.5")
    ours.model["training"] = {"pruning": {"method": "magnitude", "target_sparsity": 0.5}}  # our recipe, pruned
    mine = _declared("mine-0.2", "kwta_ratio=0.2,weight_sparsity=0")
    m = next(m for m in build_matrices([mine, ours]) if m.pruning_method == "magnitude" and m.metric == "clean")
    assert m.labels[(0.2, 0.0)] == "mine-0.2" and m.labels[(0.2, 0.5)] == "ours-magnitude0.5"
    assert list(m.warnings) == [(0.2, 0.0)] and FAMILY in m.warnings[(0.2, 0.0)][0]
    assert "a model of your own declared with evaluate --grid-cell, beside pruned cells" in m.warnings[(0.2, 0.0)][0]
    # a pruned model declared with our method (pruning_method=magnitude) sits beside our models on purpose
    put = _declared("mine-0.2-p50", "kwta_ratio=0.2,weight_sparsity=0.5,pruning_method=magnitude")
    m = next(m for m in build_matrices([_ours("ours-dense"), put]) if m.metric == "clean")
    assert m.pruning_method == "magnitude" and m.warnings == {}


def _sweep_cell(label: str, sweep: str, cell_id: str) -> object:
    record = _ours(label)
    record.model["sweep_cell"] = {"kwta_ratio": 0.2, "activation": "kwta", "weight_sparsity": 0.0,
                                  "pruning_method": "none", "cell_id": cell_id, "sweep": sweep}
    return record


def test_two_records_on_one_cell_name_the_two_families_or_sweeps_in_the_refusal() -> None:
    """Before, each of these said only "pass one record per cell": a sweep's records beside a second sweep's (of
    another architecture), beside one's own declared models, or a sweep folder re-run with another recipe."""
    cases = [([_sweep_cell("kwta0.2-dense", "tiny", "aaa"), _sweep_cell("kwta0.2-dense", "mine", "bbb")],
              "(cells of sweeps 'tiny' and 'mine': render each sweep's records with a table --matrix of its own)"),
             ([_ours("ours-dense"), _declared("mine-0.2", "kwta_ratio=0.2,weight_sparsity=0")],
              "(one a model of your own declared with evaluate --grid-cell, the other one kwta-robust trained: render "
              "each model family with a table --matrix of its own)"),
             ([_sweep_cell("kwta0.2-dense", "tiny", "aaa"), _sweep_cell("kwta0.2-dense", "tiny", "bbb")],
              "(two cells of sweep 'tiny' trained with other recipes: the sweep's folder keeps both; its matrices.* "
              "and report --sweep FOLDER hold the cells its sweep.json lists)")]
    for records, hint in cases:
        with pytest.raises(ConfigError) as caught:
            build_matrices(records)
        assert str(caught.value).endswith("pass one record per cell " + hint)
    with pytest.raises(ConfigError) as caught:  # two records of one family: the refusal as before
        build_matrices([_ours("ours-a"), _ours("ours-b")])
    assert str(caught.value).endswith("pass one record per cell")
