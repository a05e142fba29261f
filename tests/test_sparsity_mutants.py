"""Mutation-round tests of :mod:`kwta_robust.sparsity` and :mod:`kwta_robust.training.pruning`.

Every expected value is written out by hand (or computed from the paper's formula with plain tensor algebra),
never copied from the code under test: magnitude masks on tiny tensors, ERK densities, RigL drop/grow sets,
SNIP ``|g ⊙ w|`` and GraSP ``w ⊙ Hg`` of a bias-free linear softmax model, Early-Bird mask distances.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.sparsity import PruningConfig
from kwta_robust.sparsity.allocation import (
    check_sparsity,
    iterative_targets,
    layer_sparsities,
    masks_from_scores,
    prune_by_scores,
    prune_count,
    random_masks,
)
from kwta_robust.sparsity.magnitude import capture_state, magnitude_scores, prune_and_retrain, retrain_segment, rewind
from kwta_robust.sparsity.masks import (
    LayerSparsity,
    SparsityReport,
    apply_masks,
    current_masks,
    enforce_masks,
    layer_types_from_names,
    mask_distance,
    measure_sparsity,
    prunable_modules,
    set_mask,
)
from kwta_robust.sparsity.segments import TrainSegment

T, F_ = True, False


def _linear(values: list[float]) -> nn.Linear:
    """A bias-free ``Linear(len(values), 1)`` whose weight row is ``values``."""
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def _mask(values: list[bool]) -> Tensor:
    return torch.tensor([values])


# ---------------------------------------------------------------------------------------------------------------
# allocation
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), float("inf"), True, "0.5"])
def test_check_sparsity_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="sparsity"):
        check_sparsity(bad)  # type: ignore[arg-type]


def test_check_sparsity_accepts_bounds() -> None:
    assert check_sparsity(0) == 0.0 and isinstance(check_sparsity(0), float)
    assert check_sparsity(0.999) == 0.999


def test_prune_count_rounds_to_nearest() -> None:
    assert prune_count(10, 0.36) == 4  # 3.6 -> 4 (not truncated)
    assert prune_count(10, 0.31) == 3  # 3.1 -> 3 (not ceiled)
    assert prune_count(3, 0.99) == 3
    assert prune_count(0, 0.5) == 0


def test_layerwise_mask_is_bottom_k_by_hand() -> None:
    score = torch.tensor([[0.5, -2.0, 3.0], [1.0, 0.1, 4.0]])
    masks = masks_from_scores({"a": score}, 0.5)
    # 3 of 6 pruned: the lowest are -2.0, 0.1, 0.5
    assert masks["a"].tolist() == [[F_, F_, T], [T, F_, T]]
    # the complement of torch.topk's 3 largest
    top = torch.topk(score.flatten(), 3).indices
    expect = torch.zeros(6, dtype=torch.bool)
    expect[top] = True
    assert torch.equal(masks["a"].flatten(), expect)


def test_layerwise_count_uses_each_layer_size() -> None:
    masks = masks_from_scores({"a": torch.arange(6.0), "b": torch.arange(4.0)}, 0.5)
    assert masks["a"].tolist() == [F_, F_, F_, T, T, T]
    assert masks["b"].tolist() == [F_, F_, T, T]


def test_ties_pruned_lowest_index_first() -> None:
    masks = masks_from_scores({"a": torch.ones(4)}, 0.5)
    assert masks["a"].tolist() == [F_, F_, T, T]


def test_already_pruned_go_first_even_with_negative_scores() -> None:
    keep = {"a": torch.tensor([F_, T, T, T])}
    masks = masks_from_scores({"a": torch.tensor([5.0, -1.0, 2.0, 3.0])}, 0.25, keep=keep)
    assert masks["a"].tolist() == [F_, T, T, T]


def test_global_mask_by_hand() -> None:
    scores = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4]), "b": torch.tensor([[1.0, 2.0], [3.0, 0.05]])}
    masks = masks_from_scores(scores, 0.5, scope="global")
    # 4 of 8 pruned across both layers: 0.05, 0.1, 0.2, 0.3
    assert masks["a"].tolist() == [F_, F_, F_, T]
    assert masks["b"].tolist() == [[T, T], [T, F_]]


def test_masks_from_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="scope"):
        masks_from_scores({"a": torch.ones(4)}, 0.5, scope="per-channel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        masks_from_scores({"a": torch.tensor([1.0, float("nan")])}, 0.5)


def test_random_masks_exact_per_layer_counts_and_seeded_order() -> None:
    shapes = {"a": torch.Size([4, 5]), "b": torch.Size([10])}
    masks = random_masks(shapes, {"a": 0.5, "b": 0.3}, torch.Generator().manual_seed(3))
    assert int((~masks["a"]).sum()) == 10 and int((~masks["b"]).sum()) == 3
    gen = torch.Generator().manual_seed(3)
    pruned_a = set(torch.randperm(20, generator=gen)[:10].tolist())
    pruned_b = set(torch.randperm(10, generator=gen)[:3].tolist())
    assert set(torch.nonzero(~masks["a"].flatten()).flatten().tolist()) == pruned_a
    assert set(torch.nonzero(~masks["b"].flatten()).flatten().tolist()) == pruned_b


def test_iterative_targets_geometric() -> None:
    assert iterative_targets(0.75, 2) == pytest.approx([0.5, 0.75])
    assert iterative_targets(0.875, 3) == pytest.approx([0.5, 0.75, 0.875])
    assert iterative_targets(0.3, 1) == [0.3]
    with pytest.raises(ValueError, match="rounds"):
        iterative_targets(0.5, 0)


def test_prune_by_scores_keeps_earlier_pruning() -> None:
    layer = _linear([1.0, 2.0, 3.0, 4.0])
    set_mask(layer, _mask([T, T, T, F_]))
    masks = prune_by_scores({"l": layer}, {"l": torch.tensor([[10.0, 1.0, 2.0, 20.0]])}, 0.5)
    assert masks["l"].tolist() == [[T, F_, T, F_]]
    assert layer.weight_mask.tolist() == [[1.0, 0.0, 1.0, 0.0]]


def _erk_by_hand(shapes: dict[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    """Evci et al. 2020, ERK: density_l = eps * sum(shape_l) / prod(shape_l), dense layers fixed at 1."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    dense: set[str] = set()
    for _ in shapes:
        budget = (1 - sparsity) * sum(sizes.values()) - sum(sizes[n] for n in dense)
        eps = budget / sum(sum(shapes[n]) for n in shapes if n not in dense)
        newly = {n for n in shapes if n not in dense and eps * sum(shapes[n]) / sizes[n] > 1}
        if not newly:
            break
        dense |= newly
    return {n: 0.0 if n in dense else 1 - eps * sum(s) / sizes[n] for n, s in shapes.items()}


