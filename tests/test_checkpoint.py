"""Checkpoints: round trip (same outputs and accuracy), safe weights-only loading, metadata measured from the
model, atomic writes, bring-your-own models, and a one-line CheckpointError for every failure."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import FORMAT, file_sha256, load_byo_model, load_checkpoint, save_checkpoint
from kwta_robust.data import load_dataset
from kwta_robust.errors import CheckpointError
from kwta_robust.layers import ActivationSpec, kwta_layers
from kwta_robust.models import ModelSpec
from kwta_robust.training import evaluate_accuracy


@pytest.fixture()
def spec() -> ModelSpec:
    activation = ActivationSpec("kwta", ratio=0.2, mode="channel", boost_strength=0.5, k_inference_factor=1.5)
    return ModelSpec.from_args("cnn", activation, in_channels=1, input_size=8, mean=[0.3], std=[0.4], channels=[4, 8],
                               hidden=16)


@pytest.fixture()
def model(spec: ModelSpec) -> nn.Module:
    torch.manual_seed(0)
    net = spec.build()
    net.train()
    net(torch.rand(16, 1, 8, 8))  # non-trivial duty-cycle buffers
    with torch.no_grad():
        net.features[0].weight[0] = 0.0  # one filter pruned: measured sparsity must see it
    return net.eval()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_round_trip_gives_identical_outputs_and_accuracy(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model, spec, {"dataset": "digits", "seed": 3})
    loaded = load_checkpoint(path)
    assert not loaded.model.training and loaded.spec == spec
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert loaded.source == str(path)
    data = load_dataset("digits", "test")
    assert torch.equal(loaded.model(data.x), model(data.x))
    assert evaluate_accuracy(loaded.model, data) == evaluate_accuracy(model, data)
    for name, layer in kwta_layers(model).items():
        assert torch.equal(kwta_layers(loaded.model)[name].duty_cycle, layer.duty_cycle)


def test_file_is_plain_data_loadable_with_weights_only(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {"dataset": "digits", "test_accuracy": 0.5})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["format_version"] == 1
    assert payload["model_spec"] == spec.to_dict()
    assert set(payload["state_dict"]) == set(model.state_dict())


def test_metadata_is_measured_and_keeps_caller_fields(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    meta = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, spec, {
        "dataset": "digits", "test_accuracy": 0.875, "seed": 3, "activation": "wrong", "training": {"lr": 0.1},
    })).metadata
    assert meta["dataset"] == "digits" and meta["test_accuracy"] == 0.875 and meta["seed"] == 3
    assert meta["training"] == {"lr": 0.1}
    assert meta["activation"] == "kwta"  # measured facts win over caller keys
    assert meta["kwta_ratio"] == 0.2 and meta["kwta_mode"] == "channel" and meta["k_inference_factor"] == 1.5
    first = model.features[0].weight
    assert meta["weight_sparsity"]["layers"]["features.0"] == pytest.approx(first[0].numel() / first.numel())
    assert meta["weight_sparsity"]["overall"] > 0
    assert meta["versions"]["torch"] == torch.__version__ and "kwta_robust" in meta["versions"]
    with pytest.raises(CheckpointError, match="not plain data"):
        save_checkpoint(tmp_path / "bad.pt", model, spec, {"when": object()})


def test_write_is_atomic(tmp_path: Path, spec: ModelSpec, model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {})
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, spec, {})
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_written_file_gets_normal_permissions(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    import os

    path = save_checkpoint(tmp_path / "m.pt", model, spec, {})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "absent.pt")
    assert "file not found" in _one_line(info)


def test_plain_state_dict_points_to_bring_your_own(tmp_path: Path, model: nn.Module) -> None:
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "sd.pt")
    assert "plain state_dict" in _one_line(info) and "--model-factory" in str(info.value)
    torch.save({"something": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a kwta-robust checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_corrupt_and_truncated_files(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    data = save_checkpoint(tmp_path / "m.pt", model, spec, {}).read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("trunc.pt", "garbage.pt", "empty.pt"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        assert "corrupt" in _one_line(info)


def _payload(spec: ModelSpec, model: nn.Module, **changes) -> dict:
    payload = {"format": FORMAT, "format_version": 1, "model_spec": spec.to_dict(), "state_dict": model.state_dict(),
               "metadata": {}}
    payload.update(changes)
    return payload


def test_newer_format_version(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    torch.save(_payload(spec, model, format_version=2), tmp_path / "new.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "new.pt")
    assert "newer" in _one_line(info) and "upgrade" in str(info.value)


def test_unknown_architecture(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    torch.save(_payload(spec, model, model_spec={"arch": "transformer9000", "kwargs": {}}), tmp_path / "u.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "u.pt")
    assert "unknown architecture 'transformer9000'" in _one_line(info)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    wider = ModelSpec(spec.arch, {**spec.kwargs, "hidden": 32})
    torch.save(_payload(wider, model), tmp_path / "s.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "s.pt")
    message = _one_line(info)
    assert "'classifier.1.weight'" in message and "(16, 32)" in message and "(32, 32)" in message


class _Custom:
    """A Python object only pickle can restore."""

    def __init__(self) -> None:
        self.value = 1


def test_file_needing_pickle_requires_explicit_opt_in(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    torch.save(_payload(spec, model, metadata={"obj": _Custom()}), tmp_path / "p.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "p.pt")
    assert "allow_pickle" in _one_line(info) and "trust" in str(info.value)
    loaded = load_checkpoint(tmp_path / "p.pt", allow_pickle=True)
    assert isinstance(loaded.metadata["obj"], _Custom) and loaded.spec == spec
    torch.save(model, tmp_path / "whole.pt")  # a pickled nn.Module
    with pytest.raises(CheckpointError, match="allow_pickle"):
        load_checkpoint(tmp_path / "whole.pt")
    whole = load_checkpoint(tmp_path / "whole.pt", allow_pickle=True)
    assert whole.spec is None and not whole.model.training
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(whole.model(x), model(x))


@pytest.fixture()
def byo_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_byo_models.py").write_text(textwrap.dedent("""
        from torch import nn

        def small_net(hidden=8):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        not_a_model = 3

        def returns_list():
            return [1]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_byo_models"


