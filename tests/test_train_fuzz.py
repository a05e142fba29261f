"""Training at run time, valid-looking edge cases found by fuzzing ``kwta-robust train`` end to end (tiny budgets on
the 8×8 digits): learning rates and weight decays float32 cannot hold (a raw ``RuntimeError`` from inside torch's
optimizer), a negative step-schedule ``gamma`` (a negative learning rate: gradient ascent reported as a success), a
batch size of 1 (every batch dropped: nothing trained, loss 0.0 reported), and a GraSP temperature so small that the
scores overflow (a raw ``ValueError``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kwta_robust import cli
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.training import TrainConfig, run_training
from tests.test_train import tiny_config

MLP = {"arch": "mlp", "arch_kwargs": {"hidden": [16]}, "activation": {"name": "relu"}}


def _one_line_error(**changes) -> str:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"dataset": "digits", **changes})
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("changes, fragment", [
    ({"lr": 1e300}, "lr: must be at most 3.4e+38"),
    ({"weight_decay": 1e300}, "weight_decay: must be at most 3.4e+38"),
    ({"incremental": {"ratios": [0.1], "lr": 1e300}, "activation": {"name": "kwta", "k_ratio": 0.2}},
     "incremental.lr: must be at most 3.4e+38"),
    ({"pruning": {"method": "magnitude", "sparsity": 0.5, "finetune_lr": 1e300}, "epochs": 1},
     "pruning.finetune_lr: must be a number in (0, 3.4e+38]"),
    ({"schedule": "step", "gamma": -1}, "gamma: must be a finite number > 0"),
    ({"schedule": "step", "gamma": 0}, "gamma: must be a finite number > 0"),
    ({"schedule": "step", "gamma": 1e308, "lr": 0.1}, "gamma: lr × gamma^2 exceeds 3.4e+38"),
    ({"batch_size": 1}, "batch_size: must be >= 2"),
])
def test_values_that_trained_wrongly_or_crashed_are_refused_naming_the_key(changes: dict, fragment: str) -> None:
    assert fragment in _one_line_error(**changes)


def test_values_next_to_the_new_bounds_still_train(tmp_path: Path) -> None:
    """lr 1e30 still trains (and diverges with the one-line message naming weight_decay too), gamma 2 and batch
    size 2 train and save."""
    result = run_training(tiny_config(tmp_path, **MLP, batch_size=2, schedule="step", gamma=2.0, epochs=2))
    assert result.checkpoint.is_file() and len(result.history.epochs) == 2
    assert all(epoch.loss > 0 for epoch in result.history.epochs)  # batches of two were trained on
    with pytest.raises(KwtaRobustError, match=r"training diverged: .*lower lr \(or weight_decay"):
        run_training(tiny_config(tmp_path, **MLP, lr=1e30, out=str(tmp_path / "diverged.pt")))
    assert not (tmp_path / "diverged.pt").exists()


def test_grasp_scores_that_overflow_are_one_line_naming_the_temperature(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, **MLP, pruning={"method": "grasp", "sparsity": 0.5, "grasp_temperature": 1e-30})
    with pytest.raises(ConfigError, match=r"pruning.grasp_temperature: .*1e-30.* overflow") as info:
        run_training(cfg)
    assert "\n" not in str(info.value) and not Path(cfg.out).exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--lr", "1e300"], "error: --lr: must be at most 3.4e+38"),  # the flag gave it
    (["--batch-size", "1"], "error: --batch-size: must be >= 2"),
])
def test_cli_refuses_them_in_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
                                                  fragment: str) -> None:
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--dataset", "digits", "--arch", "mlp", "--arch-arg", "hidden=[16]", "--epochs", "1",
                     *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_naming_a_pipe_or_device_is_refused_and_left_in_place(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """``train --out /dev/null`` run as root used to "save" the checkpoint by renaming its temp file over the
    device (replacing /dev/null with a regular file) and report success; a FIFO stands in for the device here."""
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    assert cli.main(["train", "--dataset", "digits", "--arch", "mlp", "--arch-arg", "hidden=[16]", "--epochs", "1",
                     "--out", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert f"error: --out: {fifo} is not a regular file" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and stat.S_ISFIFO(fifo.stat().st_mode)
