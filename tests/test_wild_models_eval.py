"""Evaluations of the kWTA models users write (tests/wild_kwta_models.py) with PGD and BPDA (smooth, ``auto``):
BPDA acts on every gate the probe finds (``bpda_layers`` in the result), no flag says it acted on nothing or left a
selection outside — a ``torch.quantile`` threshold whose count of winners varies by one and values scattered into
zeros inline in a block included (once a critical flag naming the module, BPDA acting on nothing there). Through
the command line, on the user's own module file as ``--model-factory``: the dry run names the layers BPDA acts on,
the run records them."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import wild_kwta_models as wild
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from kwta_robust.results import load_record

X = wild.X
ATTACKS = [{"attack": "pgd", "params": {"steps": 2}},
           {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}]
QUIET = {"bpda-no-layer", "selections-outside-layers", "bpda-straight-through", "zero-gradients"}
ACTED = {
    wild.xiao: {n: "wrapped gate/volume" for n in ("1", "2.relu1", "2.relu2")},
    wild.numenta: {"a1": "wrapped gate/volume/boosted", "a2": "wrapped gate/volume/boosted"},
    wild.kthvalue_channel: {"a1": "wrapped gate/channel", "a2": "wrapped gate/channel"},
    wild.sort_threshold: {"a1": "wrapped gate/volume", "a2": "wrapped gate/volume"},
    wild.scatter_mask: {"a1": "wrapped gate/volume", "a2": "wrapped gate/volume"},
    wild.inline_residual: {"1": "wrapped inline"},
    wild.function_straight_through: {"a1": "wrapped gate/volume", "a2": "wrapped gate/volume"},
    wild.function_masked: {"a1": "wrapped gate/volume", "a2": "wrapped gate/volume"},
    wild.dense: {"2": "wrapped gate/dense", "4": "wrapped gate/dense"},
    wild.pad_cat: {"kwta": "wrapped gate/volume"},
    wild.quantile_threshold: {"a1": "wrapped gate/volume", "a2": "wrapped gate/volume"},
    wild.inline_scattered_values: {"1": "wrapped inline"},
}


def config() -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 16, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": ATTACKS, "noise": [],
        "diagnostics": {"enabled": True, "gradient_batch": 16, "budget_check": {"enabled": False}}})


def run(model: nn.Module):
    with torch.no_grad():
        y = model(X).argmax(1)
    return evaluate(model, TensorData(X.clone(), y, "toy", 3, torch.arange(len(y))), config(), {}, progress=False)


@pytest.mark.parametrize("factory", list(ACTED), ids=lambda f: f.__name__)
def test_bpda_acts_on_every_gate_and_no_flag_says_otherwise(factory) -> None:
    record = run(factory())
    result = record.result("bpda", "linf", 0.1)
    assert result.bpda_layers == ACTED[factory]
    assert result.n_attacked > 0  # the attack ran on the samples PGD left
    assert not {f.code for f in run_checks(record)} & QUIET


def cli(tmp_path: Path, factory: str, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["-q", "evaluate", "--model-factory", factory, "--config", str(tmp_path / "eval.yaml"),
                       "--data", str(tmp_path / "data.pt"), "--out", str(tmp_path / "r.json"), "--no-progress",
                       *extra])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's own module file (a copy of the models under another name), data and config in ``tmp_path``."""
    shutil.copy(Path(wild.__file__), tmp_path / "my_kwta_nets.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    write_user_run(tmp_path)
    return tmp_path


def write_user_run(folder: Path) -> None:
    """``data.pt`` (the 16 inputs ``X``, labels 0) and ``eval.yaml`` (PGD and BPDA smooth, one step each) in
    ``folder``: a user's run of their own model file."""
    torch.save({"x": X, "y": torch.zeros(len(X), dtype=torch.long)}, folder / "data.pt")
    (folder / "eval.yaml").write_text(
        "dataset: mnist5k\nn_examples: 16\nbatch_size: 16\ndevice: cpu\nseed: 0\n"
        "threats: [{norm: linf, epsilons: [0.1]}]\n"
        "attacks: [{attack: pgd, params: {steps: 1}}, "
        "{attack: bpda, params: {surrogate: smooth, inner_params: {steps: 1}}}]\n")


@pytest.mark.parametrize("name", ["xiao", "numenta", "inline_residual"])
def test_the_cli_evaluates_a_users_module_file_with_bpda_on_its_gates(user_dir: Path, name: str) -> None:
    acted = ACTED[getattr(wild, name)]
    status, out, err = cli(user_dir, f"my_kwta_nets:{name}", "--dry-run")
    assert status == 0 and "Traceback" not in err
    line = next(line for line in out.splitlines() if line.startswith("- bpda acts on:"))
    assert line == "- bpda acts on: " + ", ".join(f"{n} ({how})" for n, how in acted.items())
    status, _, err = cli(user_dir, f"my_kwta_nets:{name}")
    assert status == 0 and "Traceback" not in err
    record = load_record(user_dir / "r.json")
    assert record.result("bpda", "linf", 0.1).bpda_layers == acted
    expected = detect_layers(getattr(wild, name)(), X, log=False).to_dict()
    assert record.detection["selections"] == expected["selections"]
    assert not {f.code for f in record.diagnostics} & QUIET
