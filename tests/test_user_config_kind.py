"""A new user's first slip with the shipped configs: a sweep's or a training's YAML (both in ``eval_configs/``)
given to ``evaluate --config`` is named as such, with the command that reads it, in one line — not as an unknown
key of an evaluation config (``config: unknown key 'name'; valid keys: ...``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.config import load_config
from kwta_robust.errors import ConfigError
from tests.test_model_identity import _error, _setup

CONFIGS = Path(__file__).resolve().parent.parent / "eval_configs"


@pytest.mark.parametrize("name,kind,command", [
    ("sweep_cifar10.yaml", "sweep", "kwta-robust sweep"),
    ("sweep_mnist5k_3x3.yaml", "sweep", "kwta-robust sweep"),
    ("train_cnn_kwta.yaml", "training", "kwta-robust train --config"),
])
def test_another_commands_config_is_named_with_its_command(name: str, kind: str, command: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    argv, out = _setup(tmp_path, monkeypatch, f"user_kind_{kind}")
    path = CONFIGS / name
    argv[argv.index("--config") + 1] = str(path)
    line = _error(capsys, argv)  # exit 2, one error line, no traceback
    assert line == f"error: --config: {path} is a {kind} config, not an evaluation config; run it with " \
                   f"`{command} {path}`, or give an evaluation config (eval_configs/README.md)"
    assert not out.exists()


def test_evaluation_configs_still_load_and_a_stray_key_is_still_named(tmp_path: Path) -> None:
    assert load_config(CONFIGS / "cifar10.yaml").dataset == "cifar10"
    stray = tmp_path / "e.yaml"
    stray.write_text("dataset: mnist5k\nname: mine\nthreats: [{norm: linf, epsilons: [0.1]}]\nattacks: [pgd]\n")
    with pytest.raises(ConfigError, match=r"^config: unknown key 'name'; valid keys: description, dataset"):
        load_config(stray)
