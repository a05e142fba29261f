"""A top-k gate built inline in a module's ``forward`` (a selection with ``gate`` in the record's
``detection.selections``: kwta_robust/detect_selections.py) in the tables' text (kwta_robust/layer_text.py): the
activation column read ``none`` and the layer probe's note ``no top-k gate, piecewise-constant or randomized layer``
for such a model, though BPDA relaxed that gate (``1 (wrapped inline)`` in its ``bpda_layers``) — both read only the
gates of modules (``detection.layers``). They now name it: ``top-k dense inline (1 found by the probe)``, combined
with module and max-pool gates by ``+``, and the note lists it with its module, grouping and selection operation."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import gates_styles
import test_pool_module_poolgate as poolgate
from eval_helpers import make_record
from kwta_robust.evaluate import evaluate
from kwta_robust.layer_text import detected_gates_text, layer_notes
from kwta_robust.report import activation_text
from kwta_robust.results import EvalRecord, load_record
from test_detect_inline_gates import config, data
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import RATIO, X, Sparsify2D, seeded


def mixed() -> nn.Module:
    """A top-k gate module (``1``), a block building a dense top-k gate inline (``2``) and a max-pool gate module
    (``4``)."""
    return seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), Sparsify2D(), gates_styles.Block(gates_styles.scatter_gather),
        nn.MaxPool2d(3, 1, 1), poolgate.Gate("pool_max"), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 3)))


MODELS = {"dense": lambda: gates_styles.net("scatter_gather"), "lwta": lambda: gates_styles.net("lwta_amax"),
          "mixed": mixed}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EvalRecord]:
    """Each of :data:`MODELS` evaluated once (PGD, then BPDA with the smooth surrogate), its record as read back."""
    folder, loaded = tmp_path_factory.mktemp("records"), {}
    for name, build in MODELS.items():
        model, path = build(), folder / f"{name}.json"
        evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, out_path=path,
                 progress=False)
        loaded[name] = load_record(Path(path))
    return loaded


def test_the_activation_names_a_gate_built_inline(records: dict[str, EvalRecord]) -> None:
    for name, ratio_grouping in (("dense", f"{gates_styles.K / 256:.3g} dense"), ("lwta", "0.5 block-2")):
        record = records[name]
        assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}  # BPDA acted on it
        # k/N from the k and group size the selection records (0.199: 51 of 256 units; an LWTA of blocks of 2: 1/2)
        shown = f"top-k {ratio_grouping} inline (1 found by the probe)"
        assert detected_gates_text(record) == activation_text(record) == shown  # it read "?" (model of your own)
    k = int(RATIO * 4 * 8 * 8)  # Sparsify2D's k of C·H·W
    assert detected_gates_text(records["mixed"]) == (
        f"top-k {k / 256:.3g} volume (1 found by the probe) + top-k {gates_styles.K / 256:.3g} dense inline (1 found "
        "by the probe) + "
        "max-pool WTA (1 found by the probe)")


def test_the_layer_notes_list_a_gate_built_inline(records: dict[str, EvalRecord]) -> None:
    assert layer_notes(records["dense"])[0].endswith(
        f"leaf modules): 1 (inline): top-k gate (dense, k={gates_styles.K}/256, built from topk)")
    assert layer_notes(records["lwta"])[0].endswith("leaf modules): 1 (inline): top-k gate (block-2, k=1/2, built from "
                                                    "amax)")
    note = layer_notes(records["mixed"])[0]
    assert "1 (Sparsify2D): top-k gate (volume, k=" in note and "4 (Gate): max-pool winner-take-all gate (" in note
    assert note.endswith(f"; 2 (inline): top-k gate (dense, k={gates_styles.K}/256, built from topk)")
    assert "bpda acted on: " in "\n".join(layer_notes(records["dense"]))


def _selections_record(selections: list[dict]) -> EvalRecord:
    """A record of a model without our kWTA layers whose probe found no module gate, only ``selections``."""
    record = make_record(detection={"n": 16, "probed": 5, "layers": [], "selections": selections})
    record.model.update(activation="none", num_kwta_layers=0, kwta_ratio=None)
    return record


def test_gates_per_call_ties_and_mixed_groupings_of_inline_gates() -> None:
    twice = {"op": "topk", "kind": "selection", "modules": ["", "body"], "calls": 1, "gate": "dense", "gates": 2,
             "ties_broken": 0.001, "probed": False}
    root = {"op": "max", "kind": "selection", "modules": [""], "calls": 1, "gate": "block-2", "probed": False}
    step = {"op": "sign", "kind": "step", "modules": ["", "body"], "calls": 1, "probed": False}
    record = _selections_record([twice, root, step])
    assert detected_gates_text(record) == "top-k inline (3 found by the probe)"  # two groupings: none named
    assert layer_notes(record)[0].endswith(
        "leaf modules): body (inline): top-k gate (dense, built from topk, 2 gates per call, read with ties broken "
        "by seeded noise); (model) (inline): top-k gate (block-2, built from max)")
    assert detected_gates_text(_selections_record([step])) == ""  # no gate: the activation column as before
    assert layer_notes(_selections_record([step]))[0].endswith("no top-k gate, piecewise-constant or randomized layer")
