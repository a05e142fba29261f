"""``--arch-arg`` / ``arch_kwargs`` naming an argument that ``train`` passes to the model itself (the activation from
its section; the classes, channels, input size, mean and std from the data set) is refused while the config is read,
in one line naming the key: ``ModelSpec.from_args`` got it twice and raised Python's TypeError with a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust import cli
from kwta_robust.errors import ConfigError
from kwta_robust.models.registry import COMMON_ARGS
from kwta_robust.training import TrainConfig


@pytest.mark.parametrize("key", COMMON_ARGS)
def test_each_argument_train_sets_itself_is_refused_naming_it(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"dataset": "digits", "arch": "mlp", "arch_kwargs": {"hidden": [16], key: 8}})
    message = str(info.value)
    assert message.startswith(f"arch_kwargs.{key}: set by train itself") and f"--arch-arg {key}=" in message
    assert "\n" not in message


def test_other_architecture_arguments_still_pass() -> None:
    cfg = TrainConfig.from_dict({"dataset": "digits", "arch": "mlp", "arch_kwargs": {"hidden": [16]}})
    assert cfg.arch_kwargs == {"hidden": [16]}


def test_the_cli_refuses_it_in_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--dataset", "digits", "--arch-arg", "input_size=8", "--epochs", "1",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: arch_kwargs.input_size: set by train itself") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
