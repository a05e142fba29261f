"""Records with this session's layer kind ``max-pool-gate`` (kwta_robust/detect.py; attacks/pool_gates.py) through
the readers: the layer probe's notes (kwta_robust/layer_text.py, in every table's notes and the HTML/Markdown
report) listed such a layer by its bare kind, ``1 (Gate): max-pool-gate``, and dropped its evidence (the max-pool,
the share of units kept, a module returning the 0/1 mask), and the activation column read ``none`` for a model
whose only gates are max-pool winner-take-all gates (only top-k gates were named there); ``--grid-cell
kwta_ratio=1.0`` put such a model in the matrix's ReLU-twin row unmarked and unflagged (only top-k gates contradicted
a declared k/N)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from torch import nn

import test_pool_module_poolgate as poolgate
from kwta_robust.cli import main
from kwta_robust.evaluate import evaluate
from kwta_robust.layer_text import detected_gates_text, layer_notes
from kwta_robust.matrix_checks import grid_ratio_conflict
from kwta_robust.report import activation_text
from kwta_robust.results import EvalRecord, load_record
from kwta_robust.runs import declare_grid_cell
from test_detect_inline_gates import config, data
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import RATIO, X, Sparsify2D, seeded


def mixed() -> nn.Module:
    """A top-k gate (``Sparsify2D``, ``1``) and a max-pool gate module (``3``) side by side."""
    return seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), Sparsify2D(), nn.MaxPool2d(3, 1, 1), poolgate.Gate("pool_max"),
        nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)))


MODELS = {"module": lambda: poolgate.sequential(poolgate.Gate("pool_max")),
          "mask": poolgate.MODELS["its mask, applied by the parent"][0], "mixed": mixed}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each of :data:`MODELS` evaluated once (PGD, then BPDA with the smooth surrogate), its record's path."""
    folder, paths = tmp_path_factory.mktemp("records"), {}
    for name, build in MODELS.items():
        model = build()
        paths[name] = folder / f"{name}.json"
        evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, out_path=paths[name],
                 progress=False)
    return paths


def pool_layer(record: EvalRecord) -> dict:
    (layer,) = [layer for layer in record.detection["layers"] if "max-pool-gate" in layer["kinds"]]
    return layer


def test_the_layer_notes_name_a_max_pool_gate_with_its_evidence(records: dict[str, Path]) -> None:
    for name, gate, mask, what in (("module", "1 (Gate)", "", "BPDA's smooth surrogate relaxes it"),
                                   ("mask", "1.mask (MaskOf)", ", returns the 0/1 mask",
                                    "bpda_layers: auto leaves it out")):
        record = load_record(records[name])
        kept = 100 * pool_layer(record)["evidence"]["density"]
        assert layer_notes(record)[0].endswith(
            f"leaf modules): {gate}: max-pool winner-take-all gate (max_pool2d, {kept:.3g}% of units kept{mask}; "
            f"{what})")  # (the module's gate a result: attacks/pool_relax.py relaxes it; not a top-k inline too)
    record = load_record(records["mixed"])
    assert "3 (Gate): max-pool winner-take-all gate (max_pool2d, " in layer_notes(record)[0]
    assert "1 (Sparsify2D): top-k gate (volume, k=" in layer_notes(record)[0]  # as before


def test_the_activation_names_max_pool_gates_and_no_top_k_of_theirs(records: dict[str, Path]) -> None:
    for name in ("module", "mask"):
        record = load_record(records[name])
        assert detected_gates_text(record) == activation_text(record) == "max-pool WTA (1 found by the probe)"
    k = int(RATIO * 4 * 8 * 8)  # Sparsify2D's k of C·H·W
    assert detected_gates_text(load_record(records["mixed"])) == (
        f"top-k {k / 256:.3g} volume (1 found by the probe) + max-pool WTA (1 found by the probe)")


def cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["-q", *args])
    assert "Traceback" not in err.getvalue()
    return status, out.getvalue()


def test_every_reader_takes_the_record_and_renders_the_max_pool_gate(records: dict[str, Path], tmp_path: Path) -> None:
    path = str(records["mask"])
    for fmt in ("csv", "json", "latex", "md", "wide"):
        status, text = cli("table", "--format", fmt, path)
        assert status == 0 and "max-pool WTA (1 found by the probe)" in text, fmt
    assert cli("table", "--protocol", path)[0] == 0
    assert cli("diff", path, path)[0] == 0
    assert cli("diff", path, str(records["module"]))[0] == 1  # two models: they differ, neither is refused
    for suffix in ("md", "html"):  # the Markdown report is the wide table: no layer notes there
        assert cli("report", path, "--out", str(tmp_path / f"r.{suffix}"))[0] == 0
        assert "max-pool WTA (1 found by the probe)" in (tmp_path / f"r.{suffix}").read_text(), suffix
    assert "1.mask (MaskOf): max-pool winner-take-all gate (max_pool2d, " in (tmp_path / "r.html").read_text()


def test_the_selection_flag_names_the_max_pool_gate_module_once(records: dict[str, Path]) -> None:
    """It read ``calls max_pool2d in the forward of 1 (1 call(s) a forward) in 1, which the layer probe read as``."""
    assert [f for f in load_record(records["module"]).diagnostics if f.code == "selections-outside-layers"] == []
    for name, gate in (("mask", "1.mask"),):  # the module's gate: relaxed by BPDA (attacks/pool_relax.py), no flag
        (flag,) = [f for f in load_record(records[name]).diagnostics if f.code == "selections-outside-layers"]
        assert flag.message.startswith(f"the model calls max_pool2d in the forward of {gate} (1 call(s) a forward), "
                                       "which the layer probe read as a max-pool winner-take-all gate BPDA cannot "
                                       "relax, so no BPDA attack replaced it: ")


def test_a_max_pool_gate_model_declared_the_relu_twin_is_flagged_and_marked(records: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    record, out = load_record(records["module"]), tmp_path / "twin.json"
    declare_grid_cell(record, {"kwta_ratio": 0.2, "weight_sparsity": 0.0, "pruning_method": "none"}, out)
    assert grid_ratio_conflict(record) is None  # no k/N to judge another row by
    declare_grid_cell(record, {"kwta_ratio": 1.0, "weight_sparsity": 0.0, "pruning_method": "none"}, out)
    conflict = ("declared --grid-cell kwta_ratio=1 (the ReLU twin) but the layer probe found winner-take-all gates "
                "built from a max-pool in layer 1; declare the cell again with the ratio the model has (nothing is "
                "evaluated again)")
    (flag,) = [f for f in load_record(out).diagnostics if f.code == "grid-cell-ratio"]
    assert (flag.message, flag.evidence) == (conflict, {"declared": 1.0, "measured_gates": [], "pool_gates": ["1"]})
    status, text = cli("table", "--matrix", str(out))
    rows = [line for line in text.splitlines() if line.startswith("| 1.0 (ReLU twin)")]
    # every matrix marks the cell ('*'), after the '!' of the record's critical flag (mwarn53)
    assert status == 0 and rows and all(row.endswith(")!* |") for row in rows)
    assert conflict in " ".join(text.split())
