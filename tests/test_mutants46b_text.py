"""Mutation review (session 46, second pass) of the text that reads inline gates' k/N and the layers BPDA acted on:
each test kills a mutant of kwta_robust/layer_text.py or matrix_checks.py that today's tests let survive."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.html_records import detection_view
from kwta_robust.layer_text import _ratio_grouping, inline_gate_layers, layer_notes, probe_ratio
from kwta_robust.matrix_checks import _pool_twin_conflict, gate_ratios, grid_ratio_conflict
from kwta_robust.narrow import _detail_notes
from kwta_robust.results import NoiseResult


def _sel(module: str, **entry: object) -> dict:
    return {"op": "topk", "kind": "topk", "modules": ["", module], "calls": 1, "gate": "dense", **entry}


def _gate(name: str, k: int, n: int, grouping: str | None = "dense") -> dict:
    return {"name": name, "kinds": ["gate"], "grouping": grouping, "evidence": {"k": k, "group_size": n}}


def _record(selections: list[dict] = (), layers: list[dict] = (), grid_ratio: float | None = None) -> object:
    rec = make_record(detection={"selections": list(selections), "layers": list(layers)})
    if grid_ratio is not None:
        rec.model["grid_cell"] = {"kwta_ratio": grid_ratio, "weight_sparsity": 0.0}
    return rec


def test_probe_ratio_reads_inline_gates_and_none_where_one_holds_no_k() -> None:
    assert probe_ratio(_record([_sel("blk", k=5, group_size=50)])) == 0.1
    assert probe_ratio(_record([_sel("blk")], [_gate("fc", 10, 100)])) is None  # a record before k: unknown
    assert probe_ratio(_record([_sel("blk", k=5, group_size=50)], [_gate("fc", 10, 100)])) == 0.1


def test_one_module_building_gates_of_two_k_is_two_inline_gates() -> None:
    layers = inline_gate_layers(_record([_sel("blk", k=5, group_size=50), _sel("blk", k=8, group_size=16),
                                         _sel("blk", k=5, group_size=50)]))
    assert [g["evidence"] for g in layers] == [{"k": 5, "group_size": 50}, {"k": 8, "group_size": 16}]
    assert [g["name"] for g in layers] == ["blk (inline)"] * 2


def test_only_a_k_from_1_to_the_group_size_counts() -> None:
    entries = [_sel(f"b{i}", k=k, group_size=8) for i, k in enumerate([8, 0, 9, True])]
    assert [g["evidence"] for g in inline_gate_layers(_record(entries))] == [{"k": 8, "group_size": 8}, {}, {}, {}]


def test_gates_of_unknown_grouping_do_not_hide_the_others_grouping() -> None:
    assert _ratio_grouping([_gate("a", 1, 10), _gate("b", 2, 20, grouping=None)]) == ["top-k", "0.1", "dense"]


def test_the_notes_keep_each_attacks_first_layers_and_say_when_it_acted_on_none() -> None:
    first = make_result("bpda-smooth", [0, 1], attack="bpda", kind="bpda", eps=0.1, bpda_layers={"1": "wrapped"})
    later = make_result("bpda-smooth", [0, 1], attack="bpda", kind="bpda", eps=0.2, bpda_layers={"2": "other"})
    none = make_result("bpda-id", [0, 1], attack="bpda", kind="bpda", eps=0.1, bpda_layers={})
    notes = layer_notes(make_record([first, later, none]))
    assert notes == ["bpda-smooth acted on: 1 (wrapped)", "bpda-id acted on: no layer"]


def test_gate_ratios_lists_module_and_inline_gates() -> None:
    rec = _record([_sel("blk", k=5, group_size=50)], [_gate("fc", 10, 100)])
    assert gate_ratios(rec) == ["fc 10/100", "blk (inline) 5/50"]


def test_the_relu_row_names_inline_gates_without_k_and_every_measured_ratio() -> None:
    rec = _record([_sel("c")], grid_ratio=1.0)
    assert "found top-k gates built inline in layer c (inline), their k not recorded; declare" in \
        grid_ratio_conflict(rec)
    rec = _record([_sel("a", k=5, group_size=50), _sel("b", k=20, group_size=50), _sel("c")], grid_ratio=1.0)
    assert "measured k/N 5/50 (0.1), 20/50 (0.4) at its top-k gates in layers a (inline), b (inline), c (inline); " \
           "declare" in grid_ratio_conflict(rec)


def test_four_names_are_listed_without_an_ellipsis() -> None:
    assert "in layers a, b, c, d; declare" in _pool_twin_conflict(["a", "b", "c", "d"])
    assert "in layers a, b, c, d, ...; declare" in _pool_twin_conflict(["a", "b", "c", "d", "e"])


def test_the_relu_row_names_max_pool_gates_and_inline_gates_without_k_together() -> None:
    pool = {"name": "wta", "kinds": ["max-pool-gate"], "evidence": {}}
    text = grid_ratio_conflict(_record([_sel("c")], [pool], grid_ratio=1.0))
    assert "found winner-take-all gates built from a max-pool in layer wta and top-k gates built inline in layer " \
           "c (inline), their k not recorded; declare" in text


def test_the_noise_score_note_follows_the_last_noise_probe_and_precedes_the_flags() -> None:
    rec = make_record([make_result("pgd", [1, 1, 0, 0], eps=0.1)], label="m")
    for kind, score in (("numenta", 5), ("gaussian", 6)):
        rec.noise.append(NoiseResult(kind, [0.0, 0.5], 1, 3, {"noise_score": score, "num_samples": 4}, 0.2))
    notes = _detail_notes(rec)
    assert [n.split(":")[0] for n in notes] == ["m", "noise numenta", "noise gaussian", "noise score", "diagnostics"]


def test_the_html_detection_view_leaves_what_is_no_list_of_modules_as_it_is() -> None:
    assert detection_view({"layers": []}) == {"layers": []}
    odd = {"selections": [{"op": "topk", "modules": "blk"}, {"op": "topk"}, "x"]}
    assert detection_view(odd) == odd
    assert detection_view({"selections": [{"modules": ["", "1"]}]}) == {"selections": [{"modules": ["(model)", "1"]}]}
