"""Weights of pruned models from other code bases: ``torch.nn.utils.prune``'s ``<name>_orig`` / ``<name>_mask``
pairs (saved before ``prune.remove``) load into a plain model, plain weights load into a model its factory prunes,
sparse-layout tensors are made dense — each computing the file's weights exactly, with the pruned zeros counted in
the record's ``weight_sparsity`` — and a ``torch.nn.utils.parametrize`` parametrization on one side only is one line
naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.cli import main
from kwta_robust.errors import CheckpointError
from kwta_robust.foreign_weights import normalize_state_dict
from kwta_robust.results import load_record

PRUNED_LAYERS = (0, 3)


def plain_net() -> nn.Module:
    """A small CNN for 1 × 8 × 8 inputs (scikit-learn's digits); seeded so every call has the same weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))


def pruned_net() -> nn.Module:
    """``plain_net`` with both weights pruned by ``torch.nn.utils.prune`` (60% of the conv's, 75% of the linear's)."""
    model = plain_net()
    prune.l1_unstructured(model[0], "weight", amount=0.6)
    prune.l1_unstructured(model[3], "weight", amount=0.75)
    return model


class HalfMask(nn.Module):
    """A parametrization zeroing every other entry: ``weight = original * mask``."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("mask", (torch.arange(torch.Size(shape).numel()) % 2).reshape(shape).float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def parametrized_net() -> nn.Module:
    model = plain_net()
    parametrize.register_parametrization(model[0], "weight", HalfMask(model[0].weight.shape))
    return model


def inputs() -> torch.Tensor:
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_a_pruned_file_is_folded_into_a_plain_model() -> None:
    source = pruned_net()
    out, notes = normalize_state_dict(source.state_dict(), plain_net(), "weights w.pt")
    assert notes == ["folded 2 pruned tensors (torch.nn.utils.prune's <name>_orig * <name>_mask) into <name>: "
                     "0.weight, 3.weight"]
    model = plain_net()
    model.load_state_dict(out, strict=True)
    x = inputs()
    assert torch.equal(model(x), source(x))  # the pruned network's own forward
    assert int((model[0].weight == 0).sum()) == round(0.6 * 36)  # prune.l1_unstructured rounds the count


def test_plain_weights_load_into_a_model_its_factory_prunes() -> None:
    source = pruned_net()
    for index in PRUNED_LAYERS:
        prune.remove(source[index], "weight")  # the released file: prune.remove, then state_dict()
    model = pruned_net()
    with torch.no_grad():  # another mask than the file's zeros: loading must replace it
        model[0].weight_mask.copy_(torch.ones_like(model[0].weight_mask))
    out, notes = normalize_state_dict(source.state_dict(), model, "weights w.pt")
    assert notes == ["the model is pruned (torch.nn.utils.prune) and the file is not: 2 <name>_orig from the file's "
                     "<name> and <name>_mask from its nonzero entries (the same weights): 0.weight, 3.weight"]
    model.load_state_dict(out, strict=True)
    x = inputs()
    assert torch.equal(model(x), source(x))
    assert torch.equal(model[0].weight_mask, (source[0].weight != 0).float())


def test_a_file_with_both_layouts_of_the_same_keys_is_left_to_the_strict_check() -> None:
    state = pruned_net().state_dict()
    state["0.weight"] = torch.zeros(4, 1, 3, 3)  # both 'weight' and its pruned pair: ambiguous, not folded
    out, notes = normalize_state_dict(state, pruned_net(), "weights w.pt")
    assert notes == [] and out.keys() == state.keys()


def test_sparse_layout_tensors_are_made_dense(tmp_path: Path) -> None:
    source = plain_net()
    state = source.state_dict()
    state["3.weight"] = state["3.weight"].to_sparse()
    state["0.weight"] = state["0.weight"].to_sparse()
    torch.save(state, tmp_path / "sparse.pt")
    with pytest.warns(UserWarning):  # torch validates sparse tensors it loads with weights_only=True
        loaded = load_byo_model("test_foreign_pruned_weights:plain_net", tmp_path / "sparse.pt")
    assert loaded.metadata["weights_normalization"] == ["made 2 sparse-layout tensors dense"]
    x = inputs()
    assert torch.equal(loaded.model(x), source(x))


@pytest.mark.parametrize("factory, file_model, whose", [
    ("plain_net", parametrized_net, "file's"),
    ("parametrized_net", plain_net, "model's"),
])
def test_a_parametrization_on_one_side_is_one_line_naming_it(tmp_path: Path, factory, file_model, whose) -> None:
    torch.save(file_model().state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as info:
        load_byo_model(f"test_foreign_pruned_weights:{factory}", tmp_path / "w.pt")
    message = str(info.value)
    assert "\n" not in message and f"the {whose} '0.weight' is parametrized (torch.nn.utils.parametrize" in message
    assert "remove_parametrizations" in message


def test_evaluate_counts_the_pruned_zeros_and_leaves_the_pruned_model_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    weights = tmp_path / "pruned.pt"
    torch.save(pruned_net().state_dict(), weights)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    }))
    records = {}
    for factory in ("plain_net", "pruned_net"):  # folded into a plain model / loaded into the pruned one
        out = tmp_path / f"{factory}.json"
        rc = main(["evaluate", "--model-factory", f"test_foreign_pruned_weights:{factory}", "--weights", str(weights),
                   "--config", str(config), "--out", str(out), "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        records[factory] = load_record(out)
    folded, kept = records["plain_net"], records["pruned_net"]
    assert folded.model["training"]["weights_normalization"][0].startswith("folded 2 pruned tensors")
    assert kept.model["training"]["weights_normalization"] == []
    expected = (round(0.6 * 36) + round(0.75 * 2560)) / (36 + 2560)
    for record in (folded, kept):
        assert record.model["weight_sparsity"]["overall"] == pytest.approx(expected, abs=1e-6)
    assert [r.flags for r in folded.results] == [r.flags for r in kept.results]


def test_the_runner_leaves_a_pruned_model_its_hooks_and_masks_as_they_were() -> None:
    from kwta_robust.config import EvalConfig
    from kwta_robust.data import load_dataset
    from kwta_robust.evaluate import evaluate

    model = pruned_net().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = {i: len(model[i]._forward_pre_hooks) for i in PRUNED_LAYERS}
    cfg = EvalConfig.from_dict({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu",
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
    })
    record = evaluate(model, load_dataset("digits", "test"), cfg, progress=False)
    assert record.results and len(record.results[0].flags) == 8
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert {i: len(model[i]._forward_pre_hooks) for i in PRUNED_LAYERS} == hooks
    assert all(prune.is_pruned(model[i]) for i in PRUNED_LAYERS) and not model.training
