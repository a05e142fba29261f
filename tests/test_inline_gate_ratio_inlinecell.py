"""A model whose ONLY top-k gate is built inline in its own ``forward`` (``h · (h ≥ h.topk(k).values[:, -1:])``,
a selection with ``gate`` in ``record.detection["selections"]``) in the matrices: ``grid-cell-ratio`` and the
matrices' placement read the module gates only (``detected_layers(record, "gate")``), so ``--grid-cell
kwta_ratio=1`` (the ReLU twin's row) declared for it raised no flag and left its cell unmarked, and a record of it
(ReLU beside the inline gate) declaring no cell sat in the ReLU twin's row of ``table --matrix`` unasked. The layer
probe now records the inline gate's ``k`` and ``group_size`` in its selection entry, and the matrices, the
activation text and the notes read it beside the module gates; a record before (no ``k`` in the entry) still
contradicts the ReLU row. Second: the HTML report showed the model itself (``""``) in a selection's ``modules`` as
nothing (``, 1``), where the notes say ``(model)``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from eval_helpers import make_record
from kwta_robust.api import evaluate_model
from kwta_robust.detect import detect_layers
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_matrices
from kwta_robust.html_records import extra_sections
from kwta_robust.layer_text import detected_gates_text, inline_text, module_text
from kwta_robust.matrix import build_matrices
from kwta_robust.matrix_checks import GRID_RATIO_FLAG, gate_ratios, grid_ratio_conflict
from kwta_robust.results import EvalRecord

K, N = 8, 32  # winners of the 32 hidden units per sample: k/N 0.25
CONFIG = {"dataset": "mnist5k", "n_examples": 16, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 2}}]}


class InlineOnly(nn.Module):
    """The user's net: ReLU, then a dense top-k gate written inline in the model's own forward (no gate module)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(64, N), nn.ReLU(), nn.Linear(N, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.fc1(x.flatten(1)))
        return self.fc2(h * (h >= h.topk(K, dim=1).values[:, -1:]))


def _data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 8, 8, generator=generator), torch.randint(0, 3, (16,), generator=generator)


def _evaluated(grid_cell: dict | None) -> EvalRecord:
    torch.manual_seed(0)
    x, y = _data()
    return evaluate_model(InlineOnly(), CONFIG, x, y, label="inline", grid_cell=grid_cell, threads=1)


def _old_record(declared: float, **counted: int) -> EvalRecord:
    """A record of that model with one inline gate's selection entry (``counted``: its ``k``, ``group_size``;
    none: a record before they were recorded) and the declared ``kwta_ratio``."""
    selection = {"op": "topk", "kind": "selection", "modules": [""], "calls": 1, "gate": "dense", **counted,
                 "probed": False}
    record = make_record(detection={"n": 16, "probed": 3, "layers": [], "selections": [selection]})
    record.model.update(activation="relu", num_kwta_layers=0, kwta_ratio=None,
                        grid_cell={"kwta_ratio": declared, "weight_sparsity": 0.0, "pruning_method": "none"})
    return record


def test_the_probe_records_the_k_of_an_inline_gate() -> None:
    torch.manual_seed(0)
    detection = detect_layers(InlineOnly(), _data()[0], log=False)
    assert detection.names("gate") == []  # no gate module: the gate is the selection's
    assert detection.selections == [{"op": "topk", "kind": "selection", "modules": [""], "calls": 1,
                                     "gate": "dense", "k": K, "group_size": N, "probed": False}]


def test_the_relu_row_declared_for_an_inline_only_kwta_is_flagged_and_marked_end_to_end() -> None:
    record = _evaluated({"kwta_ratio": 1, "weight_sparsity": 0})
    flags = {f.code: f for f in record.diagnostics}
    assert flags[GRID_RATIO_FLAG].evidence == {"declared": 1.0, "measured_gates": [f"(model) (inline) {K}/{N}"]}
    assert flags[GRID_RATIO_FLAG].message == (
        f"declared --grid-cell kwta_ratio=1 (the ReLU twin) but the layer probe measured k/N {K}/{N} (0.25) at its "
        "top-k gates in layer (model) (inline); declare the cell again with the ratio the model has (nothing is "
        "evaluated again): --grid-cell kwta_ratio=0.25,weight_sparsity=0")  # the row its gates show, appended
    text = render_matrices(build_matrices([record]), "md")
    assert "warning: * = not comparable with the other cells" in text and "kwta_ratio=1 (the ReLU twin)" in text
    assert detected_gates_text(record) == f"top-k {K / N:.3g} dense inline (1 found by the probe)"


