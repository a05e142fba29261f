"""Persona walk 51: ``compare mypkg.models:make_net= ...`` (the weights after ``=`` left out, e.g. an empty shell
variable ``=$W``) was looked up as a checkpoint file named ``mypkg.models:make_net=``: "checkpoint
mypkg.models:make_net=: file not found; check the path". It is now one line naming the missing weights and both
forms that work."""

from __future__ import annotations

import pytest

from kwta_robust.cli import main
from kwta_robust.loading import ModelArgument


def test_a_factory_model_with_nothing_after_its_equals_sign_is_named(capsys: pytest.CaptureFixture) -> None:
    argv = ["compare", "walk51_models:make_net=", "walk51_models:make_net=relu.pt", "--config",
            "eval_configs/quickstart.yaml", "--dry-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: MODEL 'walk51_models:make_net=': no weights file after '='; write "
                   "walk51_models:make_net=WEIGHTS (the factory's plain state_dict), or walk51_models:make_net alone "
                   "for the parameters the factory returns")
    assert ModelArgument.parse("walk51_models:make_net=w.pt") == ModelArgument(model_factory="walk51_models:make_net",
                                                                                weights="w.pt")
