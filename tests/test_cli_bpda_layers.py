"""`--bpda-layer` and `bpda_layers` through the CLI: the record says which layers BPDA acted on, a BPDA attack on
no layer is a flag in the table, and a spec that matches nothing is one `error:` line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.cli import main
from kwta_robust.models import ModelSpec
from kwta_robust.results import load_record


class Top8(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * (x >= x.topk(8, dim=1).values[:, -1:]).to(x.dtype)


def make_gated_mlp() -> nn.Module:
    """Bring-your-own factory (--model-factory test_cli_bpda_layers:make_gated_mlp): a top-8 gate of our own."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), Top8(), nn.Linear(32, 10))


def write_config(path: Path, **extra: object) -> Path:
    data = {
        "dataset": "mnist5k", "n_examples": 12, "batch_size": 12, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [
            {"attack": "pgd", "params": {"steps": 2}},
            {"attack": "bpda", "params": {"surrogate": "smooth", "inner": "pgd", "inner_params": {"steps": 2}}},
        ],
    }
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


def run_ok(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def run_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    rc = main(argv)
    _, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def byo(tmp_path: Path, cfg: Path) -> list[str]:
    torch.save(make_gated_mlp().state_dict(), tmp_path / "w.pt")
    return ["evaluate", "--model-factory", "test_cli_bpda_layers:make_gated_mlp", "--weights", str(tmp_path / "w.pt"),
            "--config", str(cfg), "--no-progress", "--out", str(tmp_path / "r.json")]


def test_auto_finds_the_foreign_gate_and_the_record_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_ok(byo(tmp_path, write_config(tmp_path / "c.yaml")), capsys)
    record = load_record(tmp_path / "r.json")
    assert [(f["name"], f["kinds"], f["grouping"]) for f in record.detection["layers"]] == [("2", ["gate"], "dense")]
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"2": "wrapped gate/dense"}
    assert record.config["bpda_layers"] == "auto"
    out = run_ok(["table", str(tmp_path / "r.json"), "--layout", "long"], capsys)
    assert "- layer probe (12 inputs, 4 leaf modules): 2 (Top8): top-k gate (dense, k=8/32)" in out
    assert "- bpda acted on: 2 (wrapped gate/dense)" in out


def test_bpda_layer_option_selects_by_class_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_ok(byo(tmp_path, write_config(tmp_path / "c.yaml", bpda_layers=[])) + ["--bpda-layer", "Top8"], capsys)
    record = load_record(tmp_path / "r.json")
    assert record.config["bpda_layers"] == ["Top8"]
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"2": "wrapped gate/dense"}


def test_bpda_on_no_layer_is_a_flag_in_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_ok(byo(tmp_path, write_config(tmp_path / "c.yaml", bpda_layers=[])), capsys)
    record = load_record(tmp_path / "r.json")
    assert record.result("bpda", "linf", 0.1).bpda_layers == {}
    out = run_ok(["table", str(tmp_path / "r.json"), "--format", "csv"], capsys)
    assert "bpda-no-layer" in out.splitlines()[1]  # the flags column of the model's row
    assert "bpda-no-layer" in json.dumps([f.to_dict() for f in record.diagnostics])


def test_spec_matching_no_module_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = run_error(byo(tmp_path, write_config(tmp_path / "c.yaml")) + ["--bpda-layer", "features.2"], capsys)
    assert line.startswith("error: --bpda-layer: 'features.2' matches no module (by name, glob or class name); "
                           "candidates: 0 (Flatten), 1 (Linear), 2 (Top8), 3 (Linear)")
    cfg = write_config(tmp_path / "c.yaml", attacks=[{"attack": "pgd", "bpda_layers": "auto"}])
    line = run_error(byo(tmp_path, cfg), capsys)
    assert line == "error: attacks[0].bpda_layers: only BPDA attacks act on layers; remove it from 'pgd'"
    cfg = write_config(tmp_path / "c.yaml", bpda_layers=[3])
    assert "bpda_layers: expected auto, a module name" in run_error(byo(tmp_path, cfg), capsys)


def test_compare_takes_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = []
    for name, activation in (("kwta", {"name": "kwta", "ratio": 0.25}), ("relu", "relu")):
        torch.manual_seed(0)
        spec = ModelSpec.from_args("mlp", activation=activation, num_classes=10, in_channels=1, input_size=28,
                                   hidden=[16])
        paths.append(str(save_checkpoint(tmp_path / f"{name}.pt", spec.build(), spec,
                                         {"dataset": "mnist5k", "data_split_seed": 0})))
    cfg = write_config(tmp_path / "c.yaml")
    run_ok(["compare", *paths, "--config", str(cfg), "--no-progress", "--no-transfer", "--out-dir",
            str(tmp_path / "cmp"), "--bpda-layer", "KWTA"], capsys)
    kwta, relu = load_record(tmp_path / "cmp" / "kwta.json"), load_record(tmp_path / "cmp" / "relu.json")
    assert list(kwta.result("bpda", "linf", 0.1).bpda_layers.values()) == ["native"]
    assert relu.result("bpda", "linf", 0.1).bpda_layers == {}
    assert "bpda-no-layer" in [f.code for f in relu.diagnostics]
    line = run_error(["compare", *paths, "--config", str(cfg), "--no-progress", "--no-transfer", "--out-dir",
                      str(tmp_path / "cmp"), "--bpda-layer", "KWTA2d"], capsys)
    assert line.startswith("error: --bpda-layer: 'KWTA2d' matches no module of any compared model; candidates: "
                           "kwta:")


def test_bpda_layer_option_no_bpda_attack_reads_is_one_error_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--bpda-layer KWinners2d` with quick.yaml (PGD and FGSM) ran plain PGD and said nothing about the option; so
    does a suite whose BPDA attacks each name their own layers. A BPDA sanity attack reads it: accepted."""
    cfg = write_config(tmp_path / "c.yaml", attacks=[{"attack": "pgd", "params": {"steps": 1}}, "fgsm"])
    line = run_error(byo(tmp_path, cfg) + ["--bpda-layer", "Top8"], capsys)
    assert line.startswith(f"error: --bpda-layer: no BPDA attack of {cfg} acts on the top-level bpda_layers (it runs "
                           "pgd, fgsm), so it would change nothing; add a bpda attack")
    own = {"attack": "bpda", "bpda_layers": ["2"], "params": {"inner": "pgd", "inner_params": {"steps": 1}}}
    line = run_error(byo(tmp_path, write_config(tmp_path / "c.yaml", attacks=[own])) + ["--bpda-layer", "Top8"], capsys)
    assert "(it runs bpda)" in line
    sanity = {"enabled": True, "sanity": {"attack": "bpda", "params": {"inner": "pgd", "inner_params": {"steps": 1}}}}
    cfg = write_config(tmp_path / "c.yaml", attacks=["fgsm"], diagnostics=sanity)
    run_ok(byo(tmp_path, cfg) + ["--bpda-layer", "Top8"], capsys)
    assert load_record(tmp_path / "r.json").config["bpda_layers"] == ["Top8"]
