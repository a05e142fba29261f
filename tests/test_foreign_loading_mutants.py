"""Mutation round on kwta_robust.foreign_weights and .loading (part 2 of :mod:`test_resume_checkpoint_mutants`):
each test pins a behaviour a hand-made mutant changed without any other test noticing. Expected values are written
out by hand (counts of tensors made here, messages spelled in full), never read back from the code."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import save_checkpoint
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.foreign_weights import (
    check_dtypes,
    is_state_dict,
    normalize_state_dict,
    unfold_pruning,
    unwrap,
)
from kwta_robust import loading
from kwta_robust.loading import ModelArgument, ModelSource, load_model, model_info
from kwta_robust.models import ModelSpec

from test_resume_checkpoint_mutants import nets_module, spec  # fixtures


# ---------------------------------------------------------------------------------------------------- foreign


def test_is_state_dict_needs_a_non_empty_mapping_of_tensors() -> None:
    assert not is_state_dict({}) and not is_state_dict({"a": 1}) and is_state_dict({"a": torch.zeros(1)})


def _sd() -> dict[str, torch.Tensor]:
    return {"0.weight": torch.arange(6.0).reshape(2, 3), "0.bias": torch.tensor([1.0, -1.0])}


def test_unwrap_follows_nested_wrappers_and_picks_the_state_dict_entry() -> None:
    state, notes = unwrap({"model": {"state_dict": {"net": _sd()}}}, "src")
    assert set(state) == {"0.weight", "0.bias"} and notes == [
        "unwrapped the state_dict from the 'model' entry", "unwrapped the state_dict from the 'state_dict' entry",
        "unwrapped the state_dict from the 'net' entry"]
    state, notes = unwrap({"state_dict": _sd(), "net": {"lr": 0.1}, "epoch": 3}, "src")
    assert set(state) == {"0.weight", "0.bias"} and notes == ["unwrapped the state_dict from the 'state_dict' entry"]
    with pytest.raises(CheckpointError, match=r"^src: state_dict key 0 \(int\) is not a parameter name"):
        unwrap({0: torch.zeros(1)}, "src")


def test_two_wrapper_entries_are_the_same_only_with_equal_values_and_dtypes() -> None:
    same, notes = unwrap({"state_dict": _sd(), "model": _sd()}, "src")  # equal copies, not the same objects
    assert torch.equal(same["0.weight"], _sd()["0.weight"]) and len(notes) == 1
    double = {k: v.double() for k, v in _sd().items()}
    with pytest.raises(CheckpointError, match="two different state_dicts, under 'state_dict' and 'model'"):
        unwrap({"state_dict": _sd(), "model": double}, "src")
    sparse = {"w": torch.eye(3).to_sparse()}
    state, _ = unwrap({"state_dict": sparse, "net": {"w": torch.eye(3).to_sparse()}}, "src")
    assert torch.equal(state["w"].to_dense(), torch.eye(3))


class _Wrapped(nn.Module):
    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.add_module(name, net)


def test_keys_that_already_match_a_prefixed_model_are_left_alone() -> None:
    model = _Wrapped(nn.Sequential(nn.Linear(3, 2)), "module")
    state = {"module.0.weight": torch.zeros(2, 3), "module.0.bias": torch.zeros(2)}
    normalized, notes = normalize_state_dict(dict(state), model, "src")
    assert set(normalized) == set(state) and notes == []


def test_nested_compile_and_data_parallel_prefixes_are_both_stripped() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    state = {"_orig_mod.module.0.weight": torch.zeros(2, 3), "_orig_mod.module.0.bias": torch.zeros(2)}
    normalized, notes = normalize_state_dict(state, model, "src")
    assert set(normalized) == {"0.weight", "0.bias"}
    assert notes == ["stripped the '_orig_mod.' prefix from 2 keys", "stripped the 'module.' prefix from 2 keys"]


def test_a_name_is_not_stripped_when_the_file_has_keys_the_model_lacks() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    state = {"model.0.weight": torch.zeros(2, 3), "model.0.bias": torch.zeros(2), "model.extra": torch.zeros(1)}
    normalized, notes = normalize_state_dict(dict(state), model, "src")
    assert set(normalized) == set(state) and notes == []


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))


def test_batchnorm_counters_are_taken_from_the_model_only_for_layers_the_file_has() -> None:
    model = _bn_net()
    model[1].num_batches_tracked.fill_(7)
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key in ("3.weight", "3.bias", "3.running_mean", "3.running_var"):
        del state[key]  # the second BatchNorm is absent altogether: left to the strict check
    normalized, notes = normalize_state_dict(state, model, "src")
    assert int(normalized["1.num_batches_tracked"]) == 7 and "3.num_batches_tracked" not in normalized
    assert notes == ["took num_batches_tracked of 1 BatchNorm layers from the model (absent in the file)"]


def test_dtype_notes_count_only_the_converted_floating_point_tensors() -> None:
    model = _bn_net()  # by hand: 2 convs x (weight, bias) + 2 BatchNorms x 4 = 12
    state = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    assert sum(1 for v in state.values() if v.dtype == torch.float64) == 12
    _, notes = normalize_state_dict(state, model, "src")
    assert notes == ["converted 12 tensors from float64 to the model's float32"]
    _, notes = normalize_state_dict(model.state_dict(), model, "src")
    assert notes == []


def test_check_dtypes_ignores_tensors_the_model_holds_as_integers() -> None:
    model = _bn_net()
    check_dtypes({"1.num_batches_tracked": torch.tensor(1 + 0j)}, model, "src")  # an integer counter: not checked
    with pytest.raises(CheckpointError, match=r"^src: '1\.running_mean' is complex64 \(complex\)"):
        check_dtypes({"1.running_mean": torch.zeros(2, dtype=torch.complex64)}, model, "src")


def test_an_orig_without_its_mask_is_not_folded() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    state = {"0.weight_orig": torch.ones(2, 3), "0.bias": torch.zeros(2)}
    folded, notes = unfold_pruning(dict(state), model.state_dict())
    assert set(folded) == {"0.weight_orig", "0.bias"} and notes == []


@pytest.mark.parametrize(("layers", "listed"), [
    (4, "0.weight, 1.weight, 2.weight, 3.weight"),
    (5, "0.weight, 1.weight, 2.weight, 3.weight, ..."),
])
def test_the_fold_note_lists_four_names_then_an_ellipsis(layers: int, listed: str) -> None:
    expected = {f"{i}.weight": torch.zeros(2, 2) for i in range(layers)}
    state = {}
    for i in range(layers):
        state[f"{i}.weight_orig"] = torch.full((2, 2), 3.0)
        state[f"{i}.weight_mask"] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    folded, notes = unfold_pruning(state, expected)
    assert torch.equal(folded["0.weight"], torch.tensor([[3.0, 0.0], [0.0, 3.0]]))
    assert notes == [f"folded {layers} pruned tensors (torch.nn.utils.prune's <name>_orig * <name>_mask) into "
                     f"<name>: {listed}"]


# ---------------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"checkpoint": "m.pt", "model_factory": "a.b:c"}, "CHECKPOINT m.pt with --model-factory: a factory's weights go "
     "in --weights (--model-factory a.b:c --weights m.pt); a CHECKPOINT alone is a kwta-robust checkpoint"),
    ({"checkpoint": "m.pt", "weights": "w.pt"}, "--weights: only used with --model-factory; a checkpoint already "
     "holds its weights"),
    ({"checkpoint": "m.pt", "factory_kwargs": {}}, "--factory-kwargs: only used with --model-factory; a checkpoint "
     "rebuilds its model from its own spec (drop the option)"),
])
def test_load_model_refuses_mixed_arguments(kwargs, message) -> None:
    checkpoint = kwargs.pop("checkpoint")
    with pytest.raises(ConfigError) as info:
        load_model(checkpoint, "cpu", **kwargs)
    assert str(info.value) == message


def test_labels_and_sources_of_loaded_models(tmp_path: Path, spec: ModelSpec, nets_module: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "m.pt", spec.build(), spec, {"dataset": "digits"})
    loaded = load_model("m.pt", "cpu")
    assert loaded.label == "m" and loaded.info["architecture"] == "cnn"
    assert loaded.source.checkpoint == str(tmp_path / "m.pt")
    assert "versions" not in loaded.info["training"] and loaded.info["training"]["dataset"] == "digits"
    assert load_model("m.pt", "cpu", label="mine").label == "mine"
    assert ModelSource(checkpoint=str(tmp_path / "m.pt"), label="again").load("cpu").label == "again"

    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).state_dict(), "w.pt")
    byo = load_model(None, "cpu", model_factory=f"{nets_module}:small", weights="w.pt")
    assert byo.label == "w" and byo.source.weights == str(tmp_path / "w.pt")
    assert byo.info["source"] == f"mut_nets:small + {tmp_path / 'w.pt'}"
    code = byo.info["model_source_sha256"]
    assert isinstance(code, str) and len(code) == 64 and int(code, 16) >= 0
    assert load_model(None, "cpu", model_factory=f"{nets_module}:small").label == "small"


def test_a_pickled_module_source_keeps_allow_pickle(tmp_path: Path, spec: ModelSpec) -> None:
    torch.save(spec.build(), tmp_path / "whole.pt")
    loaded = ModelSource(checkpoint=str(tmp_path / "whole.pt"), allow_pickle=True).load("cpu")
    assert loaded.info["spec"] is None and loaded.label == "whole"


def test_model_argument_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ModelArgument.parse("pkg.mod:make") == ModelArgument(model_factory="pkg.mod:make")
    assert ModelArgument.parse("pkg.mod:make=w/x.pt") == ModelArgument(model_factory="pkg.mod:make", weights="w/x.pt")
    assert ModelArgument.parse("pkg.mod:make-v2") == ModelArgument(checkpoint="pkg.mod:make-v2")
    Path("pkg.mod:make").write_text("")  # a file of that name: a checkpoint
    assert ModelArgument.parse("pkg.mod:make") == ModelArgument(checkpoint="pkg.mod:make")
    assert ModelArgument(model_factory="pkg.mod:make", weights="w/x.pt").name == "w/x.pt"
    assert ModelArgument(model_factory="pkg.mod:make").name == "make"
    assert ModelArgument(checkpoint="c.pt").name == "c.pt"


def test_model_info_lists_only_floating_point_parameter_dtypes() -> None:
    model = nn.Linear(2, 2)
    model.register_parameter("count", nn.Parameter(torch.tensor([3]), requires_grad=False))
    assert model_info(model, "x", "src")["parameter_dtypes"] == ["float32"]
    assert model_info(model.double(), "x", "src")["parameter_dtypes"] == ["float64"]


@pytest.mark.parametrize(("metadata", "seed"), [
    ({"data_split_seed": 5}, 5), ({"data_split_seed": True}, 0), ({"data_split_seed": "5"}, 0), (None, 0), ({}, 0),
])
def test_the_evaluation_split_uses_the_checkpoints_integer_split_seed(monkeypatch: pytest.MonkeyPatch, metadata,
                                                                      seed: int) -> None:
    calls = []
    monkeypatch.setattr(loading, "load_dataset", lambda name, split, root=None, seed=-1: calls.append(
        (name, split, root, seed)))
    cfg = SimpleNamespace(data_file=None, dataset="mnist", split="test", data_root="data")
    loading.load_eval_data(cfg, metadata)
    assert calls == [("mnist", "test", "data", seed)]


def test_a_checkpoint_trained_here_is_checked_for_unkept_invariants(tmp_path: Path, spec: ModelSpec,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    asked = []
    monkeypatch.setattr(loading, "unkept_invariants", lambda model, meta: asked.append(dict(meta)) or ["rezero"])
    save_checkpoint(tmp_path / "ours.pt", spec.build(), spec, {"training": {"epochs": 1}})
    save_checkpoint(tmp_path / "plain.pt", spec.build(), spec, {})
    with caplog.at_level(logging.WARNING, logger="kwta_robust.loading"):
        load_model(str(tmp_path / "plain.pt"), "cpu")  # no training recipe: not trained by this loop
        assert asked == [] and caplog.text == ""
        load_model(str(tmp_path / "ours.pt"), "cpu")
    assert len(asked) == 1 and asked[0]["training"] == {"epochs": 1}
    assert "before its training loop called rezero()" in caplog.text