def test_bring_your_own_model_loads_and_evaluates(tmp_path: Path, byo_module: str) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = load_byo_model(f"{byo_module}:small_net", tmp_path / "w.pt", factory_kwargs={"hidden": 12})
    data = load_dataset("digits", "test")
    assert loaded.spec is None and not loaded.model.training
    assert torch.equal(loaded.model(data.x), net.eval()(data.x))
    assert evaluate_accuracy(loaded.model, data) == evaluate_accuracy(net, data)
    assert loaded.sha256 == file_sha256(tmp_path / "w.pt")
    assert loaded.metadata["activation"] == "relu" and loaded.metadata["model_factory"] == f"{byo_module}:small_net"
    no_weights = load_byo_model(f"{byo_module}:small_net")
    assert no_weights.sha256 is None and no_weights.model(data.x[:2]).shape == (2, 10)


def test_bring_your_own_errors(tmp_path: Path, byo_module: str) -> None:
    torch.save(nn.Linear(64, 3).state_dict(), tmp_path / "wrong.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases = [
        (("no_colon",), "package.module:function"),
        (("surely_missing_module_xyz:f",), "cannot import"),
        ((f"{byo_module}:absent",), "no attribute"),
        ((f"{byo_module}:not_a_model",), "not callable"),
        ((f"{byo_module}:returns_list",), "expected an nn.Module"),
        ((f"{byo_module}:small_net", tmp_path / "wrong.pt"), "lacks '1.weight'"),
        ((f"{byo_module}:small_net", tmp_path / "list.pt"), "not a state_dict"),
        ((f"{byo_module}:small_net", tmp_path / "absent.pt"), "file not found"),
    ]
    for args, expected in cases:
        with pytest.raises(CheckpointError) as info:
            load_byo_model(*args)
        assert expected in _one_line(info)
    # checked against the signature: was "bad arguments (...; small_net() got an unexpected keyword argument ...)"
    with pytest.raises(CheckpointError, match=rf"^model factory '{byo_module}:small_net': unknown argument 'depth'; "
                                              r"accepted: hidden \(--factory-kwargs\)$"):
        load_byo_model(f"{byo_module}:small_net", factory_kwargs={"depth": 3})
    # a required argument left out read "bad arguments [] (... missing 1 required positional argument ...)": no fix
    with pytest.raises(CheckpointError, match=r"^model factory 'kwta_robust.zoo:xiao_spcnn': missing required "
                                              r"argument 'sp1'; give it in --factory-kwargs \(e\.g\. "):
        load_byo_model("kwta_robust.zoo:xiao_spcnn")
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 10)).state_dict(),
               tmp_path / "narrow.pt")
    # the error names the factory beside the file (compare may load one file into two factories' models)
    with pytest.raises(CheckpointError, match=rf"^weights {re.escape(str(tmp_path / 'narrow.pt'))} \(for "
                                              rf"{byo_module}:small_net\): shape mismatch for '1.weight': file has "
                                              r"\(4, 64\), model expects \(8, 64\)"):
        load_byo_model(f"{byo_module}:small_net", tmp_path / "narrow.pt")


