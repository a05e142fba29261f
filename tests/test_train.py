"""Training: config parsing and validation, determinism for a seed, the generic loop's hooks, PGD/TRADES
adversarial training, Xiao et al.'s incremental sparsity schedule and ``kwta-robust train`` end to end (tiny
budgets on the 8×8 digits)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attacks.base import ThreatModel
from kwta_robust import cli
from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.commands import train as train_command
from kwta_robust.data import load_dataset
from kwta_robust.errors import ConfigError
from kwta_robust.layers import kwta_layers
from kwta_robust.models import create_model
from kwta_robust.training import (
    AUGMENTATIONS,
    TrainConfig,
    evaluate_accuracy,
    pgd_perturb,
    run_training,
    train_model,
)

TINY = {"dataset": "digits", "arch": "cnn", "arch_kwargs": {"channels": [4, 8], "hidden": 16}, "epochs": 1,
        "batch_size": 64, "activation": {"name": "kwta", "k_ratio": 0.2}}


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "out": str(tmp_path / "model.pt"), "device": "cpu", **changes})


@pytest.fixture(scope="module")
def digits_train():
    return load_dataset("digits", "train")


def test_yaml_unknown_keys_and_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    cases = {
        "epochz: 3\n": "unknown key 'epochz'",
        "activation:\n  name: kwta\n  ratio: 0.1\n": "activation: unknown key 'ratio'",
        "epochs: ten\n": "epochs: expected an integer",
        "optimizer: lbfgs\n": "optimizer: unknown optimizer 'lbfgs'",
        "activation: kwta\n": "k_ratio",
        "incremental:\n  ratios: [0.05]\n": "needs activation kwta",
        "method: pgd\nadversarial:\n  eps: -1\n": "eps",
        "epochs: [1\n": "is not valid YAML (line",
        "- 1\n- 2\n": "must hold a mapping",
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_yaml(path)
        assert expected in str(info.value) and "\n" not in str(info.value), text
    with pytest.raises(ConfigError, match="--config: no such file"):
        TrainConfig.from_yaml(tmp_path / "absent.yaml")


def test_yaml_values_are_coerced_like_the_field_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nactivation: relu\nmethod: pgd\nadversarial:\n  eps: 8/255\n  steps: 3\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.lr == 0.001 and cfg.activation.name == "relu"  # PyYAML reads 1e-3 as a string
    assert cfg.adversarial.eps == pytest.approx(8 / 255) and cfg.adversarial.alpha() == pytest.approx(2.5 * 8 / 255 / 3)
    relu = TrainConfig.from_dict({"activation": {"name": "relu", "k_ratio": 0.1}}).activation.to_spec()
    assert relu.name == "relu" and relu.ratio is None  # a ratio means nothing for ReLU
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_shipped_configs_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "eval_configs"
    for name in ("train_cnn_kwta.yaml", "train_cnn_relu.yaml"):
        cfg = TrainConfig.from_yaml(root / name)
        assert cfg.dataset == "mnist5k" and cfg.arch == "cnn"
    assert TrainConfig.from_yaml(root / "train_cnn_kwta.yaml").activation.to_spec().ratio == 0.1


def test_flags_override_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nactivation: relu\narch_kwargs:\n  hidden: 32\n")
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--epochs", "2", "--activation", "kwta", "--k-ratio", "0.05",
                              "--arch-arg", "channels=[4, 8]", "--incremental-ratios", "0.02,0.01"])
    cfg = train_command.config_from_args(args)
    assert cfg.epochs == 2 and cfg.activation.name == "kwta" and cfg.activation.k_ratio == 0.05
    assert cfg.arch_kwargs == {"hidden": 32, "channels": [4, 8]}
    assert cfg.incremental.ratios == [0.02, 0.01]
    assert cfg.lr == TrainConfig().lr  # untouched keys keep their defaults


def test_run_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    rng_before = torch.random.get_rng_state()
    threads_before = torch.get_num_threads()
    a = run_training(tiny_config(tmp_path, out=str(tmp_path / "a.pt"), seed=5, threads=1))
    b = run_training(tiny_config(tmp_path, out=str(tmp_path / "b.pt"), seed=5, threads=1))
    c = run_training(tiny_config(tmp_path, out=str(tmp_path / "c.pt"), seed=6, threads=1))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's global RNG is untouched
    assert torch.get_num_threads() == threads_before
    assert load_checkpoint(a.checkpoint).metadata["torch_threads"] == 1
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.test_accuracy == b.test_accuracy
    assert [e.loss for e in a.history.epochs] == [e.loss for e in b.history.epochs]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_train_model_hooks_and_mode_restoration(digits_train) -> None:
    cfg = TrainConfig.from_dict({**TINY, "epochs": 2, "batch_size": 100})
    torch.manual_seed(0)
    model = create_model("cnn", {"name": "kwta", "ratio": 0.2}, input_size=8, channels=[4, 8], hidden=16).eval()
    steps, epochs = [], []
    history = train_model(model, digits_train, cfg, "cpu", epoch_callback=lambda e, s, m: epochs.append(e),
                          after_step=lambda m, step: steps.append(step))
    batches = -(-len(digits_train) // 100)  # 1,347 samples: 14 batches (the last has 47)
    assert steps == list(range(1, 2 * batches + 1)) and epochs == [1, 2]
    assert len(history.epochs) == 2 and history.epochs[1].loss < history.epochs[0].loss
    assert not model.training and not any(m.training for m in model.modules())
    assert history.epochs[1].lr < history.epochs[0].lr  # cosine schedule


def test_evaluate_accuracy_restores_mode_and_buffers(digits_train) -> None:
    model = create_model("resnet18", {"name": "kwta", "ratio": 0.3, "boost_strength": 1.0}, in_channels=1,
                         input_size=8, width=2, num_classes=10).train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    data = digits_train.subset(range(50))
    acc = evaluate_accuracy(model, data, batch_size=16)
    assert 0.0 <= acc <= 1.0 and acc * 50 == round(acc * 50)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())  # BN stats, duty cycles


def test_pgd_perturbation_stays_in_threat_model_and_raises_loss(digits_train) -> None:
    torch.manual_seed(0)
    model = create_model("mlp", "relu", input_size=8, hidden=[32])
    cfg = TrainConfig.from_dict({"dataset": "digits", "arch": "mlp", "epochs": 2, "batch_size": 64, "lr": 1e-2})
    train_model(model, digits_train, cfg, "cpu")
    x, y = digits_train.x[:64], digits_train.y[:64]
    gen = torch.Generator().manual_seed(0)
    for threat in (ThreatModel("linf", 0.1), ThreatModel("l2", 1.0)):
        x_adv = pgd_perturb(model, x, lambda z, rows: F.cross_entropy(z, y[rows], reduction="none"), threat, 10,
                            threat.eps / 4, True, gen)
        assert bool(threat.contains(x_adv, x).all())
        with torch.no_grad():
            assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert all(p.requires_grad for p in model.parameters()) and model.training


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_training_methods_run(tmp_path: Path, method: str) -> None:
    cfg = tiny_config(tmp_path, method=method, adversarial={"eps": 0.1, "steps": 2})
    result = run_training(cfg)
    meta = load_checkpoint(result.checkpoint).metadata
    assert meta["method"] == method and meta["training"]["adversarial"]["steps"] == 2
    assert 0.0 <= result.test_accuracy <= 1.0


def test_augmentations_keep_shape_range_and_are_seeded() -> None:
    x = torch.rand(5, 3, 8, 8)
    for name, augment in AUGMENTATIONS.items():
        a = augment(x, torch.Generator().manual_seed(1))
        b = augment(x, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1, name
    shifted = AUGMENTATIONS["shift"](x, torch.Generator().manual_seed(2))
    assert not torch.equal(shifted, x)
    # every shifted image is a translate of the original: its central 4×4 patch appears in the original
    centre = shifted[:, :, 2:6, 2:6]
    windows = x.unfold(2, 4, 1).unfold(3, 4, 1)  # [N, C, 5, 5, 4, 4]
    assert all(any(torch.equal(centre[i], windows[i, :, r, c]) for r in range(5) for c in range(5)) for i in range(5))


def test_incremental_sparsity_schedule_saves_a_checkpoint_per_ratio(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, incremental={"ratios": [0.1, 0.05], "epochs_per_ratio": 1})
    result = run_training(cfg)
    assert [s.ratio for s in result.stages] == [0.2, 0.1, 0.05]
    assert [s.checkpoint.name for s in result.stages] == ["model-r0.2.pt", "model-r0.1.pt", "model-r0.05.pt"]
    data = load_dataset("digits", "test")
    for stage in result.stages:
        loaded = load_checkpoint(stage.checkpoint)
        assert loaded.spec.activation.ratio == stage.ratio == loaded.metadata["kwta_ratio"]
        assert all(layer.ratio == stage.ratio for layer in kwta_layers(loaded.model).values())
        assert evaluate_accuracy(loaded.model, data) == stage.test_accuracy == loaded.metadata["test_accuracy"]
    final = load_checkpoint(result.checkpoint)
    assert final.metadata["kwta_ratio"] == 0.05 and len(final.metadata["history"]) == 3


def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.pt"
    code = cli.main(["train", "--dataset", "digits", "--arch", "cnn", "--activation", "kwta", "--k-ratio", "0.2",
                     "--epochs", "1", "--seed", "0", "--device", "cpu", "--arch-arg", "channels=[4,8]",
                     "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("test accuracy ") and str(out) in printed[0]
    loaded = load_checkpoint(out)
    accuracy = evaluate_accuracy(loaded.model, load_dataset("digits", "test"))
    assert loaded.metadata["test_accuracy"] == accuracy
    assert f"{accuracy:.4f}" in printed[0]
    assert loaded.metadata["dataset"] == "digits" and loaded.metadata["seed"] == 0
    assert loaded.metadata["training"]["epochs"] == 1 and loaded.metadata["activation"] == "kwta"
    # user errors: one line on stderr, exit status 2
    assert cli.main(["train", "--dataset", "digits", "--optimizer", "lbfgs", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("error: --optimizer: unknown optimizer 'lbfgs'")  # the flag's
    assert cli.main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    assert "cifar10: data not found" in capsys.readouterr().err


def test_adversarial_settings_are_checked_whatever_the_method(tmp_path: Path) -> None:
    """Given and ignored they would land in the checkpoint's metadata (method: standard trains without them)."""
    for adversarial, message in (({"norm": "l9"}, "adversarial.norm: unknown norm 'l9'"),
                                 ({"eps": 7}, "adversarial.eps: linf epsilon 7.0 exceeds 1"),
                                 ({"steps": -4}, "adversarial.steps: must be >= 1"),
                                 ({"trades_beta": float("nan")},
                                  "adversarial.trades_beta: expected a finite number, got nan"),
                                 ({"trades_beta": -1}, "adversarial.trades_beta: must be a finite number >= 0")):
        with pytest.raises(ConfigError, match=message):
            tiny_config(tmp_path, method="standard", adversarial=adversarial)
    assert tiny_config(tmp_path, method="standard").method == "standard"


def test_incremental_ratios_must_fall_stage_by_stage(tmp_path: Path) -> None:
    """Each stage writes model-r<ratio>.pt: a repeated or rising ratio would overwrite an earlier stage's file."""
    for ratios in ([0.2, 0.1], [0.1, 0.1], [0.1, 0.15]):
        with pytest.raises(ConfigError, match="incremental.ratios: each ratio must be below the one before"):
            tiny_config(tmp_path, incremental={"ratios": ratios})


def test_a_diverged_training_saves_nothing(tmp_path: Path) -> None:
    from kwta_robust.errors import KwtaRobustError

    cfg = tiny_config(tmp_path, optimizer="sgd", lr=1e30, activation={"name": "relu"})
    with pytest.raises(KwtaRobustError, match="training diverged: .* tensors hold NaN or inf .* nothing was saved"):
        run_training(cfg)
    assert not (tmp_path / "model.pt").exists()


def test_an_interrupted_training_does_not_promise_a_resume(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import kwta_robust.commands.train as train_command

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run_training", interrupted)
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "m.pt")]) == 130
    err = capsys.readouterr().err
    assert "training does not resume" in err and "re-run the same command to resume" not in err
