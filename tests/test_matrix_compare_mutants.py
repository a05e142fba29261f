"""Pins what the robustness matrices (kwta_robust.matrix), the comparison helpers (kwta_robust.compare) and the
comparability notes (kwta_robust.comparability) do at their edges, each against the documented rule written out
here on tiny hand-made records: placement of records without measurements or with zero target sparsity, duplicate
cells, worst-case matrices only where a worst case exists, joined warnings, critical flags once each, the cascade
note, the measured-sparsity legend, label numbering, sample/config checks and the settings-difference reference.
It kills survivors of a mutation round on these three modules."""

from __future__ import annotations

import pytest
from torch import nn

from eval_helpers import SEED_ONLY_HASH, make_record, make_result
from kwta_robust.comparability import LISTED, OTHER_VERSION, comparability_notes, same_samples, settings_differences
from kwta_robust.compare import (
    check_comparable,
    model_labels,
    transfer_sources,
    unique_labels,
    write_comparison,
)
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.loading import ModelForEval
from kwta_robust.matrix import (
    CLEAN,
    DECLARED_METHOD,
    DENSE,
    WORST,
    as_grid,
    build_matrices,
    cell_coordinates,
    clean_matrix,
    critical_flags,
    describe_cells,
    legend,
    long_table,
    matrices_by_point,
)
from kwta_robust.numbers import percent_text
from kwta_robust.results import Flag
from test_matrix import N, cell_record, grid_records
from test_settings_tables import PGD, named, pgd_record

CASCADE_NOTE = "'+' (cascade mode)"


# ---------------------------------------------------------------------------------------------------------------
# kwta_robust.matrix: placement
# ---------------------------------------------------------------------------------------------------------------
def test_a_record_without_measured_sparsity_has_none_and_a_dense_one_keeps_its_measurement() -> None:
    plain = cell_record(0.1, 0.0, DENSE, {0.1: 5}, measured=0.03, sweep=False)
    assert cell_coordinates(plain).measured_sparsity == 0.03  # what the record measured, dense or not
    del plain.model["weight_sparsity"]
    assert cell_coordinates(plain).measured_sparsity is None  # nothing measured: no number, not 0
    matrices = build_matrices([plain])
    assert not any(line.startswith("measured weight sparsity") for line in legend(matrices))


def test_a_sweep_record_also_declared_without_a_method_sits_in_its_sweep_cell() -> None:
    record = cell_record(0.1, 0.8, "magnitude", {0.1: 5})
    record.model["grid_cell"] = {"kwta_ratio": 0.1, "weight_sparsity": 0.8, "pruning_method": DECLARED_METHOD}
    coords = cell_coordinates(record)  # the declaration names no method: it agrees with the sweep's cell
    assert (coords.kwta_ratio, coords.weight_sparsity, coords.pruning_method) == (0.1, 0.8, "magnitude")


def test_a_sweep_record_declared_at_another_weight_sparsity_is_refused() -> None:
    record = cell_record(0.1, 0.8, "magnitude", {0.1: 5})
    record.model["grid_cell"] = {"kwta_ratio": 0.1, "weight_sparsity": 0.5, "pruning_method": "magnitude"}
    with pytest.raises(ConfigError, match="sits in sweep cell kwta_ratio=0.1, weight_sparsity=0.8"):
        cell_coordinates(record)


def test_a_record_without_an_activation_cannot_be_placed() -> None:
    record = cell_record(1.0, 0.0, DENSE, {0.1: 5}, sweep=False)
    del record.model["activation"]
    with pytest.raises(ConfigError, match="activation None"):
        cell_coordinates(record)


def test_pruning_metadata_with_zero_target_sparsity_is_dense() -> None:
    record = cell_record(0.1, 0.0, DENSE, {0.1: 5}, sweep=False)
    record.model["training"] = {"pruning": {"method": "magnitude", "target_sparsity": 0.0}}
    coords = cell_coordinates(record)
    assert (coords.weight_sparsity, coords.pruning_method) == (0.0, DENSE)


def test_two_records_on_one_cell_given_one_after_the_other_are_refused() -> None:
    twins = [cell_record(0.1, 0.0, DENSE, {0.1: 5}), cell_record(0.1, 0.0, DENSE, {0.1: 6})]
    with pytest.raises(ConfigError, match="both sit at k/N=0.1, weight sparsity 0"):
        build_matrices(twins)


