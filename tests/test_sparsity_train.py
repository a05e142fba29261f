"""Pruning through the training loop and ``kwta-robust train``: LR-schedule windows, early stop, pruned checkpoints,
and bad pruning flags failing before any training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.cli import main
from kwta_robust.data import load_dataset
from kwta_robust.sparsity import PruningConfig, TrainSegment, measure_sparsity
from kwta_robust.training import LoopTrainer, final_lr
from kwta_robust.training import SCHEDULES, TrainConfig, run_training, steps_per_epoch, train_model
from kwta_robust.models import create_model

torch.set_num_threads(1)
TINY = {"channels": [4, 8], "hidden": 16, "kernel_size": 3}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def test_schedule_window_and_early_stop_in_train_model(digits):
    data = digits.subset(slice(0, 256))
    cfg = TrainConfig(dataset="digits", epochs=4, batch_size=64, arch_kwargs=TINY, lr=0.01, optimizer="sgd")
    per_epoch = steps_per_epoch(len(data), cfg.batch_size)
    total = cfg.epochs * per_epoch
    model = create_model("cnn", num_classes=10, in_channels=1, input_size=8, **TINY)
    history = train_model(model, data, dataclasses.replace(cfg, epochs=2), "cpu", schedule_epochs=(2, 4))
    expected = [cfg.lr * SCHEDULES["cosine"](e * per_epoch / total, cfg) for e in (2, 3)]
    assert [e.lr for e in history.epochs] == pytest.approx(expected)
    stops = []
    history = train_model(model, data, cfg, "cpu",
                          epoch_callback=lambda epoch, stats, m: stops.append(epoch) or epoch == 2)
    assert stops == [1, 2] and len(history.epochs) == 2


def test_loop_trainer_segments(digits):
    data = digits.subset(slice(0, 256))
    cfg = TrainConfig(dataset="digits", epochs=3, batch_size=64, arch_kwargs=TINY,
                      pruning=PruningConfig(method="magnitude", sparsity=0.5))
    trainer = LoopTrainer(data, cfg, torch.device("cpu"))
    rewind_cfg, window = trainer.segment_config(TrainSegment("r", 2, schedule_offset=1))
    assert window == (1, 3) and rewind_cfg.epochs == 2 and rewind_cfg.pruning is None
    ft_cfg, window = trainer.segment_config(TrainSegment("f", 2, schedule_offset=3, constant_lr="final"))
    assert window is None and ft_cfg.schedule == "constant"
    assert ft_cfg.lr == final_lr(cfg, trainer.steps_per_epoch) == pytest.approx(cfg.lr / 10)  # cosine ends ~0
    constant = dataclasses.replace(cfg, schedule="constant")
    assert final_lr(constant, 4) == cfg.lr
    step_cfg = dataclasses.replace(cfg, schedule="step", gamma=0.5)
    assert final_lr(step_cfg, 4) == pytest.approx(cfg.lr * 0.25)  # the last rate of the schedule, above the floor
    fixed, _ = trainer.segment_config(TrainSegment("f", 1, constant_lr=3e-4))
    assert fixed.lr == 3e-4


@pytest.mark.parametrize("method", ["magnitude", "rigl", "snip"])
def test_run_training_saves_pruned_checkpoint(tmp_path, method):
    pruning = PruningConfig(method=method, sparsity=0.8, retrain_epochs=1, rigl_interval=5, score_batches=2)
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=64, arch_kwargs=TINY, pruning=pruning,
                      out=str(tmp_path / f"{method}.pt"))
    result = run_training(cfg)
    assert abs(result.sparsity - 0.8) <= 0.01
    loaded = load_checkpoint(result.checkpoint)
    state = loaded.model.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    meta = loaded.metadata["pruning"]
    layers = meta["pruned_layers"]
    from_tensors = sum(int((state[f"{n}.weight"] == 0).sum()) for n in layers) / sum(
        state[f"{n}.weight"].numel() for n in layers)
    assert meta["measured_sparsity"] == pytest.approx(from_tensors)
    assert loaded.metadata["weight_sparsity"]["overall"] == pytest.approx(measure_sparsity(loaded.model).overall)
    assert meta["method"] == method and meta["config"]["sparsity"] == 0.8
    assert loaded.metadata["training"]["pruning"]["method"] == method
    if method == "rigl":
        assert meta["details"]["connections_moved"] > 0
    assert math.isfinite(loaded.metadata["test_accuracy"])


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--prune", "magnitude", "--sparsity", "1.0"], "error: --sparsity: "),  # a flag's value: the flag
        (["--prune", "magnitude", "--sparsity", "-0.2"], "error: --sparsity: "),
        (["--prune", "optimal-brain-surgeon", "--sparsity", "0.5"], "error: --prune: "),
        (["--sparsity", "0.5"], "error: pruning.method: "),  # no flag gave it: the key
        (["--prune", "magnitude"], "error: pruning.sparsity: "),
        (["--prune", "magnitude", "--sparsity", "0.5", "--prune-retrain", "rewind"], "error: --prune-retrain: "),
        (["--prune", "rigl", "--sparsity", "0.5", "--prune-rounds", "3"], "error: --prune-rounds: "),
        (["--prune", "magnitude", "--sparsity", "0.5", "--prune-retrain", "rewind-weights", "--rewind-epoch", "5",
          "--epochs", "5"], "error: --rewind-epoch: "),
    ],
)
def test_bad_pruning_flags_fail_with_one_line_before_training(tmp_path, capsys, monkeypatch, flags, field):
    calls = []
    monkeypatch.setattr("kwta_robust.training.run.load_dataset", lambda *a, **k: calls.append(a))
    out = tmp_path / "never.pt"
    code = main(["train", "--dataset", "digits", "--out", str(out), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and calls == [] and not out.exists()
    assert err.startswith("error: ") and field in err and len(err.splitlines()) == 1
