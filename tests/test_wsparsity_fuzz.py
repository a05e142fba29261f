"""Weight sparsity in records and matrices, fuzzed: a damaged ``torch.nn.utils.prune`` mask (another shape, values
other than 0 and 1, a file that also holds the plain weight) is one line naming the key (it was broadcast or scaled
into the weights silently); a record's per-layer weight sparsity that is no fraction is one line naming the field;
a record placed by its training's pruning with a target outside [0, 1) or no method name is one line (it was a
column of its own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

from kwta_robust.cli import main
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.foreign_weights import normalize_state_dict
from kwta_robust.matrix import DENSE, cell_coordinates
from kwta_robust.models.describe import weight_sparsity
from kwta_robust.results import save_record
from test_foreign_pruned_weights import inputs, plain_net, pruned_net
from test_matrix import cell_record


def pruned_state() -> dict[str, torch.Tensor]:
    return dict(pruned_net().state_dict())


@pytest.mark.parametrize("mask, match", [
    (torch.zeros(1), r"pruning mask '0.weight_mask' has shape \(1,\), not its weight's \(4, 1, 3, 3\)"),
    (torch.ones(4, 1, 1, 1), r"pruning mask '0.weight_mask' has shape \(4, 1, 1, 1\), not its weight's"),
    (torch.full((4, 1, 3, 3), 0.5), r"pruning mask '0.weight_mask' holds 0.5, not only 0 and 1"),
    (torch.full((4, 1, 3, 3), float("nan")), r"pruning mask '0.weight_mask' holds nan, not only 0 and 1"),
    (torch.ones(4, 1, 3, 3, dtype=torch.complex64), r"holds dtype complex64, not only 0 and 1"),
])
def test_a_damaged_pruning_mask_is_one_line_naming_it(mask: torch.Tensor, match: str) -> None:
    state = pruned_state()
    state["0.weight_mask"] = mask
    with pytest.raises(CheckpointError, match=match) as info:
        normalize_state_dict(state, plain_net(), "weights w.pt")
    assert "\n" not in str(info.value) and str(info.value).startswith("weights w.pt: ")


def test_a_file_with_the_plain_weight_beside_the_pruned_pair_is_refused() -> None:
    state = pruned_state()
    state["0.weight"] = torch.zeros(4, 1, 3, 3)
    with pytest.raises(CheckpointError, match="holds both '0.weight' and the pruned pair '0.weight_orig' / "
                                              "'0.weight_mask'"):
        normalize_state_dict(state, plain_net(), "weights w.pt")


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float32])
def test_a_0_1_mask_of_any_dtype_folds_to_the_pruned_weights(dtype: torch.dtype) -> None:
    pruned = pruned_net().eval()
    state = {k: (v.to(dtype) if k.endswith("_mask") else v) for k, v in pruned.state_dict().items()}
    folded, _ = normalize_state_dict(state, plain_net(), "weights w.pt")
    model = plain_net().eval()
    model.load_state_dict(folded)
    assert torch.equal(model(inputs()), pruned(inputs()))
    ws = weight_sparsity(model)
    assert ws["layers"] == {"0": 22 / 36, "3": 1920 / 2560}  # round(0.6 * 36) and 0.75 * 2560 pruned
    assert ws["overall"] == (22 + 1920) / (36 + 2560)


def test_prune_remove_l1_and_global_are_counted_over_conv_and_linear_weights_only() -> None:
    model = plain_net()
    prune.global_unstructured([(model[0], "weight"), (model[3], "weight")], prune.L1Unstructured, amount=0.5)
    prune.l1_unstructured(model[0], "bias", amount=0.5)  # biases are not counted
    prune.remove(model[3], "weight")
    model[3].weight.data[0, :3] = torch.tensor([-0.0, 1e-45, 0.0])  # -0.0 is a zero, a subnormal is not
    zeros = int((model[0].weight == 0).sum()) + int((model[3].weight == 0).sum())
    assert weight_sparsity(model)["overall"] == zeros / (36 + 2560) and zeros >= 1298


def record_file(tmp_path: Path, name: str, edit) -> Path:
    rec = cell_record(0.1, 0.8, "magnitude", {0.1: 8}, sweep=False)
    edit(rec.model)
    path = tmp_path / f"{name}.json"
    save_record(rec, path)
    return path


@pytest.mark.parametrize("layer", [5, -1, True, "x", None])
def test_a_per_layer_weight_sparsity_that_is_no_fraction_is_one_line(tmp_path: Path, capsys, layer) -> None:
    path = record_file(tmp_path, "r", lambda m: m.update(weight_sparsity={"overall": 0.8, "layers": {"0": layer}}))
    assert json.loads(path.read_text())["model"]["weight_sparsity"]["layers"]["0"] == layer
    assert main(["table", "--matrix", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.weight_sparsity must be a number in [0, 1] or an object" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target", [2, -0.5, 1.0])
def test_a_training_target_outside_the_grid_is_no_column(tmp_path: Path, capsys, target) -> None:
    path = record_file(tmp_path, "r", lambda m: m["training"]["pruning"].update(target_sparsity=target))
    assert main(["table", "--matrix", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"model.training.pruning.target_sparsity {target!r} is not a fraction in [0, 1)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("method", [None, 3, ["magnitude"], ""])
def test_a_training_pruning_without_a_method_name_is_no_column(method) -> None:
    rec = cell_record(0.1, 0.8, "magnitude", {0.1: 8}, sweep=False)
    rec.model["training"]["pruning"]["method"] = method
    with pytest.raises(ConfigError, match=r"model.training.pruning.method is .*, not a pruning method's name"):
        cell_coordinates(rec)


def test_a_valid_training_pruning_keeps_its_column() -> None:
    coords = cell_coordinates(cell_record(0.1, 0.5, "magnitude", {0.1: 8}, sweep=False))
    assert (coords.kwta_ratio, coords.weight_sparsity, coords.pruning_method) == (0.1, 0.5, "magnitude")
    dense = cell_coordinates(cell_record(0.1, 0.0, DENSE, {0.1: 8}, sweep=False))
    assert (dense.weight_sparsity, dense.pruning_method) == (0.0, DENSE)