def test_a_worst_case_matrix_only_at_points_where_a_record_has_a_worst_case() -> None:
    records = grid_records()
    for record in records:  # no record has a worst case at eps 0.3 (e.g. one written before worst cases)
        record.worst_case = [w for w in record.worst_case if w.eps != 0.3]
    points = [(m.metric, m.eps) for m in build_matrices(records)]
    assert (WORST, 0.1) in points and (WORST, 0.3) not in points and ("pgd", 0.3) in points


# ---------------------------------------------------------------------------------------------------------------
# kwta_robust.matrix: warnings, flags and notes
# ---------------------------------------------------------------------------------------------------------------
def test_a_cell_with_another_config_and_a_contradicted_declaration_gives_both_reasons() -> None:
    records = [cell_record(1.0, 0.0, DENSE, {0.1: 5}), cell_record(0.1, 0.0, DENSE, {0.1: 6}),
               cell_record(0.1, 0.8, "magnitude", {0.1: 7}, sweep=False)]
    odd = records[2]
    odd.config_hash, odd.config = "other", {"seed": 1}
    odd.model["grid_cell"] = {"kwta_ratio": 0.1, "weight_sparsity": 0.8, "pruning_method": "magnitude"}
    odd.model["weight_sparsity"] = {"overall": 0.2, "layers": {"fc": 0.2}}  # 20% zeros against 80% declared
    clean = next(m for m in build_matrices(records) if m.metric == CLEAN)
    reasons = " ".join(clean.warnings[(0.1, 0.8)])
    assert "another evaluation config" in reasons and "(differs in: seed)" in reasons
    assert "declared --grid-cell weight_sparsity=0.8" in reasons
    assert set(clean.warnings) == {(0.1, 0.8)}


def test_critical_flags_are_the_critical_codes_once_each_in_order() -> None:
    record = make_record([make_result("pgd", [1, 0])])
    record.diagnostics = [Flag("masking", "critical", "m"), Flag("noisy", "warning", "w"), Flag("tiny", "info", "i"),
                          Flag("budget", "critical", "b"), Flag("masking", "critical", "again")]
    expected = []
    for flag in record.diagnostics:  # the rule written out: severity critical, first occurrence of each code
        if flag.severity == "critical" and flag.code not in expected:
            expected.append(flag.code)
    assert critical_flags(record) == expected == ["masking", "budget"]


def test_the_cascade_note_is_given_when_any_record_ran_in_cascade_mode() -> None:
    records = grid_records()
    records[0].mode = "independent"
    assert any(CASCADE_NOTE in line for line in legend(build_matrices(records)))
    for record in records:
        record.mode = "independent"
    assert not any(CASCADE_NOTE in line for line in legend(build_matrices(records)))


def test_the_measured_sparsity_note_gives_each_columns_range_once() -> None:
    records = grid_records()
    records[1].model["weight_sparsity"] = {"overall": 0.85}  # column 0.8: ReLU 85%, k/N 0.1 75%; column 0: 0
    records[3].model["weight_sparsity"] = {"overall": 0.75}
    notes = legend(build_matrices(records))
    lines = [line for line in notes if line.startswith("measured weight sparsity")]
    assert len(lines) == 1  # one per pruning method, however many matrices (metrics, points) share it
    low, high = percent_text(min(0.85, 0.75)), percent_text(max(0.85, 0.75))
    assert lines[0].endswith(f"0: {percent_text(0.0)}%, 0.8: {low}–{high}%")
    assert len(notes) == len(set(notes))


def test_the_long_table_gives_each_cells_n_and_correct_in_their_columns() -> None:
    records = grid_records()
    table = long_table(build_matrices(records))
    col = {name: i for i, name in enumerate(table.headers)}
    pgd = [row for row in table.rows if row[col["metric"]].value == "pgd" and row[col["eps"]].value == 0.1]
    by_cell = {(row[col["kwta_ratio"]].value, row[col["weight_sparsity"]].value):
               (row[col["n"]].value, row[col["correct"]].value) for row in pgd}
    # grid_records: PGD at eps 0.1 keeps 6 / 5 / 9 / 8 of N samples
    assert by_cell == {(1.0, 0.0): (N, 6), (1.0, 0.8): (N, 5), (0.1, 0.0): (N, 9), (0.1, 0.8): (N, 8)}