def test_a_factory_module_that_is_not_found_gets_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module in the working folder (which the console script does not import from) and a file path written as
    the module read "No module named ...; check the module path and PYTHONPATH" whatever the cause."""
    (tmp_path / "my_nets.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    (tmp_path / "broken_nets.py").write_text("import surely_missing_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)

    def message(factory: str) -> str:
        with pytest.raises(CheckpointError) as info:
            load_byo_model(factory)
        return _one_line(info)

    assert message("my_nets:make").endswith("it is in the working folder, which the kwta-robust command does not "
                                            "import from: run PYTHONPATH=.:$PYTHONPATH kwta-robust ... "
                                            "(or install its package)")
    assert message("my_nets.py:make").endswith("write the module's import name, not a file: PYTHONPATH=.:$PYTHONPATH "
                                               "kwta-robust ... --model-factory my_nets:make")
    assert message(f"{tmp_path}/my_nets.py:make").endswith(f"PYTHONPATH={tmp_path}:$PYTHONPATH kwta-robust ... "
                                                           "--model-factory my_nets:make")
    monkeypatch.syspath_prepend(str(tmp_path))  # found, but its own import fails: the dependency is named
    assert message("broken_nets:make").endswith("(No module named 'surely_missing_dependency_xyz'); check the module "
                                                "path and PYTHONPATH")


def test_a_factory_returning_lazy_modules_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.LazyLinear before any forward: describing the model (with or without weights) or reading a weights file
    into it stopped with a torch traceback ("Attempted to use an uninitialized parameter")."""
    (tmp_path / "lazy_nets.py").write_text("import torch\n\ndef make():\n    return torch.nn.Sequential("
                                           "torch.nn.Flatten(), torch.nn.LazyLinear(10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).state_dict(), tmp_path / "w.pt")
    for weights in (None, tmp_path / "w.pt"):
        with pytest.raises(CheckpointError) as info:
            load_byo_model("lazy_nets:make", weights)
        assert _one_line(info) == ("model factory 'lazy_nets:make': '1.weight' is uninitialized (a torch.nn.Lazy* "
                                   "module); run one forward on a dummy batch in the factory (model(torch.zeros(1, C, "
                                   "H, W))) before returning the model")


def test_a_pickled_module_under_a_wrapper_key_is_read_as_its_state_dict(tmp_path: Path, byo_module: str) -> None:
    """``torch.save({"model": net, "epoch": 3})`` (a training script's checkpoint, with --allow-pickle) was refused
    as "not a state_dict ... or wrap it under one of state_dict, model_state_dict, model, net" — it was under
    'model'; a whole pickled module at the top was already read as its state_dict."""
    import my_byo_models  # noqa: PLC0415 - written by the fixture

    torch.manual_seed(3)
    net = my_byo_models.small_net()
    torch.save({"model": net, "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="need pickle"):
        load_byo_model(f"{byo_module}:small_net", tmp_path / "ckpt.pt")
    loaded = load_byo_model(f"{byo_module}:small_net", tmp_path / "ckpt.pt", allow_pickle=True)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    assert loaded.metadata["weights_normalization"][0] == "a pickled module under 'model': its state_dict"
