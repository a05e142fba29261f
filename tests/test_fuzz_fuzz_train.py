"""Fuzz round on training configs: architecture arguments of the wrong type were cast by the zoo's factories and
trained a model other than the one written — ``hidden: [8.5]`` an MLP of 8 units, ``hidden: [true]`` one of 1,
``batch_norm: "no"`` (quoted: a string) a CNN *with* BatchNorm — and recorded the value as written. They are now
one line naming the architecture, the argument and the type its factory takes (its annotation, as
``--factory-kwargs`` is checked), before any training; values of the annotated types build as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust import cli
from kwta_robust.errors import ConfigError
from kwta_robust.models import ModelSpec, create_model

COMMON = {"activation": "relu", "num_classes": 10, "in_channels": 1, "input_size": 8}


@pytest.mark.parametrize("arch, kwargs, detail", [
    ("mlp", {"hidden": [8.5]}, "argument 'hidden' expects Sequence[int]; hidden[0] is 8.5 (float), not int"),
    ("mlp", {"hidden": [16, True]}, "argument 'hidden' expects Sequence[int]; hidden[1] is True (bool), not int"),
    ("mlp", {"hidden": 16}, "argument 'hidden' expects Sequence[int], got 16 (int)"),
    ("cnn", {"channels": [2, 2], "batch_norm": "no"}, "argument 'batch_norm' expects bool, got 'no' (str)"),
    ("cnn", {"channels": [2, 2], "batch_norm": 0}, "argument 'batch_norm' expects bool, got 0 (int)"),
    ("cnn", {"channels": [2, 2], "hidden": 8.0}, "argument 'hidden' expects int, got 8.0 (float)"),
    ("cnn", {"channels": [2, 2], "kernel_size": 3.0}, "argument 'kernel_size' expects int, got 3.0 (float)"),
])
def test_an_argument_of_another_type_is_one_line_naming_it(arch: str, kwargs: dict, detail: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec.from_args(arch, **COMMON, **kwargs)
    assert str(info.value) == f"arch {arch!r}: {detail}; pass a value of that type"


def test_arguments_of_the_annotated_types_build_as_before() -> None:
    mlp = create_model("mlp", **{**COMMON, "activation": "relu"}, hidden=(8, 4))
    assert [m.out_features for m in mlp.modules() if hasattr(m, "out_features")] == [8, 4, 10]
    cnn = ModelSpec.from_args("cnn", **COMMON, channels=[2, 2], hidden=8, kernel_size=3, batch_norm=True).build()
    assert any(type(m).__name__ == "BatchNorm2d" for m in cnn.modules())


def test_train_refuses_it_in_one_line_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.pt"
    rc = cli.main(["train", "--dataset", "digits", "--arch", "cnn", "--arch-arg", "channels=[2,2]", "--arch-arg",
                   "batch_norm='false'", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not out.exists()
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: arch 'cnn': argument 'batch_norm' expects bool, got 'false' (str); pass a value of that type"]