def test_matrices_by_point_go_up_in_eps_and_the_clean_matrix_is_the_methods() -> None:
    records = grid_records() + [cell_record(0.1, 0.8, "rigl", {0.1: 3, 0.3: 2})]
    matrices = build_matrices(records)
    for (metric, _, method), group in matrices_by_point(matrices).items():
        assert metric != CLEAN and [m.eps for m in group] == sorted(m.eps for m in group) == [0.1, 0.3]
        assert {m.pruning_method for m in group} == {method}
    for method in ("magnitude", "rigl"):
        clean = clean_matrix(matrices, method)
        assert clean is not None and clean.metric == CLEAN and clean.pruning_method == method
    assert clean_matrix(matrices, "snip") is None


def test_rows_are_the_relu_twin_then_decreasing_k_over_n() -> None:
    ratios = [0.05, 1.0, 0.3, 0.1]
    records = [cell_record(ratio, 0.0, DENSE, {0.1: 5}) for ratio in ratios]
    expected = [1.0] + sorted((r for r in ratios if r != 1.0), reverse=True)
    assert expected == [1.0, 0.3, 0.1, 0.05]
    assert all(m.ratios == expected for m in build_matrices(records))


def test_cells_are_described_row_major_and_the_grid_is_rows_by_columns() -> None:
    pgd = next(m for m in build_matrices(grid_records()) if m.metric == "pgd" and m.eps == 0.1)
    assert pgd.ratios == [1.0, 0.1] and pgd.sparsities == [0.0, 0.8]
    assert describe_cells(pgd) == [(1.0, 0.0), (1.0, 0.8), (0.1, 0.0), (0.1, 0.8)]
    robust = {(1.0, 0.0): 6, (1.0, 0.8): 5, (0.1, 0.0): 9, (0.1, 0.8): 8}  # grid_records' PGD counts at eps 0.1
    assert as_grid(pgd) == [[robust[(r, s)] / N for s in (0.0, 0.8)] for r in (1.0, 0.1)]


# ---------------------------------------------------------------------------------------------------------------
# kwta_robust.compare
# ---------------------------------------------------------------------------------------------------------------
def test_unique_labels_number_repeats_past_names_already_taken() -> None:
    names = ["a", "a-2", "a", "b", "a"]
    labels = unique_labels(names)
    assert labels == ["a", "a-2", "a-3", "b", "a-4"]  # -2 is taken by the second name: the next free number
    assert len(set(labels)) == len(labels)


@pytest.mark.parametrize("labels, match", [(["x", ""], "one non-empty name"), (["x", "y", "x"], "'x' is given twice"),
                                           (["x", "x", "y"], "'x' is given twice")])
