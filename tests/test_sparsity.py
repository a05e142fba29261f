"""Pruning library: masks, exact targets, global vs layer-wise, iterative schedules, rewinding, SNIP/GraSP scores,
RigL updates, Early-Bird detection (checkpoints of pruned models and config errors: ``test_sparsity_config.py``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kwta_robust.errors import ConfigError
from kwta_robust.models import create_model, weight_sparsity
from kwta_robust.sparsity.allocation import layer_sparsities
from kwta_robust.sparsity import (
    EarlyBirdDetector,
    PruningConfig,
    RigL,
    TrainSegment,
    apply_masks,
    available_pruning_methods,
    current_masks,
    grasp_scores,
    iterative_targets,
    magnitude_scores,
    make_permanent,
    masks_from_scores,
    measure_sparsity,
    prunable_modules,
    prune_and_retrain,
    prune_by_scores,
    random_masks,
    snip_scores,
    train_pruned,
)
from kwta_robust.sparsity.rigl import cosine_update_fraction
from test_sparsity_helpers import ToyTrainer, context, small_cnn, toy_data, zeros_from_state

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------------------------
def test_prunable_modules_default_and_classifier_option():
    model = small_cnn()
    names = list(prunable_modules(model))
    assert names == ["features.0", "features.3", "classifier.1", "classifier.3"]
    assert list(prunable_modules(model, include_classifier=False)) == names[:-1]
    assert list(prunable_modules(model, layer_types=(nn.Conv2d,))) == names[:2]
    with pytest.raises(ValueError, match="no prunable layers"):
        prunable_modules(nn.Sequential(nn.ReLU()))


def test_masks_survive_training_and_make_permanent_leaves_plain_weights():
    model = small_cnn()
    x, y = toy_data(32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    modules = prunable_modules(model)
    shapes = {n: m.weight.shape for n, m in modules.items()}
    masks = random_masks(shapes, 0.7, torch.Generator().manual_seed(3))
    apply_masks(modules, masks)
    keys = set(model.state_dict())
    assert {f"{n}.weight_orig" for n in modules} <= keys and {f"{n}.weight_mask" for n in modules} <= keys
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    report = measure_sparsity(model)
    for name, mask in masks.items():
        n = mask.numel()
        assert report.layers[name].zeros == n - int(mask.sum()) == round(0.7 * n)
    params_before = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert make_permanent(model) == list(modules)
    state = model.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    assert {id(p) for p in model.parameters()} == params_before  # the optimiser still owns the weights
    for name, mask in masks.items():
        assert torch.equal(state[f"{name}.weight"] != 0, mask)
    assert weight_sparsity(model)["overall"] == pytest.approx(measure_sparsity(model).overall)


def test_masks_from_scores_layerwise_vs_global_by_hand():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0, 30.0, 40.0])}
    layerwise = masks_from_scores(scores, 0.5, "layerwise")
    assert layerwise["a"].tolist() == [False, False, True, True]
    assert layerwise["b"].tolist() == [False, False, True, True]
    glob = masks_from_scores(scores, 0.5, "global")
    assert glob["a"].tolist() == [False] * 4 and glob["b"].tolist() == [True] * 4
    # already-pruned entries stay pruned whatever their score; ties are broken by index, counts stay exact
    keep = {"a": torch.tensor([True, True, True, False]), "b": torch.ones(4, dtype=torch.bool)}
    again = masks_from_scores(scores, 0.25, "layerwise", keep=keep)
    assert again["a"].tolist() == [True, True, True, False]
    tied = masks_from_scores({"t": torch.ones(10)}, 0.3, "global")
    assert tied["t"].tolist() == [False] * 3 + [True] * 7


def test_global_and_layerwise_distributions_differ_as_expected():
    sparsity = 0.8
    model = small_cnn()
    modules = prunable_modules(model)
    scale = {n: float(m.weight.detach().abs().median()) for n, m in modules.items()}
    prune_by_scores(modules, magnitude_scores(modules), sparsity, "layerwise")
    layerwise = measure_sparsity(model)
    for name, module in modules.items():
        n = module.weight_mask.numel()
        assert layerwise.layers[name].zeros == round(sparsity * n)

    model = small_cnn()
    modules = prunable_modules(model)
    prune_by_scores(modules, magnitude_scores(modules), sparsity, "global")
    glob = measure_sparsity(model)
    total = sum(m.weight_mask.numel() for m in modules.values())
    assert glob.zeros == round(sparsity * total)  # exact overall count
    per_layer = {n: glob.layers[n].fraction for n in modules}
    # one threshold for all layers: the layer with the largest weights keeps the most, the smallest the least
    largest, smallest = max(scale, key=scale.get), min(scale, key=scale.get)
    assert per_layer[largest] == min(per_layer.values()) < sparsity - 0.05
    assert per_layer[smallest] == max(per_layer.values()) > sparsity + 0.01
    assert max(per_layer.values()) - min(per_layer.values()) > 0.1


# ------------------------------------------------------------------------------------------------------------------
# every method reaches its target
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["magnitude", "global-magnitude", "snip", "grasp", "rigl", "early-bird"])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9])
def test_each_method_reaches_target_sparsity_measured_from_tensors(method, target):
    assert method in available_pruning_methods()
    x, y = toy_data()
    model = small_cnn(seed=1)
    trainer = ToyTrainer(x, y, epochs=2)
    cfg = PruningConfig(method=method, sparsity=target, rigl_interval=1, score_batches=2, early_bird_window=2,
                        early_bird_threshold=0.5, retrain_epochs=1)
    outcome = train_pruned(model, cfg, context(trainer))
    layers = outcome.pruned_layers
    measured = zeros_from_state(model, layers)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert abs(measured - target) <= 0.01
    assert outcome.measured == pytest.approx(measured)
    assert outcome.metadata()["measured_sparsity"] == pytest.approx(measured)
    assert all(bool(torch.isfinite(p.detach()).all()) for p in model.parameters())
    if method == "magnitude":  # layer-wise: every layer on target
        for name in layers:
            assert abs(outcome.report.layers[name].fraction - target) <= 0.01 + 1 / outcome.report.layers[name].total


@pytest.mark.parametrize("method", ["grasp", "rigl"])
def test_pruning_a_kwta_cnn(method):
    x, y = toy_data()
    activation = {"name": "kwta", "ratio": 0.5, "mode": "volume"}
    model = small_cnn(seed=2, activation=activation)
    trainer = ToyTrainer(x, y, epochs=2)
    cfg = PruningConfig(method=method, sparsity=0.8, rigl_interval=1, score_batches=1)
    outcome = train_pruned(model, cfg, context(trainer))
    assert abs(zeros_from_state(model, outcome.pruned_layers) - 0.8) <= 0.01


def test_classifier_left_dense_when_asked():
    x, y = toy_data()
    model = small_cnn()
    cfg = PruningConfig(method="magnitude", sparsity=0.9, prune_classifier=False, retrain_epochs=0)
    outcome = train_pruned(model, cfg, context(ToyTrainer(x, y, epochs=1)))
    assert "classifier.3" not in outcome.pruned_layers
    assert outcome.report.layers["classifier.3"].zeros == 0
    assert outcome.measured == pytest.approx(0.9, abs=0.01)
    assert outcome.report.overall < outcome.measured


# ------------------------------------------------------------------------------------------------------------------
# iterative schedules and retraining
# ------------------------------------------------------------------------------------------------------------------
def test_iterative_targets_prune_a_constant_fraction_of_the_rest():
    targets = iterative_targets(0.8, 3)
    assert targets[-1] == 0.8 and len(targets) == 3
    remaining = [1.0] + [1 - t for t in targets]
    ratios = [remaining[i + 1] / remaining[i] for i in range(3)]
    assert ratios == pytest.approx([0.2 ** (1 / 3)] * 3)
    assert iterative_targets(0.5, 1) == [0.5]
    with pytest.raises(ValueError):
        iterative_targets(0.5, 0)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_iterative_pruning_reaches_each_round_target_exactly(scope):
    x, y = toy_data()
    model = small_cnn()
    modules = prunable_modules(model)
    sizes = {n: m.weight.numel() for n, m in modules.items()}
    trainer = ToyTrainer(x, y, epochs=1)
    records = prune_and_retrain(model, modules, trainer, sparsity=0.9, scope=scope, rounds=3, retrain="finetune",
                                train_epochs=1, retrain_epochs=1)
    targets = iterative_targets(0.9, 3)
    total = sum(sizes.values())
    for record, target in zip(records, targets):
        if scope == "layerwise":
            expected = sum(round(target * n) for n in sizes.values()) / total
        else:
            expected = round(target * total) / total
        assert record.measured == expected  # exact counts
        assert record.target == target
    # masks only shrink: the mask at the start of each retraining contains the next one
    masks = [{n: s[f"{n}.weight_mask"].bool() for n in sizes} for s in trainer.starts[1:]]
    for earlier, later in zip(masks, masks[1:]):
        assert all(bool((later[n] <= earlier[n]).all()) for n in sizes)
    assert [s.label for s in trainer.segments] == ["dense", "retrain-1", "retrain-2", "retrain-3"]


def _survivors_equal(state, reference, layers) -> None:
    for name in layers:
        mask = state[f"{name}.weight_mask"].bool()
        orig = state[f"{name}.weight_orig"]
        assert torch.equal(orig[mask], reference[f"{name}.weight"][mask])
        assert bool((orig[~mask] == 0).all())
        assert torch.equal(state[f"{name}.bias"], reference[f"{name}.bias"])


def test_weight_rewinding_to_init_restores_saved_weights_of_survivors():
    x, y = toy_data()
    model = small_cnn()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    modules = prunable_modules(model)
    trainer = ToyTrainer(x, y, epochs=2)
    prune_and_retrain(model, modules, trainer, sparsity=0.75, rounds=2, retrain="rewind-weights", train_epochs=2)
    for start in trainer.starts[1:]:  # the state each retraining started from
        _survivors_equal(start, init, list(modules))
    assert [(s.epochs, s.schedule_offset, s.constant_lr) for s in trainer.segments[1:]] == [(2, 0, None)] * 2
    assert trainer.lrs[1] == trainer.lrs[0]  # the whole schedule is replayed


def test_weight_rewinding_to_epoch_k_and_lr_rewinding():
    x, y = toy_data()
    model = small_cnn()
    reference = small_cnn()
    ToyTrainer(x, y, epochs=3)(reference, TrainSegment("dense", 1))  # the state after epoch 1 of the same run
    after_one = reference.state_dict()
    modules = prunable_modules(model)
    trainer = ToyTrainer(x, y, epochs=3)
    prune_and_retrain(model, modules, trainer, sparsity=0.5, retrain="rewind-weights", train_epochs=3,
                      rewind_epoch=1)
    _survivors_equal(trainer.starts[1], after_one, list(modules))
    assert trainer.segments[1].epochs == 2 and trainer.segments[1].schedule_offset == 1
    assert trainer.lrs[1] == [trainer.schedule_lr(1), trainer.schedule_lr(2)]

    # learning-rate rewinding keeps the trained weights and replays the schedule from epoch k
    model = small_cnn()
    modules = prunable_modules(model)
    trainer = ToyTrainer(x, y, epochs=3)
    prune_and_retrain(model, modules, trainer, sparsity=0.5, retrain="rewind-lr", train_epochs=3, rewind_epoch=1)
    trained = {k: v for k, v in trainer.starts[1].items()}
    for name in modules:
        mask = trained[f"{name}.weight_mask"].bool()
        assert not torch.equal(trained[f"{name}.weight_orig"][mask], after_one[f"{name}.weight"][mask])
    assert trainer.lrs[1] == [trainer.schedule_lr(1), trainer.schedule_lr(2)]

    # fine-tuning: constant final learning rate
    model = small_cnn()
    trainer = ToyTrainer(x, y, epochs=3)
    prune_and_retrain(model, prunable_modules(model), trainer, sparsity=0.5, retrain="finetune", train_epochs=3)
    assert trainer.lrs[1] == [trainer.schedule_lr(2)] * 3


# ------------------------------------------------------------------------------------------------------------------
# SNIP / GraSP
# ------------------------------------------------------------------------------------------------------------------
def test_snip_scores_are_connection_sensitivity_and_leave_model_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 3))
    model.eval()
    x, y = toy_data(16)
    modules = prunable_modules(model)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    scores = snip_scores(model, modules, [(x, y)])
    assert not model.training and all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())
    model.train()
    weights = [m.weight for m in modules.values()]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    for (name, module), g in zip(modules.items(), grads):
        assert torch.allclose(scores[name], (g * module.weight).abs())


def test_grasp_scores_match_explicit_hessian_gradient_product():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    modules = prunable_modules(model)
    temperature = 2.0
    scores = grasp_scores(model, modules, [(x, y)], temperature=temperature)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss_of(theta):
        params, start = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[start : start + math.prod(s)].view(s)
            start += math.prod(s)
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)) / temperature, y)

    # GraSP works on the prunable weights only: g and H restricted to the weight entries (biases held fixed)
    is_weight = torch.cat([torch.full((math.prod(s),), n.endswith("weight")) for n, s in zip(names, shapes)])
    theta = flat.clone().requires_grad_()
    g = torch.autograd.grad(loss_of(theta), theta)[0] * is_weight
    hg = (torch.autograd.functional.hessian(loss_of, flat) @ g) * is_weight
    start = 0
    for n, s in zip(names, shapes):
        size = math.prod(s)
        if n.endswith("weight"):
            layer = n.rsplit(".", 1)[0]
            expected = (flat[start : start + size] * hg[start : start + size]).view(s)
            assert torch.allclose(scores[layer], expected, atol=1e-7, rtol=1e-4)
        start += size


# ------------------------------------------------------------------------------------------------------------------
# RigL
# ------------------------------------------------------------------------------------------------------------------
def test_rigl_update_drops_smallest_and_grows_largest_gradient():
    layer = nn.Linear(6, 1, bias=False)
    rigl = RigL({"fc": layer}, sparsity=0.5, total_steps=100, update_interval=10, alpha=0.5, end_fraction=0.75,
                distribution="uniform")
    rigl.install({"fc": torch.tensor([[True, True, True, False, False, False]])})
    with torch.no_grad():
        layer.weight_orig.copy_(torch.tensor([[0.5, -0.1, 0.3, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[1.0, 1.0, 1.0, 4.0, -3.0, 0.5]])
    layer.train()
    layer(x).sum().backward()  # dense dL/dW = x
    fraction = cosine_update_fraction(10, 75, 0.5)
    k = round(fraction * 3)
    assert k == 1
    update = rigl.update(10)
    mask = layer.weight_mask.bool()[0].tolist()
    # drop the smallest |w| among active (index 1), grow the largest |grad| among inactive (index 3)
    assert mask == [True, False, True, True, False, False]
    assert layer.weight_orig[0, 3].item() == 0.0 and update.total_moved == 1
    assert update.fraction == pytest.approx(fraction)


def test_rigl_keeps_sparsity_constant_and_moves_connections():
    x, y = toy_data()
    model = small_cnn(seed=4)
    modules = prunable_modules(model)
    trainer = ToyTrainer(x, y, epochs=4)
    rigl = RigL(modules, 0.8, total_steps=4 * trainer.steps_per_epoch, update_interval=2, seed=1,
                distribution="uniform")
    initial = {n: m.clone() for n, m in rigl.install().items()}
    counts = {n: int(m.sum()) for n, m in initial.items()}
    seen = []

    def hook(m: nn.Module, step: int) -> None:
        before = {n: mm.clone() for n, mm in current_masks(modules).items()}
        rigl.after_step(m, step)
        if rigl.is_update_step(step):
            after = current_masks(modules)
            assert {n: int(mm.sum()) for n, mm in after.items()} == counts  # constant per layer
            for n, module in modules.items():
                fresh = after[n] & ~before[n]
                assert bool((module.weight_orig[fresh] == 0).all())  # grown weights start at zero
            seen.append(step)

    trainer(model, TrainSegment("rigl", 4), step_hook=hook)
    rigl.remove()
    assert seen == [2, 4, 6, 8] == [u.step for u in rigl.history]  # ΔT = 2, stop at 0.75 · 12 steps
    fractions = [u.fraction for u in rigl.history]
    assert fractions == sorted(fractions, reverse=True)
    assert sum(u.total_moved for u in rigl.history) > 0
    final = current_masks(modules)
    assert any(not torch.equal(final[n], initial[n]) for n in modules)
    measured = measure_sparsity(model)
    for name, module in modules.items():
        assert abs(measured.layers[name].fraction - 0.8) <= 0.01 + 1 / module.weight_mask.numel()


def test_erk_distribution_keeps_small_layers_denser_and_the_overall_target():
    model = create_model("cnn")  # the default small CNN: conv 1->16, conv 16->32, fc 1568->128, fc 128->10
    modules = prunable_modules(model)
    shapes = {n: m.weight.shape for n, m in modules.items()}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    per_layer = layer_sparsities(shapes, 0.8, "erk")
    assert sum(per_layer[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.8)
    assert per_layer["features.0"] == 0.0 and per_layer["classifier.3"] == 0.0  # ERK density would exceed 1
    density = {n: 1 - per_layer[n] for n in ("features.3", "classifier.1")}
    raw = {n: sum(shapes[n]) / sizes[n] for n in density}
    assert density["features.3"] / density["classifier.1"] == pytest.approx(raw["features.3"] / raw["classifier.1"])
    assert layer_sparsities(shapes, 0.8, "uniform") == {n: 0.8 for n in shapes}
    rigl = RigL(modules, 0.8, total_steps=10)
    masks = rigl.install()
    for name, mask in masks.items():
        assert int((~mask).sum()) == round(per_layer[name] * sizes[name])
    rigl.remove()


# ------------------------------------------------------------------------------------------------------------------
# Early-Bird
# ------------------------------------------------------------------------------------------------------------------
def test_early_bird_finds_the_first_epoch_with_a_quiet_window():
    layer = nn.Linear(10, 1, bias=False)
    detector = EarlyBirdDetector({"fc": layer}, sparsity=0.5, scope="layerwise", window=2, threshold=0.15)
    up = torch.arange(1.0, 11.0)
    swapped = up.flip(0).clone()
    swapped[[4, 5]] = swapped[[5, 4]]  # two borderline weights trade places: distance 2/10
    sequence = [up, up.flip(0), up.flip(0), swapped, swapped, swapped, up]
    found = []
    for epoch, weights in enumerate(sequence):
        with torch.no_grad():
            layer.weight.copy_(weights.view(1, -1))
        found.append(detector.update(epoch))
    assert [round(d, 6) for _, d in detector.distances] == [1.0, 0.0, 0.2, 0.0, 0.0, 0.8]
    assert detector.found_epoch == 5 and found == [False] * 5 + [True, True]
    assert detector.ticket["fc"][0].tolist() == (swapped >= 5.5).tolist()


def test_early_bird_method_stops_the_search_and_reports_the_epoch():
    x, y = toy_data()
    model = small_cnn()
    trainer = ToyTrainer(x, y, epochs=4)
    cfg = PruningConfig(method="early-bird", sparsity=0.5, early_bird_window=1, early_bird_threshold=1.0,
                        retrain="rewind-lr")
    outcome = train_pruned(model, cfg, context(trainer))
    assert outcome.details["early_bird_epoch"] == 1 == outcome.details["search_epochs"]
    assert len(trainer.lrs[0]) == 1  # the dense search stopped at the ticket
    assert trainer.segments[1].schedule_offset == 0 and trainer.segments[1].epochs == 4
    assert outcome.measured == pytest.approx(0.5, abs=0.01)


def test_an_early_bird_search_that_stops_before_the_rewind_epoch_is_a_config_error():
    x, y = toy_data()
    trainer = ToyTrainer(x, y, epochs=6)
    cfg = PruningConfig(method="early-bird", sparsity=0.5, early_bird_window=1, early_bird_threshold=1.0,
                        retrain="rewind-weights", rewind_epoch=4)
    with pytest.raises(ConfigError, match="pruning.rewind_epoch: the Early-Bird search stopped at epoch 1, before the "
                                          "rewind epoch 4; lower pruning.rewind_epoch"):
        train_pruned(small_cnn(), cfg, context(trainer))