def test_erk_matches_formula_without_dense_layers() -> None:
    shapes = {"conv": (8, 4, 3, 3), "fc": (10, 32)}
    got = layer_sparsities({n: torch.Size(s) for n, s in shapes.items()}, 0.9, "erk")
    # eps = 0.1 * 608 / (18 + 42); density = eps * 18 / 288 and eps * 42 / 320
    eps = 60.8 / 60.0
    assert got["conv"] == pytest.approx(1 - eps * 18 / 288)
    assert got["fc"] == pytest.approx(1 - eps * 42 / 320)
    assert got == pytest.approx(_erk_by_hand(shapes, 0.9))
    kept = sum((1 - got[n]) * math.prod(s) for n, s in shapes.items())
    assert kept == pytest.approx(0.1 * 608)


def test_erk_keeps_small_layer_dense_and_rescales_the_rest() -> None:
    shapes = {"first": (4, 1, 3, 3), "big": (64, 64, 3, 3)}
    got = layer_sparsities({n: torch.Size(s) for n, s in shapes.items()}, 0.5, "erk")
    assert got["first"] == 0.0
    # the 36 dense weights come out of the budget 0.5 * 36900: the big layer keeps 18414 of 36864
    assert got["big"] == pytest.approx(1 - 18414 / 36864)
    assert got == pytest.approx(_erk_by_hand(shapes, 0.5))


