"""Robustness matrices of models that are not ours: ``evaluate --grid-cell kwta_ratio=R,weight_sparsity=S`` places a
record whose kWTA ratio and pruning no kwta-robust checkpoint describes (a foreign top-k model, its ReLU twin written
with ``F.relu``), also on a finished record (a declaration, not a measurement: nothing is evaluated again); without
it ``table --matrix`` says what the layer probe found and how to place the record."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from bpda_models import DenseTopK
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import DECLARED_METHOD, DENSE, cell_coordinates, parse_grid_cell
from kwta_robust.results import load_record


class Rectifier(nn.Module):
    """``torch.relu`` in a module of one's own (not ``nn.ReLU``)."""

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(h)


class TopKMLP(nn.Module):
    """An MLP for scikit-learn's 8 × 8 digits with a foreign top-k (``k`` of 32 hidden units), or a rectifier
    (``k=None``): the describer sees neither as kWTA or ReLU (activation ``none``)."""

    def __init__(self, k: int | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
        self.act = Rectifier() if k is None else DenseTopK(k)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def top_k_net() -> nn.Module:
    return TopKMLP(4)


def relu_net() -> nn.Module:
    return TopKMLP(None)


@pytest.mark.parametrize("text, cell", [
    ("kwta_ratio=0.125,weight_sparsity=0.5", {"kwta_ratio": 0.125, "weight_sparsity": 0.5,
                                              "pruning_method": DECLARED_METHOD}),
    (" kwta_ratio=1.0 , weight_sparsity=0 ", {"kwta_ratio": 1.0, "weight_sparsity": 0.0, "pruning_method": DENSE}),
    ("weight_sparsity=0.9,kwta_ratio=0.05,pruning_method=snip",
     {"kwta_ratio": 0.05, "weight_sparsity": 0.9, "pruning_method": "snip"}),
])
def test_grid_cells_parse(text, cell) -> None:
    assert parse_grid_cell(text) == cell


@pytest.mark.parametrize("text, match", [
    ("0.1,0.5", "write e.g. kwta_ratio=0.1,weight_sparsity=0.5"),
    ("kwta_ratio=0.1", "missing weight_sparsity"),
    ("kwta_ratio=0.1,weight_sparsity=0,k=3", "unknown key 'k'"),
    ("kwta_ratio=0.1,kwta_ratio=0.2,weight_sparsity=0", "a key given twice"),
    ("kwta_ratio=ten,weight_sparsity=0", "must be numbers"),
    ("kwta_ratio=0,weight_sparsity=0", r"kwta_ratio 0 is outside \(0, 1\]"),
    ("kwta_ratio=0.1,weight_sparsity=1", r"weight_sparsity 1 is outside \[0, 1\)"),
    ("kwta_ratio=nan,weight_sparsity=0", "kwta_ratio nan is outside"),
    # any text was accepted and shown in the matrices' titles
    ("kwta_ratio=0.1,weight_sparsity=0.5,pruning_method=../x",
     "unknown pruning method '../x'; known pruning methods: early-bird, global-magnitude, grasp, magnitude, "
     "rigl, snip"),
    ("kwta_ratio=0.1,weight_sparsity=0,pruning_method=Magnitude", "unknown pruning method 'Magnitude'"),
])
def test_bad_grid_cells_are_one_line_errors(text, match) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_grid_cell(text)
    assert "\n" not in str(info.value) and str(info.value).startswith("--grid-cell:")


def test_foreign_records_are_placed_by_their_declared_cells(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    records = {}
    for name in ("top_k_net", "relu_net"):
        factory = f"test_grid_cell:{name}"
        records[name] = tmp_path / f"{name}.json"
        assert main(["evaluate", "--model-factory", factory, "--config", str(config), "--out", str(records[name]),
                     "--no-progress"]) == 0
    found = load_record(records["top_k_net"]).model  # the probe's finding; the describer's reading kept beside it
    assert (found["activation"], found["activation_layers"]) == ("top-k (detected)", "none")
    capsys.readouterr()
    assert main(["table", "--matrix", str(records["top_k_net"]), str(records["relu_net"])]) == 2
    err = capsys.readouterr().err
    assert "the layer probe found top-k gates" in err and "4/32" in err and "--grid-cell" in err
    assert err.count("\n") == 1

    before = load_record(records["top_k_net"])
    for name, cell in (("top_k_net", "kwta_ratio=0.125,weight_sparsity=0"),
                       ("relu_net", "kwta_ratio=1,weight_sparsity=0")):
        assert main(["evaluate", "--model-factory", f"test_grid_cell:{name}", "--config", str(config), "--out",
                     str(records[name]), "--no-progress", "--grid-cell", cell]) == 0
    after = load_record(records["top_k_net"])
    assert after.model["grid_cell"] == {"kwta_ratio": 0.125, "weight_sparsity": 0.0, "pruning_method": DENSE}
    assert [r.flags for r in after.results] == [r.flags for r in before.results]  # resumed, nothing re-run
    assert after.provenance.get("resumed_at") and cell_coordinates(after).kwta_ratio == 0.125
    capsys.readouterr()
    assert main(["table", "--matrix", "--format", "json", str(records["top_k_net"]), str(records["relu_net"])]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]  # the matrices' long form
    assert {(row["kwta_ratio"], row["weight_sparsity"]) for row in rows} == {(0.125, 0.0), (1.0, 0.0)}


def test_a_record_placed_by_a_sweep_and_declared_elsewhere_is_refused() -> None:
    """Before: a sweep cell's record evaluated again with another --grid-cell was placed by its sweep cell, and
    the declaration was dropped without a word."""
    from eval_helpers import make_record

    record = make_record()
    record.model["sweep_cell"] = {"kwta_ratio": 0.1, "weight_sparsity": 0.5, "pruning_method": "magnitude"}
    record.model["grid_cell"] = dict(record.model["sweep_cell"])
    assert cell_coordinates(record).kwta_ratio == 0.1  # the same cell twice: placed
    record.model["grid_cell"] = parse_grid_cell("kwta_ratio=0.1,weight_sparsity=0.5")  # no method named: agrees
    assert cell_coordinates(record).pruning_method == "magnitude"
    record.model["grid_cell"] = parse_grid_cell("kwta_ratio=0.2,weight_sparsity=0.5")
    with pytest.raises(ConfigError, match=r"sits in sweep cell kwta_ratio=0.1, weight_sparsity=0.5 \(magnitude\) but "
                                          r"was declared --grid-cell kwta_ratio=0.2"):
        cell_coordinates(record)


def test_a_compare_record_is_told_to_take_a_new_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A foreign top-k model's record written by ``compare`` holds transfer attacks, which ``evaluate`` refuses to
    resume ("holds a record of other transfer sources"); ``table --matrix`` had said to evaluate it again with
    --grid-cell because "its finished units are kept". Now it says to give a new --out, and that works."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    models = []
    for name in ("top_k_net", "relu_net"):
        torch.save(globals()[name]().state_dict(), tmp_path / f"{name}.pt")
        models.append(f"test_grid_cell:{name}={tmp_path / f'{name}.pt'}")
    assert main(["compare", *models, "--config", str(config), "--out-dir", str(tmp_path / "cmp"), "--labels",
                 "topk,relu", "--no-progress"]) == 0
    record = tmp_path / "cmp" / "topk.json"
    capsys.readouterr()
    assert main(["table", "--matrix", str(record), str(tmp_path / "cmp" / "relu.json")]) == 2
    err = capsys.readouterr().err
    assert "--grid-cell kwta_ratio=" in err and "and a new --out" in err and "finished units" not in err
    evaluate = ["evaluate", "--model-factory", "test_grid_cell:top_k_net", "--weights", str(tmp_path / "top_k_net.pt"),
                "--config", str(config), "--no-progress", "--grid-cell", "kwta_ratio=0.125,weight_sparsity=0"]
    assert main([*evaluate, "--out", str(record)]) == 2  # what the old message said to do
    assert "other transfer sources" in capsys.readouterr().err
    assert main([*evaluate, "--out", str(tmp_path / "topk.json")]) == 0
    assert cell_coordinates(load_record(tmp_path / "topk.json")).kwta_ratio == 0.125


def half_pruned_net() -> nn.Module:
    """The top-k MLP with half of ``fc1``'s weights zero (43% of all its weights)."""
    model = TopKMLP(4)
    with torch.no_grad():
        model.fc1.weight[:, ::2] = 0.0
    return model


def test_a_declared_sparsity_the_weights_contradict_is_warned_flagged_and_marked(
        tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    """Before: ``--grid-cell ...,weight_sparsity=0`` on a half-pruned model placed it in the dense column without a
    word (the legend's per-column range of measured sparsities was the only trace). Now evaluate warns before any
    work, the record has a ``grid-cell-sparsity`` flag, and the matrices mark the cell and say why; declaring the
    right cell on the finished record takes the flag away."""
    from kwta_robust.matrix_checks import GRID_CELL_FLAG

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    out, twin = tmp_path / "pruned.json", tmp_path / "relu.json"
    evaluate = ["evaluate", "--config", str(config), "--no-progress"]
    assert main([*evaluate, "--model-factory", "test_grid_cell:relu_net", "--out", str(twin),
                 "--grid-cell", "kwta_ratio=1,weight_sparsity=0"]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "declared --grid-cell" in r.message]
    for declared, found in (("0", "43.2% of all conv/linear weights are zero"),
                            ("0.9", "its sparsest layer has 50.0% zero weights")):
        caplog.clear()
        assert main([*evaluate, "--model-factory", "test_grid_cell:half_pruned_net", "--out", str(out),
                     "--grid-cell", f"kwta_ratio=0.125,weight_sparsity={declared}"]) == 0
        warned = [r.message for r in caplog.records
                  if r.levelname == "WARNING" and "declared --grid-cell" in r.message]
        assert len(warned) == 1 and f"weight_sparsity={declared} but {found}" in warned[0]
        flags = [f for f in load_record(out).diagnostics if f.code == GRID_CELL_FLAG]
        assert len(flags) == 1 and flags[0].severity == "warning" and found in flags[0].message
    capsys.readouterr()
    assert main(["table", "--matrix", "--format", "wide", str(out), str(twin)]) == 0
    md = capsys.readouterr().out
    assert "k/N 0.125 × 0.9 (declared) half_pruned_net: declared --grid-cell weight_sparsity=0.9 but" in md
    # untrained: no sample right; '!': the record's critical flag (mwarn53), '*': the contradicted sparsity
    assert "| 0.125 | — | 0.0 (0.0–32.5)!* |" in md.split("clean accuracy")[1]
    assert main(["table", "--matrix", "--format", "csv", str(out), str(twin)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {bool(r["warnings"]) for r in rows if r["kwta_ratio"] == "0.125"} == {True}
    assert {r["warnings"] for r in rows if r["kwta_ratio"] == "1"} == {""}
    assert main([*evaluate, "--model-factory", "test_grid_cell:half_pruned_net", "--out", str(out),
                 "--grid-cell", "kwta_ratio=0.125,weight_sparsity=0.5"]) == 0  # the finished record: right cell
    assert not [f for f in load_record(out).diagnostics if f.code == GRID_CELL_FLAG]
    capsys.readouterr()
    assert main(["table", "--matrix", str(out), str(twin)]) == 0
    assert "*" not in capsys.readouterr().out