def test_model_labels_refuse_empty_and_repeated_names(labels: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        model_labels(["a.pt", "b.pt", "c.pt"][:len(labels)], labels)


def models_for(*seeds: int | None) -> list[ModelForEval]:
    """Tiny models for check_comparable, each with ``data_split_seed`` (``None``: none in its metadata)."""
    return [ModelForEval(nn.Linear(2, 2), {}, f"m{i}", {} if seed is None else {"data_split_seed": seed})
            for i, seed in enumerate(seeds)]


def test_check_comparable_refuses_what_compare_cannot_pair() -> None:
    cfg = EvalConfig(dataset="toy")
    check_comparable(models_for(0, 0), cfg, None, None)  # two models on one split, no shards: fine
    check_comparable(models_for(0, None), cfg, None, None)  # no seed in the metadata: the default split, seed 0
    with pytest.raises(ConfigError, match="at least two models"):
        check_comparable(models_for(0), cfg, None, None)
    with pytest.raises(ConfigError, match="different data splits"):
        check_comparable(models_for(0, 1, 2), cfg, None, None)
    with pytest.raises(ConfigError, match="different data splits"):
        check_comparable(models_for(1, None), cfg, None, None)


def test_transfer_sources_are_every_other_model_and_none_without_transfer() -> None:
    models = models_for(0, 0, 0)
    assert list(transfer_sources(models, models[1], True)) == ["m0", "m2"]
    assert transfer_sources(models, models[1], False) == {}


def test_write_comparison_puts_the_callers_notes_first(tmp_path) -> None:
    a = make_record([make_result("pgd", [1, 0, 1, 1])], label="a")
    b = make_record([make_result("pgd", [1, 0, 0, 1])], label="b")
    b.config_hash = "other"  # a comparability note of the table's own, which the caller's note goes before
    markdown, html = write_comparison([a, b], tmp_path, notes=["first of all"])
    notes = [line for line in markdown.read_text().splitlines() if line.startswith("- ")]
    assert notes[0] == "- first of all" and "different evaluation configs" in notes[1]
    assert html.exists()


# ---------------------------------------------------------------------------------------------------------------
# kwta_robust.comparability
# ---------------------------------------------------------------------------------------------------------------
def test_records_on_no_samples_or_other_indices_are_not_the_same_samples() -> None:
    a, b = make_record([make_result("pgd", [1, 0])], label="a"), make_record([make_result("pgd", [1, 0])], label="b")
    assert same_samples(a, b)
    b.dataset = {**b.dataset, "indices": [1, 0]}  # the same samples in another order: not paired
    assert not same_samples(a, b)
    empty_a, empty_b = make_record([], n=0, clean_flags=[]), make_record([], n=0, clean_flags=[])
    assert not same_samples(empty_a, empty_b)  # nothing evaluated: nothing to pair


def test_two_config_hashes_are_noted_and_one_record_has_no_notes() -> None:
    a, b = make_record([make_result("pgd", [1, 0])], label="a"), make_record([make_result("pgd", [1, 0])], label="b")
    assert comparability_notes([a, b]) == []
    b.config_hash = "other"
    notes = comparability_notes([a, b])
    assert len(notes) == 1 and notes[0].startswith("the records ran different evaluation configs (config hash "
                                                   + SEED_ONLY_HASH[:8])
    assert comparability_notes([b]) == []


def test_a_sanity_attacks_settings_are_compared_too() -> None:
    a, b = pgd_record("a"), pgd_record("b")
    b.sanity[0].settings = {**PGD, "steps": 200}  # pgd_record's sanity attack stores steps 100
    assert settings_differences(named(a, b)) == [f"sanity-pgd: steps 100 in a, 200 in b{OTHER_VERSION}"]


def test_the_settings_most_records_share_are_the_reference() -> None:
    records = [pgd_record("a", steps=100), pgd_record("b"), pgd_record("c"), pgd_record("d")]
    # b, c and d share steps 40: the reference, counted (more than LISTED hold it); a's 100 is named first
    assert LISTED == 2
    assert settings_differences(named(*records)) == [f"pgd: steps 100 in a, 40 in the other 3 records{OTHER_VERSION}"]
    two = [pgd_record("a", steps=100), pgd_record("b"), pgd_record("c")]  # LISTED hold the reference: named
    assert settings_differences(named(*two)) == [f"pgd: steps 100 in a, 40 in b, c{OTHER_VERSION}"]


def test_an_attacks_standalone_matrix_comes_before_its_cumulative_one() -> None:
    records = grid_records()  # BPDA after PGD in cascade mode: cumulative
    for record in records[2:]:  # ... and standalone in the k/N 0.1 records, evaluated in independent mode
        record.mode = "independent"
        for unit in record.results:
            unit.cumulative = False
    bpda = [(m.eps, m.cumulative) for m in build_matrices(records) if m.metric == "bpda"]
    assert bpda == [(0.1, False), (0.1, True), (0.3, False), (0.3, True)]


def test_an_entry_differing_inside_the_named_setting_is_not_counted_with_the_reference() -> None:
    inner = {**PGD, "inner": [{"attack": "apgd-ce", "steps": 100}]}
    records = [pgd_record("rec_a", settings=inner), pgd_record("rec_b", settings=inner),
               pgd_record("rec_c", settings={**PGD, "inner": "pgd"}),  # names the path: inner, replaced whole
               pgd_record("rec_d", settings={**PGD, "inner": [{"attack": "apgd-ce", "steps": 150}]})]
    line = settings_differences(named(*records))[0]
    values, _, rest = line.partition(";")
    # rec_d has no value of "inner" to compare (only inner[0].steps differs): it is neither named with the
    # reference's value nor counted among the records holding it; its own difference follows
    assert values.startswith("pgd: inner ") and "rec_a, rec_b" in values and "rec_d" not in values
    assert "the other" not in values and rest.startswith(" rec_d: inner[0].steps 150 instead of 100")