def test_uniform_and_unknown_distribution() -> None:
    shapes = {"a": torch.Size([3, 3]), "b": torch.Size([7])}
    assert layer_sparsities(shapes, 0.4) == {"a": 0.4, "b": 0.4}
    with pytest.raises(ValueError, match="distribution"):
        layer_sparsities(shapes, 0.4, "erdos")


# ---------------------------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------------------------
def test_prunable_modules_drops_the_last_layer_as_classifier() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2))
    assert list(prunable_modules(model)) == ["0", "2", "3"]
    assert list(prunable_modules(model, include_classifier=False)) == ["0", "2"]
    assert list(prunable_modules(model, (nn.Linear,), include_classifier=False)) == ["2"]


def test_layer_types_from_names_normalises_and_dedups() -> None:
    assert layer_types_from_names([" Conv2D", "linear", "conv2d"]) == (nn.Conv2d, nn.Linear)
    with pytest.raises(KeyError):
        layer_types_from_names(["lstm"])


def test_current_masks_of_unmasked_layer_are_nonzeros() -> None:
    assert current_masks({"l": _linear([0.0, 2.0, 0.0, -1.0])})["l"].tolist() == [[F_, T, F_, T]]


def test_set_mask_zeroes_trainable_and_checks_shape() -> None:
    layer = _linear([1.0, 2.0, 3.0])
    set_mask(layer, _mask([T, F_, T]))
    assert layer.weight_orig.tolist() == [[1.0, 0.0, 3.0]]
    with pytest.raises(ValueError, match="shape"):
        set_mask(layer, torch.ones(3, dtype=torch.bool))
    with pytest.raises(KeyError, match="unknown layers: nope"):
        apply_masks({"l": layer}, {"nope": _mask([T, T, T])})


def test_enforce_masks_rezeroes_after_a_step() -> None:
    layer = _linear([1.0, 2.0, 3.0])
    set_mask(layer, _mask([T, F_, T]))
    with torch.no_grad():
        layer.weight_orig.add_(0.5)
    enforce_masks({"l": layer})
    assert layer.weight_orig.tolist() == [[1.5, 0.0, 3.5]]


def test_stale_values_under_a_mask_do_not_count() -> None:
    layer = _linear([1.0, 2.0, 3.0, 4.0])
    set_mask(layer, _mask([T, F_, T, F_]))
    with torch.no_grad():
        layer.weight_orig.add_(1.0)  # a momentum step before enforce_masks
    assert measure_sparsity(nn.Sequential(layer)).layers["0"].zeros == 2
    assert magnitude_scores({"l": layer})["l"].tolist() == [[2.0, 0.0, 4.0, 0.0]]


def test_sparsity_report_arithmetic() -> None:
    assert LayerSparsity(0, 0).fraction == 0.0
    assert LayerSparsity(3, 4).fraction == 0.75
    report = SparsityReport({"a": LayerSparsity(1, 4), "b": LayerSparsity(3, 4)})
    assert report.overall == 0.5
    assert report.overall_of(["a"]) == 0.25
    assert report.to_dict()["layers"]["b"] == {"sparsity": 0.75, "zeros": 3, "total": 4}