def test_an_undeclared_relu_record_with_an_inline_gate_is_not_the_relu_twin() -> None:
    record = _evaluated(None)
    assert (record.model["activation"], record.model["activation_layers"]) == ("top-k (detected)", "relu")
    with pytest.raises(ConfigError, match=rf"has activation 'top-k \(detected\)' \(kwta_ratio None\); the layer "
                                          rf"probe found top-k gates in layer \(model\) \(inline\) \(k/N {K}/{N}\); "
                                          "a matrix row needs ReLU without"):
        build_matrices([record])


def test_a_declared_ratio_is_held_against_the_recorded_k_of_an_inline_gate() -> None:
    # 0.25 · 32 = 8 winners, as measured; floor(0.2 · 32) = 6 is two units from 8, more than rounding; 0.5 is 16
    for declared, judged in ((0.25, False), (0.2, True), (0.5, True)):
        conflict = (f"declared --grid-cell kwta_ratio={declared:g} but the layer probe measured k/N 8/32 (0.25) at "
                    "its top-k gates in layer (model) (inline); declare the cell again with the ratio the model has "
                    "(nothing is evaluated again): --grid-cell kwta_ratio=0.25,weight_sparsity=0")
        assert grid_ratio_conflict(_old_record(declared, k=K, group_size=N)) == (conflict if judged else None)


def test_a_record_before_the_k_was_recorded_still_contradicts_the_relu_row_only() -> None:
    assert grid_ratio_conflict(_old_record(1.0)) == (
        "declared --grid-cell kwta_ratio=1 (the ReLU twin) but the layer probe found top-k gates built inline in "
        "layer (model) (inline), their k not recorded; declare the cell again with the ratio the model has (nothing "
        "is evaluated again)")
    assert grid_ratio_conflict(_old_record(0.5)) is None  # no k/N to hold another row against
    assert gate_ratios(_old_record(0.5)) == ["(model) (inline)"]
    assert detected_gates_text(_old_record(0.5)) == "top-k dense inline (1 found by the probe)"
    record = _old_record(0.5)
    del record.model["grid_cell"]
    with pytest.raises(ConfigError, match=r"the layer probe found top-k gates in layer \(model\) \(inline\) \(k not "
                                                r"recorded\); a matrix row"):
        build_matrices([record])


def test_the_notes_give_the_k_of_an_inline_gate_where_recorded() -> None:
    selection = _old_record(0.5, k=K, group_size=N).detection["selections"][0]
    assert inline_text(selection) == f"(model) (inline): top-k gate (dense, k={K}/{N}, built from topk)"
    assert inline_text(_old_record(0.5).detection["selections"][0]) == (
        "(model) (inline): top-k gate (dense, built from topk)")


def test_the_html_report_names_the_model_itself_in_a_selections_modules() -> None:
    record = make_record(detection={"n": 4, "probed": 2, "layers": [], "selections": [
        {"op": "topk", "kind": "selection", "modules": ["", "1"], "calls": 1, "probed": True},
        {"op": "topk", "kind": "selection", "modules": [""], "calls": 1, "gate": "dense", "probed": False}]})
    (section,) = extra_sections([record])
    body = str(section.body)
    assert "<td>(model), 1</td>" in body and "<td>(model)</td>" in body
    assert "<td>, 1</td>" not in body and "<td></td>" not in body
    assert record.detection["selections"][0]["modules"] == ["", "1"]  # the record is left as it was
    assert module_text("") == "(model)" and module_text("features.1") == "features.1"
