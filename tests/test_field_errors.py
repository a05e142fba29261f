"""Each value a user can get wrong in a config, a model's arguments or an attack's parameters is refused with one
line naming the field, the value and (where there is one) the fix. These are the checks no other test reached
(found with a coverage run of the suite); the command-line cases are in test_bad_inputs.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from attacks.base import AttackConfigError, ThreatModel, create_attack, parse_eps
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig, resolve_device
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec
from kwta_robust.sweep.config import SweepConfig
from kwta_robust.training.config import TrainConfig
from test_bad_inputs import EVAL, SWEEP, TRAIN  # the valid configs each case changes one field of

KWTA = {"name": "kwta", "k_ratio": 0.5}
PRUNE = {"method": "magnitude", "sparsity": 0.5}


def evaluation(**changes: Any) -> Callable[[], object]:
    return lambda: EvalConfig.from_dict({**EVAL, **changes})


def training(**changes: Any) -> Callable[[], object]:
    return lambda: TrainConfig.from_dict({**TRAIN, **changes})


def sweep(**changes: Any) -> Callable[[], object]:
    return lambda: SweepConfig.from_dict({**SWEEP, **changes})


def model(arch: str, **args: Any) -> Callable[[], object]:
    return lambda: ModelSpec.from_args(arch, **{"num_classes": 10, "in_channels": 1, "input_size": 28, **args}).build()


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    # epsilons and the threat model
    ("eps-divides-by-zero", lambda: parse_eps("1/0"), AttackConfigError, "eps: '1/0' divides by zero"),
    ("eps-not-a-number", lambda: parse_eps([0.1]), AttackConfigError,  # type: ignore[arg-type]
     "eps: expected a number like 0.3 or '8/255', got list"),
    ("bounds-reversed", lambda: ThreatModel("linf", 0.1, (1.0, 0.0)), AttackConfigError,
     "bounds: lower bound must be below upper bound, got (1.0, 0.0)"),
    ("threat-norm-twice", evaluation(threats=[{"norm": "linf", "epsilons": [e]} for e in (0.1, 0.2)]), ConfigError,
     "threats: a norm is listed twice; put all its epsilons in one entry"),
    ("threat-no-epsilon", evaluation(threats=[{"norm": "linf", "epsilons": []}]), ConfigError,
     "threats[0].epsilons: give at least one epsilon"),
    ("threat-epsilon-twice", evaluation(threats=[{"norm": "linf", "epsilons": [0.1, 0.1]}]), ConfigError,
     "threats[0].epsilons: duplicate epsilon values [0.1, 0.1]"),
    # attack parameters
    ("learned-fit-steps", lambda: create_attack("bpda", surrogate="learned", fit_steps=-1), AttackConfigError,
     "fit_steps: must be an integer >= 0, got -1"),
    ("learned-fit-lr", lambda: create_attack("bpda", surrogate="learned", fit_lr=0), AttackConfigError,
     "fit_lr: must be a finite number > 0 within float32's range, 1.2e-38 to 3.4e+38, got 0"),
    ("learned-fit-hidden", lambda: create_attack("bpda", surrogate="learned", fit_hidden=0), AttackConfigError,
     "fit_hidden: must be an integer >= 1, got 0"),
    ("distilled-steps", lambda: create_attack("bpda", surrogate="model", distill_steps=-1), AttackConfigError,
     "distill_steps: must be an integer >= 0, got -1"),
    ("bpda-inner-not-a-name", lambda: create_attack("bpda", inner=3), AttackConfigError,
     "inner: expected a registered attack name like 'pgd', got int"),
    ("bpda-stage-steps-zero", lambda: create_attack("bpda", temperature_schedule=[1.0, 0.1], inner_params={"steps": 0}),
     AttackConfigError, "inner_params.steps: must be an integer >= 1 to split over stages, got 0"),
    ("estimation-query-batch", lambda: create_attack("gradient-estimation", query_batch_size=1), AttackConfigError,
     "query_batch_size: must be >= 2 (one antithetic pair)"),
    ("bpda-layers-in-params", evaluation(attacks=[{"attack": "bpda", "params": {"layers": ["fc"]}}]), ConfigError,
     "attacks[0].params.layers: write the layers as bpda_layers next to params"),
    ("noise-no-level", evaluation(noise=[{"kind": "gaussian", "levels": []}]), ConfigError,
     "noise[0].levels: give at least one level (or leave it out for the probe's defaults)"),
    ("dataset-not-a-name", evaluation(dataset=3), ConfigError,
     "dataset: expected a registry name (e.g. mnist5k) or {file: PATH}, got 3"),
    # training
    ("train-lr", training(lr=0), ConfigError, "lr: must be a finite number > 0, got 0.0"),
    ("train-momentum", training(momentum=1.0), ConfigError, "momentum: must be in [0, 1), got 1.0"),
    ("train-milestones", training(schedule="step", milestones=[1.5]), ConfigError,
     "milestones: fractions of the epochs in (0, 1), got [1.5]"),
    ("train-threads", training(threads=-1), ConfigError, "threads: must be >= 1, or 0 for torch's default, got -1"),
    ("train-device", training(device="cpu:x:y"), ConfigError,
     "device: 'cpu:x:y' is not a torch device; use auto, cpu, cuda or cuda:N"),
    ("incremental-ratio", training(activation=KWTA, incremental={"ratios": [1.5]}), ConfigError,
     "incremental.ratios: each ratio must be in (0, 1], got [1.5]"),
    ("incremental-epochs", training(activation=KWTA, incremental={"ratios": [0.2], "epochs_per_ratio": 0}),
     ConfigError, "incremental.epochs_per_ratio: must be >= 1, got 0"),
    ("incremental-lr", training(activation=KWTA, incremental={"ratios": [0.2], "lr": 0}), ConfigError,
     "incremental.lr: must be > 0, got 0.0"),
    ("pruning-no-epochs", training(pruning=PRUNE), ConfigError, "epochs: pruned training needs epochs >= 1, got 0"),
    ("pruning-and-incremental", training(epochs=1, activation=KWTA, incremental={"ratios": [0.2]}, pruning=PRUNE),
     ConfigError, "pruning: not combinable with incremental.ratios; prune the final-ratio model in a separate run"),
    ("pruning-scope", training(epochs=1, pruning={**PRUNE, "scope": "x"}), ConfigError,
     "pruning.scope: must be one of layerwise, global or null, got 'x'"),
    ("pruning-schedule", training(epochs=1, pruning={**PRUNE, "schedule": "x"}), ConfigError,
     "pruning.schedule: must be one of one-shot, iterative or null, got 'x'"),
    ("pruning-iterative-one-round", training(epochs=1, pruning={**PRUNE, "schedule": "iterative", "rounds": 1}),
     ConfigError, "pruning.rounds: an iterative schedule needs rounds >= 2, got 1"),
    ("pruning-no-layer-types", training(epochs=1, pruning={**PRUNE, "layer_types": []}), ConfigError,
     "pruning.layer_types: must be a non-empty list of conv1d, conv2d, conv3d, linear"),
    # sweeps
    ("sweep-not-a-mapping", lambda: SweepConfig.from_dict([1]), ConfigError,
     "sweep config: expected a YAML mapping at the top level, got list"),
    ("sweep-train-not-a-mapping", sweep(train=3), ConfigError,
     "train: expected a mapping or a path to a YAML file, got int"),
    ("sweep-train-pruning", sweep(train={**TRAIN, "pruning": PRUNE}), ConfigError,
     "train.pruning: set by the grid; put shared pruning options under the sweep's top-level 'pruning:'"),
    ("sweep-train-incremental", sweep(train={**TRAIN, "incremental": {"ratios": [0.5]}}), ConfigError,
     "train.incremental.ratios: the sweep sets each cell's kWTA ratio; remove the key"),
    ("sweep-pruning-not-a-mapping", sweep(pruning=3), ConfigError, "pruning: expected a mapping of keys, got int"),
    # model arguments
    ("cnn-no-channels", model("cnn", channels=[]), ConfigError,
     "arch 'cnn': channels must be a non-empty list of widths >= 1, got []"),
    ("cnn-even-kernel", model("cnn", kernel_size=2), ConfigError,
     "arch 'cnn': kernel_size must be an odd integer >= 1, got 2"),
    ("cnn-hidden", model("cnn", hidden=0), ConfigError, "arch 'cnn': hidden must be >= 1, got 0"),
    ("mlp-no-hidden", model("mlp", hidden=[]), ConfigError,
     "arch 'mlp': hidden must be a non-empty list of widths >= 1, got []"),
    ("resnet-width", model("resnet18", width=0), ConfigError, "arch 'resnet18': width must be >= 1, got 0"),
    ("resnet-input-size", model("resnet18", input_size=4), ConfigError,
     "arch 'resnet18': input_size must be >= 8 (three stride-2 stages), got 4"),
    ("wrn-widen", model("wrn", widen=0), ConfigError, "arch 'wrn': widen must be >= 1, got 0"),
    ("wrn-dropout", model("wrn", dropout=1.0), ConfigError, "arch 'wrn': dropout must be in [0, 1), got 1.0"),
    ("wrn-input-size", model("wrn", input_size=2), ConfigError,
     "arch 'wrn': input_size must be >= 4 (two stride-2 groups), got 2"),
    ("normalization-std", model("cnn", std=[0.0]), ConfigError, "model: std values must be > 0, got [0.0]"),
    ("num-classes", model("cnn", num_classes=0), ConfigError, "model: num_classes must be an integer >= 1, got 0"),
    ("activation-type", model("cnn", activation=3), ConfigError,
     "activation: expected 'relu', 'kwta', a mapping or an ActivationSpec, got 3"),
    ("activation-unknown-field", model("cnn", activation={"name": "kwta", "ratio": 0.5, "bogus": 1}), ConfigError,
     "activation: unknown field 'bogus'; valid fields: name, ratio, k, mode, boost_strength, k_inference_factor"),
    ("activation-name", model("cnn", activation={"name": "x"}), ConfigError,
     "activation: unknown activation 'x'; use 'relu' or 'kwta'"),
    ("activation-ratio", model("cnn", activation={"name": "kwta", "ratio": 1.5}), ConfigError,
     "activation: k_ratio must be in (0, 1], got 1.5"),
    ("activation-mode", model("cnn", activation={"name": "kwta", "ratio": 0.5, "mode": "x"}), ConfigError,
     "activation: kwta mode must be one of volume, channel, local, got 'x'"),
    ("xiao-channels", model("xiao-spcnn", num_channels=[1, 2]), ConfigError,
     "arch 'xiao-spcnn': num_channels needs four widths, got [1, 2]"),
    ("nupic-input-size", model("nupic-sparse-cnn", input_size=8), ConfigError,
     "input_size: 8 is too small for two 5×5 convolutions with 2×2 pooling (>= 16)"),
    ("nupic-channels", model("nupic-sparse-cnn", cnn_out_channels=[1, 2, 3]), ConfigError,
     "cnn_out_channels: give two values (one per conv layer), got [1, 2, 3]"),
]


@pytest.mark.parametrize("build,error,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_field_is_one_line_naming_it(build: Callable[[], object], error: type[Exception], text: str) -> None:
    with pytest.raises(error) as caught:
        build()
    message = str(caught.value)
    assert text in message and "\n" not in message, message


def test_a_cuda_device_the_machine_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"^device: 'cuda:3' does not exist \(1 CUDA devices\)$"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("argv,text", [
    (["train", "--arch-arg", "nokey"], "error: --arch-arg: expected KEY=VALUE, got 'nokey'"),
    (["train", "--arch-arg", "a=[1"], "error: --arch-arg a: cannot parse '[1' as a YAML value"),
    (["quickstart", "--epochs", "0"], "error: --epochs: must be >= 1, got 0"),
    (["quickstart", "--config", "nope.yaml"], "error: --config: nope.yaml not found; pass --config "
                                              "eval_configs/quickstart.yaml from a clone"),
], ids=["arch-arg-without-value", "arch-arg-bad-yaml", "quickstart-epochs", "quickstart-config-missing"])
def test_a_bad_option_is_one_error_line(argv: list[str], text: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == text and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_damaged_sweep_manifest_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "sweep.json").write_text("{")
    assert main(["report", "--sweep", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --sweep: {tmp_path / 'sweep.json'} is not valid JSON; re-run the sweep to rewrite it", err
    assert not (tmp_path / "r.html").exists()