def test_measure_sparsity_counts_exact_zeros_of_every_conv_kind() -> None:
    model = nn.Sequential(nn.Conv1d(1, 1, 4, bias=False), nn.Flatten(), _linear([1e-4, 0.0, 0.0, 2.0]))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[0.0, 1.0, 0.0, 1.0]]]))
    report = measure_sparsity(model)
    assert set(report.layers) == {"0", "2"}
    assert report.layers["2"].zeros == 2 and report.layers["0"].zeros == 2
    set_mask(model[2], _mask([F_, T, T, T]))
    assert measure_sparsity(model).layers["2"].zeros == 3


def test_mask_distance_is_symmetric_hamming() -> None:
    a = {"x": torch.tensor([T, T, F_, F_])}
    b = {"x": torch.tensor([F_, T, T, F_])}
    assert mask_distance(a, b) == 0.5
    assert mask_distance(b, a) == 0.5
    with pytest.raises(ValueError, match="different layers"):
        mask_distance(a, {"y": b["x"]})


# ---------------------------------------------------------------------------------------------------------------
# magnitude pruning and rewinding
# ---------------------------------------------------------------------------------------------------------------
def test_magnitude_scores_are_absolute_effective_weights() -> None:
    layer = _linear([-3.0, 1.0, -0.5])
    assert magnitude_scores({"l": layer})["l"].tolist() == [[3.0, 1.0, 0.5]]
    set_mask(layer, _mask([T, T, F_]))
    assert magnitude_scores({"l": layer})["l"].tolist() == [[3.0, 1.0, 0.0]]


def test_capture_state_uses_canonical_names_and_rewind_keeps_masks() -> None:
    model = nn.Sequential(_linear([1.0, 2.0, 3.0]))
    set_mask(model[0], _mask([T, F_, T]))
    state = capture_state(model)
    assert set(state) == {"0.weight"}
    with torch.no_grad():
        model[0].weight_orig.copy_(torch.tensor([[7.0, 7.0, 7.0]]))
    rewind(model, {"0.weight": torch.tensor([[4.0, 5.0, 6.0]])})
    assert model[0].weight_orig.tolist() == [[4.0, 0.0, 6.0]]


def test_retrain_segments_per_mode() -> None:
    assert retrain_segment("finetune", 2, 10, 3, None, None) == TrainSegment("retrain-2", 7, 10, "final")
    assert retrain_segment("finetune", 1, 10, 3, 4, 0.01) == TrainSegment("retrain-1", 4, 10, 0.01)
    assert retrain_segment("rewind-weights", 1, 10, 3, None, None) == TrainSegment("retrain-1", 7, 3, None)
    assert retrain_segment("rewind-lr", 1, 10, 0, 5, 0.01) == TrainSegment("retrain-1", 10, 0, None)
    with pytest.raises(ValueError, match="retrain mode"):
        retrain_segment("regrow", 1, 10, 0, None, None)  # type: ignore[arg-type]


class CountingTrainer:
    """Each epoch adds 1 to every trainable parameter (masked entries included, as momentum would)."""

    def __init__(self) -> None:
        self.segments: list[TrainSegment] = []
        self.starts: list[Tensor] = []

    def __call__(self, model: nn.Module, segment: TrainSegment, *, epoch_callback=None, step_hook=None) -> None:
        self.segments.append(segment)
        layer = model[0]
        self.starts.append(getattr(layer, "weight_orig", layer.weight).detach().clone())
        for epoch in range(segment.epochs):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            if epoch_callback is not None and epoch_callback(model, epoch + 1):
                break


@pytest.mark.parametrize("k", [0, 2])
def test_weight_rewinding_restores_epoch_k(k: int) -> None:
    model = nn.Sequential(_linear([1.0, 2.0, 3.0, 4.0]))
    trainer = CountingTrainer()
    records = prune_and_retrain(model, {"0": model[0]}, trainer, sparsity=0.5, retrain="rewind-weights",
                                train_epochs=4, rewind_epoch=k)
    # dense: 4 epochs -> [5, 6, 7, 8]; prune the two smallest; rewind the survivors to init + k
    assert trainer.starts[1].tolist() == [[0.0, 0.0, 3.0 + k, 4.0 + k]]
    assert trainer.segments[1] == TrainSegment("retrain-1", 4 - k, k, None)
    assert model[0].weight_orig.tolist() == [[0.0, 0.0, 3.0 + 4, 4.0 + 4]]
    assert [(r.target, r.measured) for r in records] == [(0.5, 0.5)]


