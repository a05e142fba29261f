"""Weights files of other code bases: wrappers, ``module.``/``_orig_mod.`` prefixes and missing BatchNorm counters
are normalized (and reported), everything else fails the strict key check with one line; and the issue's command,
``evaluate --model-factory kwta_robust.zoo:xiao_spresnet18 --factory-kwargs '{"gamma": 0.1}' --weights FILE``, runs
end to end on foolbox's CIFAR-10 samples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.cli import main
from kwta_robust.errors import CheckpointError
from kwta_robust.foreign_weights import normalize_state_dict
from kwta_robust.results import load_record
from test_zoo_xiao import random_state, released_spresnet18_keys


def small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))


@pytest.fixture()
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return small_bn_net().state_dict()


def test_wrappers_prefixes_and_counters_are_normalized_and_reported(state) -> None:
    model = small_bn_net()
    payload = {"epoch": 90, "net": {"model_state_dict": {f"module._orig_mod.{k}": v for k, v in state.items()}}}
    out, notes = normalize_state_dict(payload, model, "weights w.pt")
    assert out.keys() == state.keys() and all(torch.equal(out[k], state[k]) for k in state)
    assert notes == ["unwrapped the state_dict from the 'net' entry",
                     "unwrapped the state_dict from the 'model_state_dict' entry",
                     "stripped the 'module.' prefix from 9 keys", "stripped the '_orig_mod.' prefix from 9 keys"]
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # PyTorch < 0.4.1 file
    out, notes = normalize_state_dict(old, model, "weights w.pt")
    assert out.keys() == state.keys() and notes == [
        "took num_batches_tracked of 1 BatchNorm layers from the model (absent in the file)"]
    assert normalize_state_dict(state, model, "weights w.pt")[1] == []
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    assert normalize_state_dict(half, model, "weights w.pt")[1] == ["converted 8 tensors from float16 to the model's "
                                                                    "float32"]


def test_a_model_with_prefixed_keys_keeps_them(state) -> None:
    wrapped = nn.Sequential()
    wrapped.add_module("module", small_bn_net())  # the model itself has 'module.' keys: nothing is stripped
    out, notes = normalize_state_dict({f"module.{k}": v for k, v in state.items()}, wrapped, "weights w.pt")
    assert notes == [] and all(k.startswith("module.") for k in out)
    # the plain network's weights into the wrapped model (a factory returning self.module = net): the prefix is added
    out, notes = normalize_state_dict(state, wrapped, "weights w.pt")
    assert notes == ["added the 'module.' prefix to 9 keys (the model's keys all carry it)"]
    assert out.keys() == wrapped.state_dict().keys() and all(torch.equal(out[f"module.{k}"], state[k]) for k in state)


def test_a_name_every_key_carries_is_stripped_when_the_rest_are_the_models_keys(state) -> None:
    """A LightningModule saves its network's weights as ``model.<key>``: the strict check said "lacks '0.weight'
    ... the model definition differs", though the weights were the model's."""
    model = small_bn_net()
    lightning = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}
    out, notes = normalize_state_dict(lightning, model, "weights w.pt")
    assert out.keys() == state.keys() and all(torch.equal(out[k], state[k]) for k in state)
    assert notes[-1] == ("stripped the 'model.' prefix from 9 keys (every key carries it; without it they are the "
                         "model's)")
    old = {f"net.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert normalize_state_dict(old, model, "weights w.pt")[0].keys() == state.keys()
    extra = {**{f"model.{k}": v for k, v in state.items()}, "model.head.weight": torch.zeros(2)}  # not the model's
    assert normalize_state_dict(extra, model, "weights w.pt")[1] == []
    assert normalize_state_dict(state, model, "weights w.pt")[1] == []


def test_two_different_state_dicts_under_two_wrapper_keys_are_refused(state) -> None:
    """``{"model": best, "state_dict": last}`` evaluated the 'state_dict' entry with only an INFO line; the same
    tensors under two names still load."""
    other = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    with pytest.raises(CheckpointError, match=r"two different state_dicts, under 'state_dict' and 'model'; save the "
                                              r"one to evaluate alone"):
        normalize_state_dict({"model": other, "state_dict": state}, small_bn_net(), "weights w.pt")
    out, notes = normalize_state_dict({"model": state, "state_dict": dict(state)}, small_bn_net(), "weights w.pt")
    assert notes == ["unwrapped the state_dict from the 'state_dict' entry"] and out.keys() == state.keys()
    config = {"state_dict": state, "model": {"arch": "small_bn_net"}}  # a mapping that is no state_dict: not a rival
    assert normalize_state_dict(config, small_bn_net(), "weights w.pt")[0].keys() == state.keys()


@pytest.mark.parametrize("payload, match", [
    ({"epoch": 3, "optimizer": {}}, r"not a state_dict \(found a mapping with keys \['epoch', 'optimizer'\]\)"),
    ([1, 2], "not a state_dict \\(found list\\)"),
    ({1: torch.zeros(2)}, r"state_dict key 1 \(int\) is not a parameter name; save the weights with torch.save"),
])
def test_unusable_payloads_are_one_line_errors(payload, match) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        normalize_state_dict(payload, small_bn_net(), "weights w.pt")
    assert "\n" not in str(info.value)


def test_partly_prefixed_or_foreign_keys_fail_the_strict_check(tmp_path: Path, state) -> None:
    mixed = {("module." + k if k.startswith("0.") else k): v for k, v in state.items()}
    torch.save(mixed, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="lacks '0.weight'"):
        load_byo_model("test_foreign_weights:small_bn_net", tmp_path / "mixed.pt")


def test_issue_command_on_the_released_spresnet18_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    weights = tmp_path / "kwta_spresnet18_0.1_cifar_adv.pth"
    torch.save({f"module.{k}": v for k, v in random_state(released_spresnet18_keys(), seed=5).items()}, weights)
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump({
        "description": "smoke", "dataset": "cifar10-samples", "n_examples": 3, "batch_size": 3, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": ["8/255"]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    out = tmp_path / "record.json"
    rc = main(["evaluate", "--model-factory", "kwta_robust.zoo:xiao_spresnet18", "--factory-kwargs",
               json.dumps({"gamma": 0.1}), "--weights", str(weights), "--config", str(config), "--out", str(out),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    record = load_record(out)
    assert record.dataset["name"] == "cifar10-samples" and record.dataset["n"] == 3
    assert record.model["kwta_ratio"] == 0.1 and record.model["num_kwta_layers"] == 16
    assert record.model["training"]["weights_normalization"] == ["stripped the 'module.' prefix from 122 keys"]
    assert record.model["checkpoint_sha256"] is not None
    assert re.search(r"^\| pgd +\|", capsys.readouterr().out, re.M)  # the attack's row in the printed table


def test_a_tensor_torch_refuses_to_copy_is_one_line(tmp_path: Path, state) -> None:
    state = dict(state)
    state["0.weight"] = torch.empty(state["0.weight"].shape, device="meta")  # right key and shape, no data
    torch.save(state, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"load_state_dict refused the file \(.*Cannot copy out of meta tensor"
                       ) as info:
        load_byo_model("test_foreign_weights:small_bn_net", tmp_path / "meta.pt")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cast, kind", [(torch.Tensor.long, "int64 \\(not floating-point\\)"),
                                        (torch.Tensor.bool, "bool \\(not floating-point\\)"),
                                        (lambda t: torch.complex(t, t), "complex64 \\(complex\\)")])
def test_weights_load_state_dict_would_damage_are_one_line(state, cast, kind) -> None:
    """Before, an int64 or bool file was truncated into the float model and a complex one lost its imaginary part,
    with no error (a complex file printed only torch's UserWarning)."""
    bad = {k: cast(v) if v.is_floating_point() else v for k, v in state.items()}
    with pytest.raises(CheckpointError, match=f"'0.weight' is {kind} but the model's tensor is float32; these are "
                                              "not the trained weights") as info:
        normalize_state_dict(bad, small_bn_net(), "weights w.pt")
    assert "\n" not in str(info.value)


def test_integer_masks_of_buffers_still_load(state) -> None:
    """A 0/1 mask buffer stored as integers converts exactly (only parameters must be floating-point)."""
    model = small_bn_net()
    model.register_buffer("mask", torch.ones(3))
    out, _ = normalize_state_dict({**state, "mask": torch.ones(3, dtype=torch.long)}, model, "weights w.pt")
    assert out["mask"].dtype == torch.long


def test_an_integer_copy_of_a_tied_parameter_is_refused_too() -> None:
    """A parameter shared by two modules is in the state_dict under both names, and load_state_dict copies both into
    it; named_parameters() lists it once, so an int64 tensor under the second name was loaded silently (truncated
    into the shared weight) while the same tensor under the first name was refused."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
            self.b.weight = self.a.weight

    state = {k: v.clone() for k, v in Tied().state_dict().items()}
    with pytest.raises(CheckpointError, match="'b.weight' is int64 \\(not floating-point\\)"):
        normalize_state_dict({**state, "b.weight": state["b.weight"].round().long()}, Tied(), "weights w.pt")
