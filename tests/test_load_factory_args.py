"""A model factory's ``--factory-kwargs`` are checked against its signature before it is called: an unknown name,
a missing required argument and a value its annotation rules out are one line naming the factory and the argument
(with the names it accepts), not Python's TypeError or the factory's first use of the value; an error the call
still raises names the argument it is about. ``evaluate`` exits 2 with that line and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.errors import CheckpointError
from kwta_robust.factory_args import check_factory_arguments
from test_cli_eval import run_error, write_config

SPCNN = "kwta_robust.zoo:xiao_spcnn"
SPCNN_ACCEPTS = ("sp1, sp2, func, num_channels, hidden_size, bias, num_classes, in_channels, input_size, mean, "
                 "std")
NUPIC = "kwta_robust.zoo:nupic_sparse_cnn"


@pytest.mark.parametrize(("factory", "kwargs", "message"), [
    (SPCNN, {"sp1": 0.1, "gama": 0.1},  # was "bad arguments (... got an unexpected keyword argument 'gama')"
     f"model factory '{SPCNN}': unknown argument 'gama'; accepted: {SPCNN_ACCEPTS} (--factory-kwargs)"),
    (SPCNN, {"sp2": 0.1},  # was "bad arguments (... missing 1 required positional argument: 'sp1')"
     f"model factory '{SPCNN}': missing required argument 'sp1'; give it in --factory-kwargs (e.g. "
     f"'{{\"sp1\": ...}}'); accepted: {SPCNN_ACCEPTS}"),
    (SPCNN, {"sp1": "x"},  # was "raised ConfigError: sp1: a kWTA ratio ...; fix the factory"
     f"model factory '{SPCNN}': argument 'sp1' expects float, got 'x' (str); pass a value of that type in "
     "--factory-kwargs"),
    (SPCNN, {"sp1": 0.1, "num_classes": "ten"},  # was torch.empty's "argument 'size' ... must be tuple of ints"
     f"model factory '{SPCNN}': argument 'num_classes' expects int, got 'ten' (str); pass a value of that type in "
     "--factory-kwargs"),
    (SPCNN, {"sp1": 0.1, "num_channels": [32, "64", 64, 64]},
     f"model factory '{SPCNN}': argument 'num_channels' expects Sequence[int]; num_channels[1] is '64' (str), not "
     "int; pass a value of that type in --factory-kwargs"),
    (NUPIC, {"kwinner_local": "no"},  # was built silently: bool("no") is True
     f"model factory '{NUPIC}': argument 'kwinner_local' expects bool, got 'no' (str); pass a value of that type in "
     "--factory-kwargs"),
    (NUPIC, {"mean": 0.5},
     f"model factory '{NUPIC}': argument 'mean' expects Sequence[float] | None, got 0.5 (float); pass a value of "
     "that type in --factory-kwargs"),
    (SPCNN, {"sp1": 2.0},  # the factory's own ValueError: was "raised ConfigError: ...; fix the factory"
     f"model factory '{SPCNN}': argument 'sp1' = 2.0 refused (ConfigError: sp1: a kWTA ratio must be a number in "
     "(0, 1], got 2.0); pass a value it takes in --factory-kwargs"),
])
def test_factory_arguments_are_checked_against_the_signature(factory: str, kwargs: dict, message: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_byo_model(factory, factory_kwargs=kwargs)
    assert str(info.value) == message


def test_values_the_annotations_allow_pass_and_unannotated_ones_are_left_to_the_factory() -> None:
    def make(width: int, scale: float = 1.0, tags: tuple[str, ...] = (), mode=None, **extra) -> None:
        """A factory with ``**extra``: any further name is its own to refuse."""

    check_factory_arguments("m:make", make, {"width": 3, "scale": 2, "tags": ["a"], "mode": object(), "other": 1})
    with pytest.raises(CheckpointError, match=r"^model factory 'm:make': argument 'scale' expects float, got True "
                                              r"\(bool\); pass a value of that type in --factory-kwargs$"):
        check_factory_arguments("m:make", make, {"width": 3, "scale": True})
    with pytest.raises(CheckpointError, match=r"^model factory 'm:make': missing required argument 'width'; "):
        check_factory_arguments("m:make", make, {"scale": 2.0})


def test_a_valid_call_builds_the_model_the_factory_builds() -> None:
    from kwta_robust.zoo import nupic_sparse_cnn

    kwargs = {"linear_units": 20, "cnn_out_channels": [4, 4], "seed": 1, "mean": [0.5], "boost_strength": 2}
    torch.manual_seed(0)
    loaded = load_byo_model(NUPIC, factory_kwargs=kwargs)
    torch.manual_seed(0)
    direct = nupic_sparse_cnn(**kwargs).state_dict()
    assert loaded.model.state_dict().keys() == direct.keys()
    assert all(torch.equal(t, direct[k]) for k, t in loaded.model.state_dict().items())
    assert loaded.metadata["factory_kwargs"] == kwargs


def test_evaluate_exits_2_with_one_line_naming_the_argument(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, attacks=["fgsm"], noise=[])
    for kwargs, words in (('{"gama": 0.1}', "unknown argument 'gama'; accepted: sp1, sp2, func,"),
                          ('{"sp2": 0.1}', "missing required argument 'sp1'"),
                          ('{"sp1": "x"}', "argument 'sp1' expects float, got 'x' (str)")):
        line = run_error(capsys, ["evaluate", "--config", str(cfg), "--model-factory", SPCNN, "--factory-kwargs",
                                  kwargs, "--no-progress"])
        assert line.startswith(f"error: model factory '{SPCNN}': {words}"), line