def test_iterative_finetune_records_and_no_zero_epoch_segments() -> None:
    model = nn.Sequential(_linear([1.0, 2.0, 3.0, 4.0]))
    trainer = CountingTrainer()
    records = prune_and_retrain(model, {"0": model[0]}, trainer, sparsity=0.75, rounds=2, train_epochs=2,
                                retrain_epochs=0)
    assert [s.label for s in trainer.segments] == ["dense"]
    assert [(r.round, r.target, r.measured) for r in records] == [(1, 0.5, 0.5), (2, 0.75, 0.75)]
    with pytest.raises(ValueError, match="rewind epoch"):
        prune_and_retrain(model, {"0": model[0]}, trainer, sparsity=0.5, train_epochs=2, rewind_epoch=2)


def test_finetune_leaves_masked_entries_zero() -> None:
    model = nn.Sequential(_linear([1.0, 2.0, 3.0, 4.0]))
    prune_and_retrain(model, {"0": model[0]}, CountingTrainer(), sparsity=0.5, train_epochs=2, retrain_epochs=1)
    assert model[0].weight_orig.tolist() == [[0.0, 0.0, 6.0, 7.0]]


# ---------------------------------------------------------------------------------------------------------------
# config checks
# ---------------------------------------------------------------------------------------------------------------
def _cfg(**kw: object) -> PruningConfig:
    return PruningConfig.from_dict({"method": "magnitude", "sparsity": 0.5, **kw})


@pytest.mark.parametrize("kw", [
    {"sparsity": float("nan")}, {"sparsity": 1.0}, {"rounds": 0}, {"schedule": "one-shot", "rounds": 2},
    {"schedule": "iterative", "rounds": 1}, {"method": "rigl", "rounds": 2}, {"method": "snip", "rounds": 2},
    {"rewind_epoch": -1}, {"retrain_epochs": -1}, {"finetune_lr": 0.0}, {"rigl_alpha": 0.0},
    {"rigl_end_fraction": 1.5}, {"rigl_interval": 0}, {"score_batches": 0}, {"grasp_temperature": 0.0},
    {"early_bird_window": 0}, {"early_bird_threshold": 0.0}, {"method": "rigl", "scope": "global"},
    {"layer_types": []}, {"layer_types": ["lstm"]}, {"rigl_distribution": "erdos"},
])
def test_config_rejects(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        _cfg(**kw)


def test_config_accepts_bounds_and_derives() -> None:
    cfg = _cfg(retrain_epochs=0, rigl_alpha=1.0, rigl_end_fraction=1.0, early_bird_threshold=1.0,
               schedule="iterative", rounds=2, scope="global")
    assert cfg.effective_scope == "global"
    assert _cfg().effective_scope == "layerwise"
    assert _cfg(method="early-bird").effective_scope == "global"
    assert cfg.to_dict()["layer_types"] == ["conv2d", "linear"]
    assert PruningConfig.from_dict(cfg.to_dict()) == cfg
    _cfg(rewind_epoch=2).check_epochs(3)
    with pytest.raises(ConfigError, match="rewind_epoch"):
        _cfg(rewind_epoch=3).check_epochs(3)


def test_a_grasp_temperature_out_of_range_says_what_it_must_be() -> None:
    """Before, the message offered ``(0, inf]`` although an infinite temperature is refused as not finite."""
    with pytest.raises(ConfigError) as info:
        _cfg(method="grasp", grasp_temperature=-2.0)
    assert str(info.value) == "pruning.grasp_temperature: must be a finite number > 0, got -2.0"
