"""Mutation-round tests (part 2: Early-Bird, SNIP/GraSP, RigL, methods, training/pruning.py); see
:mod:`test_sparsity_mutants`.

Every expected value is written out by hand (or computed from the paper's formula with plain tensor algebra),
never copied from the code under test: Early-Bird mask distances, RigL drop/grow sets, SNIP ``|g ⊙ w|`` and GraSP
``w ⊙ Hg`` of a bias-free linear softmax model, the fine-tuning rate and segment configs of the loop trainer.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.sparsity import PruningConfig, train_pruned
from kwta_robust.sparsity.allocation import random_masks
from kwta_robust.sparsity.early_bird import EarlyBirdDetector
from kwta_robust.sparsity.foresight import grasp_scores, snip_scores
from kwta_robust.sparsity.magnitude import rewind
from kwta_robust.sparsity.masks import prunable_modules
from kwta_robust.sparsity.rigl import RigL, cosine_update_fraction
from kwta_robust.sparsity.segments import TrainSegment
from kwta_robust.training import pruning as training_pruning
from kwta_robust.training.config import TrainConfig
from kwta_robust.training.loop import TrainHistory, derive_seed
from kwta_robust.training.pruning import final_lr
from test_sparsity_helpers import ToyTrainer, context, small_cnn, toy_data
from test_sparsity_mutants import _erk_by_hand, _linear, _mask

T, F_ = True, False


# ---------------------------------------------------------------------------------------------------------------
# Early-Bird
# ---------------------------------------------------------------------------------------------------------------
def _set(layer: nn.Linear, values: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))


def test_early_bird_distances_and_strict_threshold() -> None:
    layer = _linear([1.0, 2.0, 3.0, 4.0])
    det = EarlyBirdDetector({"l": layer}, 0.5, scope="layerwise", window=2, threshold=0.5)
    epochs = [[1, 2, 3, 4], [4, 3, 2, 1], [4, 3, 2, 1], [4, 2, 3, 1], [4, 2, 3, 1], [4, 2, 3, 1], [4, 2, 3, 1],
              [1, 2, 3, 4]]
    found = []
    for epoch, w in enumerate(epochs):
        _set(layer, [float(v) for v in w])
        found.append(det.update(epoch))
    # masks: FFTT, TTFF, TTFF, TFTF, TFTF, TFTF, TFTF, FFTT -> distances 1, 0, 0.5, 0, 0, 0, 0.5
    assert det.distances == [(1, 1.0), (2, 0.0), (3, 0.5), (4, 0.0), (5, 0.0), (6, 0.0), (7, 0.5)]
    assert found == [F_, F_, F_, F_, F_, T, T, T]
    assert det.found_epoch == 5
    assert det.ticket["l"].tolist() == [[T, F_, T, F_]]


def test_early_bird_needs_a_full_window() -> None:
    det = EarlyBirdDetector({"l": _linear([1.0, 2.0])}, 0.5, window=2)
    assert [det.update(e) for e in range(3)] == [F_, F_, T]
    assert det.found_epoch == 2


def test_early_bird_ticket_is_the_current_mask() -> None:
    layer = _linear([float(v) for v in range(1, 11)])
    det = EarlyBirdDetector({"l": layer}, 0.5, scope="layerwise", window=1, threshold=0.5)
    det.update(0)
    _set(layer, [1.0, 2.0, 3.0, 4.0, 6.0, 5.0, 7.0, 8.0, 9.0, 10.0])
    assert det.update(1) and det.distances == [(1, 0.2)]
    assert det.ticket["l"].flatten().tolist() == [F_, F_, F_, F_, T, F_, T, T, T, T]


def test_early_bird_default_scope_is_global_and_checks() -> None:
    det = EarlyBirdDetector({"a": _linear([1.0, 2.0]), "b": _linear([10.0, 20.0])}, 0.5)
    mask = det.current_mask()
    assert mask["a"].tolist() == [[F_, F_]] and mask["b"].tolist() == [[T, T]]
    for kw in ({"threshold": 0.0}, {"threshold": 1.5}, {"window": 0}):
        with pytest.raises(ValueError, match="Early-Bird"):
            EarlyBirdDetector({"a": _linear([1.0])}, 0.5, **kw)  # type: ignore[arg-type]
    EarlyBirdDetector({"a": _linear([1.0])}, 0.5, threshold=1.0)


# ---------------------------------------------------------------------------------------------------------------
# SNIP / GraSP on a bias-free linear softmax model, gradients and Hessian written out by hand
# ---------------------------------------------------------------------------------------------------------------
W0 = [[0.5, -1.0, 0.25], [-0.75, 0.3, 1.2]]
BATCHES = [(torch.tensor([[1.0, 0.5, -1.0]]), torch.tensor([0])), (torch.tensor([[-0.5, 2.0, 0.3]]), torch.tensor([1]))]


def _linear_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W0))
    return model


def _hand_grad(w: Tensor, x: Tensor, y: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """dL/dW = (p - e_y) x^T / T for L = CE(W x / T, y), and p."""
    p = torch.softmax(w @ x / temperature, dim=0)
    return torch.outer(p - torch.eye(2)[y], x) / temperature, p


def test_snip_is_abs_of_summed_gradient_times_weight() -> None:
    model = _linear_model()
    w = torch.tensor(W0)
    g = sum(_hand_grad(w, x[0], int(y))[0] for x, y in BATCHES)
    got = snip_scores(model, {"0": model[0]}, BATCHES)["0"]
    assert torch.allclose(got, (g * w).abs(), atol=1e-6)
    assert (g * w).min() < 0  # the abs matters here


def test_grasp_is_weight_times_hessian_gradient_product() -> None:
    temperature = 2.0
    model = _linear_model()
    w = torch.tensor(W0)
    g = sum(_hand_grad(w, x[0], int(y), temperature)[0] for x, y in BATCHES)
    hg = torch.zeros_like(w)
    for x, y in BATCHES:
        p = _hand_grad(w, x[0], int(y), temperature)[1]
        jac = torch.diag(p) - torch.outer(p, p)  # d softmax / d logits
        hg += torch.outer(jac @ (g @ x[0]), x[0]) / temperature ** 2
    got = grasp_scores(model, {"0": model[0]}, BATCHES, temperature=temperature)["0"]
    assert torch.allclose(got, w * hg, atol=1e-7, rtol=1e-4)
    assert (w * hg).min() < 0 < (w * hg).max()
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            grasp_scores(model, {"0": model[0]}, BATCHES, temperature=bad)
    with pytest.raises(ValueError, match="mini-batch"):
        snip_scores(model, {"0": model[0]}, [])


def test_scoring_restores_mode_and_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = [(torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))]
    snip_scores(model, {"0": model[0], "2": model[2]}, batch)
    assert not model.training and not model[1].training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------------------------------------------------------
# RigL
# ---------------------------------------------------------------------------------------------------------------
def test_cosine_update_fraction_values() -> None:
    assert cosine_update_fraction(0, 100, 0.3) == pytest.approx(0.3)
    assert cosine_update_fraction(25, 100, 0.3) == pytest.approx(0.15 * (1 + math.sqrt(0.5)))
    assert cosine_update_fraction(50, 100, 0.3) == pytest.approx(0.15)
    assert cosine_update_fraction(100, 100, 0.3) == 0.0
    assert cosine_update_fraction(120, 100, 0.3) == 0.0


def test_rigl_schedule_and_defaults() -> None:
    layer = _linear([1.0] * 8)
    rigl = RigL({"l": layer}, 0.5, total_steps=1000, update_interval=75)
    assert rigl.end_step == 750 and rigl.distribution == "erk"
    assert [s for s in (0, 75, 675, 750, 825, 900) if rigl.is_update_step(s)] == [75, 675]
    with pytest.raises(ValueError, match="alpha"):
        RigL({"l": layer}, 0.5, total_steps=10, alpha=0.0)


def _rigl_layer(weights: list[float], active: list[bool]) -> tuple[RigL, nn.Linear]:
    layer = _linear(weights)
    rigl = RigL({"l": layer}, 0.5, total_steps=100, distribution="uniform")
    rigl.install({"l": _mask(active)})
    return rigl, layer


def test_rigl_drop_smallest_active_grow_largest_grad() -> None:
    rigl, layer = _rigl_layer([0.5, -0.1, 0.3, 0.2, 9.0, 9.0, 9.0, 9.0], [T, T, T, T, F_, F_, F_, F_])
    with torch.no_grad():
        layer.weight_orig.view(-1)[4:] = 7.0  # stale values under the mask: a grown connection must start at 0
    grad = torch.tensor([[0.0, 10.0, 0.0, 0.0, 0.0, -5.0, 1.0, 3.0]])
    # k = round(0.5 * 4) = 2: drop |w| = 0.1 (idx 1) and 0.2 (idx 3); grow the two largest |g| among the
    # inactive-after-drop {1, 3, 4, 5, 6, 7}: idx 1 (10, regrown, keeps its value) and idx 5 (|-5|)
    with torch.no_grad():
        moved = rigl._update_layer(layer, grad, 0.5)
    assert layer.weight_mask.flatten().tolist() == [1, 1, 1, 0, 0, 1, 0, 0]
    assert moved == 1
    assert layer.weight_orig.flatten().tolist() == pytest.approx([0.5, -0.1, 0.3, 0, 0, 0, 0, 0])


def test_rigl_count_rounds_and_is_capped_by_growable() -> None:
    weights = [float(v) for v in range(1, 11)]
    active = [T] * 5 + [F_] * 5
    rigl, layer = _rigl_layer(weights, active)
    grad = torch.tensor([[0.0] * 5 + [1.0, 2.0, 3.0, 4.0, 5.0]])
    # k = round(0.3 * 5 active) = 2 (of 10 weights): drop idx 0, 1, grow idx 9, 8
    with torch.no_grad():
        assert rigl._update_layer(layer, grad, 0.3) == 2
    assert layer.weight_mask.flatten().tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    rigl, layer = _rigl_layer(weights, active)
    grad = torch.tensor([[0.0] * 6 + [2.0] + [0.0] * 3])
    # only one inactive connection has a gradient: k = min(round(0.5 * 5), 1) = 1
    with torch.no_grad():
        assert rigl._update_layer(layer, grad, 0.5) == 1
    assert layer.weight_mask.flatten().tolist() == [0, 1, 1, 1, 1, 0, 1, 0, 0, 0]


def test_rigl_captures_gradients_only_in_training_forwards() -> None:
    model = nn.Sequential(_linear([1.0, 2.0, 3.0, 4.0]))
    rigl = RigL({"0": model[0]}, 0.5, total_steps=100)
    rigl.install()
    model.eval()
    model(torch.ones(1, 4)).sum().backward()
    with pytest.raises(RuntimeError, match="no dense gradient"):
        rigl.update(1)
    model.train()
    model(torch.ones(1, 4)).sum().backward()
    assert rigl.update(1).step == 1


# ---------------------------------------------------------------------------------------------------------------
# methods and pipeline (tiny CNN, ToyTrainer)
# ---------------------------------------------------------------------------------------------------------------
def test_rigl_method_uses_config_seed_and_full_step_count() -> None:
    x, y = toy_data(64)
    trainer = ToyTrainer(x, y, epochs=1)
    model = small_cnn()
    cfg = PruningConfig.from_dict({"method": "rigl", "sparsity": 0.5, "seed": 5, "rigl_end_fraction": 0.01})
    modules = prunable_modules(model)
    shapes = {n: m.weight.shape for n, m in modules.items()}
    expect = random_masks(shapes, _erk_by_hand({n: tuple(s) for n, s in shapes.items()}, 0.5),
                          torch.Generator().manual_seed(5))
    outcome = train_pruned(model, cfg, context(trainer, seed=0))
    assert outcome.details["total_steps"] == 2 and outcome.details["distribution"] == "erk"
    state = model.state_dict()
    assert not any(k.endswith("_mask") or k.endswith("_orig") for k in state)
    for name, keep in expect.items():
        assert torch.equal(state[f"{name}.weight"] != 0, keep), name


def test_early_bird_method_reports_distances_from_epoch_one() -> None:
    x, y = toy_data(64)
    cfg = PruningConfig.from_dict({"method": "early-bird", "sparsity": 0.5, "early_bird_window": 1,
                                   "early_bird_threshold": 1.0, "retrain_epochs": 0})
    outcome = train_pruned(small_cnn(), cfg, context(ToyTrainer(x, y, epochs=3)))
    assert outcome.details["early_bird_epoch"] == 1
    assert [d["epoch"] for d in outcome.details["mask_distances"]] == [1]


def test_grasp_method_passes_temperature() -> None:
    x, y = toy_data(64)
    cfg = PruningConfig.from_dict({"method": "grasp", "sparsity": 0.5, "grasp_temperature": 50.0,
                                   "score_batches": 1})
    outcome = train_pruned(small_cnn(), cfg, context(ToyTrainer(x, y, epochs=1)))
    assert outcome.details["temperature"] == 50.0


def test_train_pruned_checks_rewind_epoch_against_epochs() -> None:
    x, y = toy_data(32)
    cfg = PruningConfig.from_dict({"method": "magnitude", "sparsity": 0.5, "rewind_epoch": 1})
    with pytest.raises(ConfigError, match="rewind_epoch"):
        train_pruned(small_cnn(), cfg, context(ToyTrainer(x, y, epochs=1)))


# ---------------------------------------------------------------------------------------------------------------
# training/pruning.py: final rate, segment configs, scoring batches
# ---------------------------------------------------------------------------------------------------------------
def test_final_lr_is_last_step_rate_with_floor() -> None:
    # step schedule, milestone 0.995: the last of 100 steps sits at p = 0.99, before the milestone
    assert final_lr(TrainConfig(schedule="step", milestones=[0.995], gamma=0.5, lr=0.1, epochs=10), 10) == 0.1
    # cosine over 100 steps ends at 0.1 * 0.5 * (1 + cos(0.99 pi)) ~ 2.5e-5: floored at lr / 10
    assert final_lr(TrainConfig(schedule="cosine", lr=0.1, epochs=10), 10) == pytest.approx(0.01)
    assert final_lr(TrainConfig(schedule="cosine", lr=0.1, epochs=1), 1) == pytest.approx(0.1)


def _tensor_data(n: int) -> TensorData:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return TensorData(x, torch.arange(n) % 2, "toy", 2, torch.arange(n))


def test_loop_trainer_segment_stages_windows_and_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    def fake_train_model(model, train, cfg, device, **kw):  # type: ignore[no-untyped-def]
        calls.append({"epochs": cfg.epochs, "lr": cfg.lr, "schedule": cfg.schedule, **kw})
        return TrainHistory()

    monkeypatch.setattr(training_pruning, "train_model", fake_train_model)
    cfg = TrainConfig(schedule="cosine", lr=0.1, epochs=4, batch_size=4)
    trainer = training_pruning.LoopTrainer(_tensor_data(8), cfg, torch.device("cpu"))
    model = nn.Linear(2, 2)
    for segment in (TrainSegment("dense", 4), TrainSegment("retrain-1", 2, 4, "final"),
                    TrainSegment("retrain-2", 3, 1), TrainSegment("retrain-3", 1, 4, 0.005)):
        trainer(model, segment)
    assert [c["stage"] for c in calls] == [0, 101, 102, 103]
    assert [c["schedule_epochs"] for c in calls] == [(0, 4), None, (1, 4), None]
    assert [c["epochs"] for c in calls] == [4, 2, 3, 1]
    # last of 4 * 2 steps: 0.1 * 0.5 * (1 + cos(7/8 pi)) ~ 0.0038, floored at 0.01
    assert [c["lr"] for c in calls] == pytest.approx([0.1, 0.01, 0.1, 0.005])
    assert [c["schedule"] for c in calls] == ["cosine", "constant", "cosine", "constant"]


def test_score_batches_are_a_seeded_permutation() -> None:
    data = _tensor_data(10)
    cfg = TrainConfig(batch_size=4, seed=3)
    batches = training_pruning.score_batches(data, cfg, torch.device("cpu"), 2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(derive_seed(3, 99)))
    assert [len(y) for _, y in batches] == [4, 4]
    assert torch.equal(torch.cat([x for x, _ in batches]), data.x[perm[:8]])
    assert [len(y) for _, y in training_pruning.score_batches(data, cfg, torch.device("cpu"), 3)] == [4, 4, 2]


def test_rigl_install_is_idempotent_and_remove_forgets_gradients() -> None:
    model = nn.Sequential(_linear([1.0, 2.0, 3.0, 4.0]))
    rigl = RigL({"0": model[0]}, 0.5, total_steps=100)
    rigl.install()
    rigl.install()
    assert len(model[0]._forward_hooks) == 1
    model.train()
    model(torch.ones(1, 4)).sum().backward()
    rigl.remove()
    assert len(model[0]._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="no dense gradient"):
        rigl.update(1)


def test_rewind_needs_every_value() -> None:
    model = nn.Sequential(_linear([1.0, 2.0]))
    with pytest.raises(KeyError, match="no value for '0.weight'"):
        rewind(model, {})


def test_early_bird_rewinds_to_the_epoch_it_was_asked_for() -> None:
    x, y = toy_data(64)
    trainer = ToyTrainer(x, y, epochs=3)
    cfg = PruningConfig.from_dict({"method": "early-bird", "sparsity": 0.5, "early_bird_window": 1,
                                   "early_bird_threshold": 1.0, "retrain": "rewind-weights", "rewind_epoch": 1})
    outcome = train_pruned(small_cnn(), cfg, context(trainer))
    # found at epoch 1 (window 1, every distance < 1), rewound to epoch 1, retrained for 3 - 1 epochs from epoch 1
    assert outcome.details["early_bird_epoch"] == 1
    assert trainer.segments[-1] == TrainSegment("retrain-1", 2, 1, None)
