"""The side-by-side tables (`compare`, `table` of records: the `md` layout) say which layers each BPDA attack acted
on, per record, as `evaluate`'s long layout does. Before, a researcher comparing their own kWTA model with its ReLU
twin read only the gates' count (`top-k 0.1 (3 found by the probe)`) and, for the twin, the `bpda-no-layer` flag:
whether BPDA relaxed the kWTA model's gates was in the HTML report and the JSON alone."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_stdout


def _bpda(label: str, layers: dict) -> list:
    return [make_result("pgd", [1, 1, 0, 0], eps=0.1),
            make_result("bpda-smooth", [0, 1, -1, -1], attack="bpda", kind="bpda", eps=0.1, position=1,
                        cumulative=True, bpda_layers=layers)]


def test_side_by_side_tables_name_the_layers_bpda_acted_on() -> None:
    kwta = make_record(_bpda("kwta", {"1": "wrapped gate/volume", "8": "wrapped gate/dense"}), label="mine-kwta")
    relu = make_record(_bpda("relu", {}), label="mine-relu")
    flat = " ".join(render_stdout([kwta, relu], "md").split())
    assert "[mine-kwta] bpda-smooth acted on: 1 (wrapped gate/volume), 8 (wrapped gate/dense)" in flat
    assert "[mine-relu] bpda-smooth acted on" not in flat  # no layer: its bpda-no-layer flag says so
    alone = " ".join(render_stdout([kwta], "md").split())
    assert "- bpda-smooth acted on: 1 (wrapped gate/volume), 8 (wrapped gate/dense)" in alone
    assert alone.count("acted on: 1 (wrapped") == 1
