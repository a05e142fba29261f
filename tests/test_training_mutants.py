"""Mutation-round tests for the training package (loop, adversarial steps, recipes, config, run): every expected
value is computed by hand from the papers' definitions (one SGD step of a 2x2 linear softmax model, the learning
rate of each epoch under the cosine and step schedules, a hand-run PGD on a linear model, the config errors spelled
in full), not read back from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import kwta_robust.training.adversarial as adversarial
import kwta_robust.training.run as run
from attacks.base import ThreatModel
from kwta_robust.data import TensorData, load_dataset
from kwta_robust.errors import ConfigError, KwtaRobustError
from kwta_robust.model_checks import build_model
from kwta_robust.training import TrainConfig
from kwta_robust.training.loop import (TrainHistory, derive_seed, evaluate_accuracy, steps_per_epoch, train_model,
                                       unkept_invariants)
from kwta_robust.training.recipes import AUGMENTATIONS, OPTIMIZERS, SCHEDULES

PLAIN = {"device": "cpu", "augment": "none", "schedule": "constant", "optimizer": "sgd", "momentum": 0.0,
         "lr": 0.1, "epochs": 1, "threads": 1}


def _cfg(**over: object) -> TrainConfig:
    return TrainConfig.from_dict({**PLAIN, **over})


def _data(rows: list[list[float]], labels: list[int]) -> TensorData:
    x = torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1, 2)
    return TensorData(x, torch.tensor(labels), "tiny", 2, torch.arange(len(rows)))


def _linear(weight: list[list[float]]) -> nn.Sequential:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(weight))
        model[1].bias.zero_()
    return model


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# --- the loop: SGD steps, statistics, gradients, modes ------------------------------------------------------------

def test_two_sgd_epochs_on_a_linear_model_by_hand() -> None:
    """W = 0, x1 = (1, 0) of class 0, x2 = (0, 1) of class 1, one full batch, lr 0.1: the CE gradient is
    (p - e_y) x^T / 2 = ±0.25, so W becomes a·[[1, -1], [-1, 1]] with a = 0.025; the next step adds 0.1·q/2,
    q = 1 - sigmoid(2a) (a gradient kept from step 1, no zero_grad, would add 0.1·0.25 more)."""
    model = _linear([[0.0, 0.0], [0.0, 0.0]])
    hist = train_model(model, _data([[1, 0], [0, 1]], [0, 1]), _cfg(epochs=2, batch_size=2), "cpu")
    a = 0.025
    q = 1.0 - _sigmoid(2 * a)
    w = a + 0.1 * q / 2
    assert torch.allclose(model[1].weight, torch.tensor([[w, -w], [-w, w]]), atol=1e-7)
    assert torch.allclose(model[1].bias, torch.zeros(2), atol=1e-7)
    e1, e2 = hist.epochs
    assert (e1.epoch, e2.epoch) == (1, 2)
    assert e1.loss == pytest.approx(math.log(2), abs=1e-6)  # mean of two losses of ln 2 (not their half)
    assert e2.loss == pytest.approx(math.log(1 + math.exp(-2 * a)), abs=1e-6)
    assert (e1.train_accuracy, e2.train_accuracy) == (0.5, 1.0)  # argmax of equal logits is class 0
    assert (e1.lr, e2.lr) == (0.1, 0.1)


def test_accuracy_counts_the_samples_trained_on_not_the_dropped_one() -> None:
    """3 identical samples, batch 2: one step of 2 samples (the final batch of one is dropped), both right."""
    model = _linear([[1.0, 0.0], [0.0, 0.0]])
    hist = train_model(model, _data([[1, 0]] * 3, [0, 0, 0]), _cfg(batch_size=2), "cpu")
    assert hist.epochs[0].train_accuracy == 1.0
    steps: list[int] = []
    train_model(_linear([[0.0, 0.0], [0.0, 0.0]]), _data([[1, 0]] * 5, [0] * 5), _cfg(epochs=2, batch_size=2),
                "cpu", after_step=lambda m, s: steps.append(s))
    assert steps == [1, 2, 3, 4]  # 5 = 2 + 2 + 1 dropped, global count from 1


def test_steps_per_epoch_values() -> None:
    assert [steps_per_epoch(n, 2) for n in (1, 2, 3, 4, 5)] == [1, 1, 1, 2, 2]
    assert [steps_per_epoch(n, 4) for n in (6, 7, 8, 9)] == [2, 2, 2, 2]


def test_the_model_trains_in_train_mode_and_is_left_in_its_mode() -> None:
    model = _linear([[0.0, 0.0], [0.0, 0.0]]).eval()
    model[1].train()  # a mixed start: every flag comes back as it was
    seen: list[bool] = []
    train_model(model, _data([[1, 0], [0, 1]], [0, 1]), _cfg(epochs=2, batch_size=2), "cpu",
                after_step=lambda m, s: seen.append(all(x.training for x in m.modules())))
    assert seen == [True, True]
    assert model.training is False and model[0].training is False and model[1].training is True


class _Invariants(nn.Module):
    """Counts the invariant calls of the loop (nupic's rezero_weights / update_boost_strength)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.rezeroed = 0
        self.boosted = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x.flatten(1))

    def rezero_weights(self) -> None:
        self.rezeroed += 1
        with torch.no_grad():
            self.lin.weight[0, 1] = 0.0

    def update_boost_strength(self) -> None:
        self.boosted += 1


def test_invariants_kept_per_step_and_per_epoch_and_a_callback_stops() -> None:
    model = _Invariants()
    zero_at_hook: list[float] = []
    hist = train_model(model, _data([[1, 1]] * 4, [1] * 4), _cfg(epochs=3, batch_size=2), "cpu",
                       after_step=lambda m, s: zero_at_hook.append(float(m.lin.weight[0, 1].detach())))
    assert (model.rezeroed, model.boosted, len(hist.epochs)) == (6, 3, 3)
    assert zero_at_hook == [0.0] * 6
    model = _Invariants()
    hist = train_model(model, _data([[1, 1]] * 4, [1] * 4), _cfg(epochs=3, batch_size=2), "cpu",
                       epoch_callback=lambda e, st, m: e == 2)
    assert [e.epoch for e in hist.epochs] == [1, 2] and model.boosted == 2


def test_unkept_invariants() -> None:
    model = _Invariants()
    assert unkept_invariants(model, {}) == ["rezero_weights", "update_boost_strength"]
    assert unkept_invariants(model, {"training_invariants": ["rezero_weights"]}) == ["update_boost_strength"]
    assert unkept_invariants(model, {"training_invariants": ["rezero_weights", "update_boost_strength"]}) == []


class _ModeLogits(nn.Module):
    """Class 0 in train mode, class 1 in eval mode."""

    def forward(self, x: Tensor) -> Tensor:
        out = torch.zeros(x.shape[0], 2)
        out[:, 0 if self.training else 1] = 1.0
        return out


def test_evaluate_accuracy_in_eval_mode_over_every_sample() -> None:
    model = _ModeLogits().train()
    data = _data([[0, 0]] * 3, [0, 1, 1])
    assert evaluate_accuracy(model, data, batch_size=1, device="cpu") == pytest.approx(2 / 3)
    assert model.training is True
    assert evaluate_accuracy(model, _data([[0, 0]] * 3, [0, 0, 1]), batch_size=2, device="cpu") == pytest.approx(1 / 3)


# --- seeds --------------------------------------------------------------------------------------------------------

def test_derive_seed_is_the_seed_sequence_state_shifted_to_63_bits() -> None:
    state = int(np.random.SeedSequence([7, 1, 0]).generate_state(1, dtype=np.uint64)[0])
    assert derive_seed(7, 1, 0) == state // 2
    assert 0 <= derive_seed(7, 1, 0) < 2 ** 63


class _Recorder(nn.Module):
    """A linear model that records each input batch."""

    def __init__(self, features: int = 2) -> None:
        super().__init__()
        self.lin = nn.Linear(features, 2)
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.lin(x.flatten(1))


def test_batch_order_comes_from_seed_stage_and_stream_zero() -> None:
    rows = [[float(i), 0.0] for i in range(6)]
    model = _Recorder()
    train_model(model, _data(rows, [0] * 6), _cfg(batch_size=6, seed=5), "cpu", stage=2)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(derive_seed(5, 2, 0)))
    assert model.seen[0][:, 0, 0, 0].tolist() == perm.float().tolist()


def test_augmentation_draws_from_the_order_stream_after_the_permutation() -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    data = TensorData(x, torch.zeros(6, dtype=torch.int64), "tiny", 2, torch.arange(6))
    model = _Recorder(64)
    train_model(model, data, _cfg(batch_size=6, seed=2, augment="shift"), "cpu", stage=1)
    gen = torch.Generator().manual_seed(derive_seed(2, 1, 0))
    perm = torch.randperm(6, generator=gen)
    assert torch.equal(model.seen[0], AUGMENTATIONS["shift"](x[perm], gen))


def test_pgd_random_start_comes_from_seed_stage_and_stream_one(monkeypatch: pytest.MonkeyPatch) -> None:
    starts: list[Tensor] = []
    real = adversarial.pgd_ascent

    def spy(model, x, start, threat, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(start.detach().clone())
        return real(model, x, start, threat, **kwargs)

    monkeypatch.setattr(adversarial, "pgd_ascent", spy)
    data = _data([[0.5, 0.5]], [0])
    cfg = _cfg(method="pgd", seed=3, adversarial={"eps": 0.1, "steps": 1})
    train_model(_linear([[1.0, 0.0], [0.0, 1.0]]), data, cfg, "cpu", stage=4)
    want = ThreatModel("linf", 0.1).random_start(data.x, torch.Generator().manual_seed(derive_seed(3, 4, 1)))
    assert torch.equal(starts[0], want)


# --- schedules ----------------------------------------------------------------------------------------------------

def test_cosine_learning_rate_of_each_epoch() -> None:
    """5 samples, batch 2: 2 steps an epoch, 8 in 4 epochs; epoch e starts at p = 2e/8: 0.5·(1 + cos(π p))."""
    data = _data([[1, 0]] * 5, [0] * 5)
    hist = train_model(_linear([[0.0, 0.0], [0.0, 0.0]]), data, _cfg(epochs=4, batch_size=2, schedule="cosine"), "cpu")
    assert [e.lr for e in hist.epochs] == pytest.approx([0.1, 0.0853553390593, 0.05, 0.0146446609407])
    # learning-rate rewinding: epochs 2 and 3 of the same 4-epoch schedule
    hist = train_model(_linear([[0.0, 0.0], [0.0, 0.0]]), data, _cfg(epochs=2, batch_size=2, schedule="cosine"), "cpu",
                       schedule_epochs=(2, 4))
    assert [e.lr for e in hist.epochs] == pytest.approx([0.05, 0.0146446609407])
    # the default schedule spans exactly cfg.epochs: 2 epochs, epoch 2 starts half way
    hist = train_model(_linear([[0.0, 0.0], [0.0, 0.0]]), data, _cfg(epochs=2, batch_size=2, schedule="cosine"), "cpu")
    assert [e.lr for e in hist.epochs] == pytest.approx([0.1, 0.05])


def test_step_schedule_of_each_epoch() -> None:
    """milestones 0.5, 0.75, gamma 0.1, 4 epochs of one step: ×1, ×1, ×0.1 (p = 0.5 reached), ×0.01."""
    data = _data([[1, 0]] * 2, [0] * 2)
    hist = train_model(_linear([[0.0, 0.0], [0.0, 0.0]]), data, _cfg(epochs=4, batch_size=2, schedule="step"), "cpu")
    assert [e.lr for e in hist.epochs] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cfg = _cfg(schedule="step", gamma=0.5, milestones=[0.2, 0.4, 0.6])
    assert [SCHEDULES["step"](p, cfg) for p in (0.1, 0.2, 0.5, 0.6)] == [1.0, 0.5, 0.25, 0.125]
    assert SCHEDULES["cosine"](0.5, cfg) == pytest.approx(0.5) and SCHEDULES["cosine"](0.25, cfg) == pytest.approx(
        0.5 * (1 + math.sqrt(0.5)))


# --- optimizers and augmentations ---------------------------------------------------------------------------------

def test_optimizers_get_the_config_hyperparameters() -> None:
    cfg = _cfg(momentum=0.5, weight_decay=0.01)
    p = [nn.Parameter(torch.zeros(1))]
    sgd = OPTIMIZERS["sgd"](p, cfg, 0.3)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (0.3, 0.5, 0.01)
    adam = OPTIMIZERS["adam"](p, cfg, 0.3)
    assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 0.01
    adamw = OPTIMIZERS["adamw"](p, cfg, 0.3)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.01


def test_shift_moves_by_up_to_two_pixels_every_offset_reached() -> None:
    """A single lit pixel at (4, 4) of a 9x9 image lands at (4 ± 2, 4 ± 2): all 25 offsets occur."""
    x = torch.zeros(400, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = AUGMENTATIONS["shift"](x, torch.Generator().manual_seed(0))
    flat = (out[:, 0] == 1).flatten(1).float().argmax(1).tolist()
    where = {(i // 9, i % 9) for i in flat}
    assert where == {(r, c) for r in range(2, 7) for c in range(2, 7)}
    assert float(out.sum()) == 400.0


def test_crop_flip_mirrors_about_half_the_images_horizontally() -> None:
    """A lit left column, no shift possible to the right edge within 4 pixels on a 1x16 row: a flipped image has
    its light in the right half."""
    x = torch.zeros(400, 1, 1, 16)
    x[:, 0, 0, 0] = 1.0
    out = AUGMENTATIONS["crop-flip"](x, torch.Generator().manual_seed(0))
    cols = torch.tensor([int(row.argmax()) if float(row.max()) > 0 else -1 for row in out[:, 0, 0]])
    lit = cols >= 0
    right = (cols >= 8) & lit
    assert 0.3 < float(right.sum()) / float(lit.sum()) < 0.7


# --- adversarial steps --------------------------------------------------------------------------------------------

def test_pgd_step_trains_on_a_hand_run_pgd_example() -> None:
    """W = [[2, 0], [0, 0]], x = (0.5, 0.5), y = 0: ∇x CE = (2(p0 - 1), 0), sign (-1, 0); two steps of 0.1 from x
    reach 0.3, projected to 0.35 by eps 0.15: logits (0.7, 0), loss ln(1 + e^-0.7). One SGD step (lr 1) then moves
    W by -(p - e_y) x_adv^T with p = softmax(0.7, 0)."""
    model = _linear([[2.0, 0.0], [0.0, 0.0]])
    cfg = _cfg(method="pgd", lr=1.0, adversarial={"eps": 0.15, "steps": 2, "step_size": 0.1, "random_start": False})
    x = torch.tensor([[0.5, 0.5]]).view(1, 1, 1, 2)
    loss, logits = adversarial.METHODS["pgd"](model, x, torch.tensor([0]), cfg, None)
    assert torch.allclose(logits, torch.tensor([[0.7, 0.0]]), atol=1e-6)
    assert float(loss.detach()) == pytest.approx(math.log(1 + math.exp(-0.7)), abs=1e-6)
    hist = train_model(model, _data([[0.5, 0.5]], [0]), cfg, "cpu")
    p0 = _sigmoid(0.7)
    want = torch.tensor([[2 + (1 - p0) * 0.35, (1 - p0) * 0.5], [-(1 - p0) * 0.35, -(1 - p0) * 0.5]])
    assert torch.allclose(model[1].weight, want, atol=1e-6)
    assert hist.epochs[0].loss == pytest.approx(math.log(1 + math.exp(-0.7)), abs=1e-6)


class _DropoutLinear(nn.Module):
    """Linear logits, scaled by 10 in train mode (a mode-dependent model, as BatchNorm or dropout make)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
            self.lin.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x.flatten(1)) * (10.0 if self.training else 1.0)


def test_trades_loss_is_ce_plus_beta_times_batchmean_kl_with_gradient_through_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Zhang et al.: CE(f(x), y) + β·KL(f(x) || f(x')) / N, the clean softmax not detached (their reference code)."""
    advs: list[Tensor] = []
    real = adversarial.pgd_ascent

    def spy(model, x, start, threat, **kwargs):  # type: ignore[no-untyped-def]
        out = real(model, x, start, threat, **kwargs)
        advs.append(out[0].detach().clone())
        return out

    monkeypatch.setattr(adversarial, "pgd_ascent", spy)
    x = torch.tensor([[0.5, 0.5], [0.2, 0.9]]).view(2, 1, 1, 2)
    y = torch.tensor([0, 1])
    for beta in (1.0, 3.0):
        model = _linear([[2.0, -1.0], [0.5, 1.0]]).train()
        cfg = _cfg(method="trades", adversarial={"eps": 0.2, "steps": 3, "trades_beta": beta})
        loss, _ = adversarial.METHODS["trades"](model, x, y, cfg, torch.Generator().manual_seed(0))
        loss.backward()
        got = model[1].weight.grad.clone()
        model.zero_grad()
        clean, adv = model(x), model(advs[-1])
        p, logq = F.softmax(clean, 1), F.log_softmax(adv, 1)
        kl = (p * (torch.log(p) - logq)).sum() / 2
        hand = F.cross_entropy(clean, y) + beta * kl
        hand.backward()
        assert float(loss.detach()) == pytest.approx(float(hand.detach()), abs=1e-6)
        assert torch.allclose(got, model[1].weight.grad, atol=1e-6)
        assert float(kl.detach()) > 1e-4


def test_trades_attack_targets_the_eval_mode_clean_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The KL the attack maximizes compares with the clean softmax of the model in eval mode."""
    targets: list[Tensor] = []
    real = adversarial.pgd_ascent

    def spy(model, x, start, threat, *, loss_fn, **kwargs):  # type: ignore[no-untyped-def]
        targets.append(loss_fn(torch.zeros(x.shape[0], 2), torch.arange(x.shape[0])))
        return real(model, x, start, threat, loss_fn=loss_fn, **kwargs)

    monkeypatch.setattr(adversarial, "pgd_ascent", spy)
    model = _DropoutLinear().train()
    x = torch.tensor([[0.5, 0.5]]).view(1, 1, 1, 2)
    cfg = _cfg(method="trades", adversarial={"eps": 0.1, "steps": 1})
    adversarial.METHODS["trades"](model, x, torch.tensor([0]), cfg, torch.Generator().manual_seed(0))
    p0 = _sigmoid(1.0)  # eval logits (1, 0); KL(p || uniform) = Σ p log(2p)
    assert float(targets[0][0]) == pytest.approx(p0 * math.log(2 * p0) + (1 - p0) * math.log(2 * (1 - p0)), abs=1e-6)


def test_pgd_attack_runs_on_the_eval_mode_model() -> None:
    """Eval-mode logits (1, 0) and train-mode (10, 0) give the same sign; two 0.25-steps from x (no random start)
    are projected to 0.4 by eps 0.1; the loss and logits are the train-mode ones on x_adv."""
    model = _DropoutLinear().train()
    x = torch.tensor([[0.5, 0.5]]).view(1, 1, 1, 2)
    cfg = _cfg(method="pgd", adversarial={"eps": 0.1, "steps": 2, "step_size": 0.25, "random_start": False})
    loss, logits = adversarial.METHODS["pgd"](model, x, torch.tensor([0]), cfg, None)
    assert torch.allclose(logits, torch.tensor([[8.0, 0.0]]), atol=1e-5)  # x_adv = (0.4, 0.5), ×10 in train mode
    assert model.training is True


def test_trades_start_is_projected_into_the_bounds() -> None:
    threat = ThreatModel("linf", 0.3)
    x = torch.zeros(2000, 1, 1, 2)
    start = adversarial.trades_start(x, threat, torch.Generator().manual_seed(0))
    assert float(start.min()) == 0.0 and float(start.max()) > 0
    interior = adversarial.trades_start(x + 0.5, threat, torch.Generator().manual_seed(0)) - 0.5
    assert 0.0008 < float(interior.std()) < 0.0012


# --- config -------------------------------------------------------------------------------------------------------

def test_defaults() -> None:
    cfg = TrainConfig.from_dict({})
    assert (cfg.optimizer, cfg.lr, cfg.schedule, cfg.epochs, cfg.batch_size, cfg.augment) == (
        "adam", 0.002, "cosine", 12, 128, "shift")
    assert (cfg.gamma, cfg.milestones, cfg.momentum, cfg.method, cfg.seed, cfg.threads) == (
        0.1, [0.5, 0.75], 0.9, "standard", 0, 1)
    adv = cfg.adversarial
    assert (adv.eps, adv.steps, adv.step_size, adv.random_start, adv.trades_beta) == (0.3, 10, None, True, 6.0)
    assert adv.alpha() == pytest.approx(0.075)  # 2.5 · 0.3 / 10


KWTA = {"activation": {"name": "kwta", "k_ratio": 0.5}}


@pytest.mark.parametrize("data, message", [
    ({"momentum": 1}, "momentum: must be in [0, 1), got 1.0"),
    ({"schedule": "step", "milestones": [0.0]}, "milestones: fractions of the epochs in (0, 1), got [0.0]"),
    ({"adversarial": {"steps": 0}},
     "adversarial.steps: must be >= 1 (PGD iterations per training batch; Madry et al. use 7-40), got 0"),
    ({"adversarial": {"step_size": 0}},
     "adversarial.step_size: must be > 0, got 0.0; leave it out for 2.5·eps/steps"),
    ({"method": "trades", "adversarial": {"eps": 0}},
     "adversarial.eps: method trades needs eps > 0, got 0.0; give the training budget (e.g. 0.3 on MNIST, 8/255 on "
     "CIFAR-10), or use method: standard"),
    ({**KWTA, "incremental": {"ratios": [0.5]}},
     "incremental.ratios: each ratio must be below the one before, starting from k_ratio 0.5 (each stage writes its "
     "own checkpoint, named by its ratio), got [0.5]"),
    ({**KWTA, "incremental": {"ratios": [1.0]}},
     "incremental.ratios: each ratio must be below the one before, starting from k_ratio 0.5 (each stage writes its "
     "own checkpoint, named by its ratio), got [1.0]"),
    ({**KWTA, "incremental": {"ratios": [0.25], "epochs_per_ratio": 0}},
     "incremental.epochs_per_ratio: must be >= 1, got 0"),
    ({**KWTA, "incremental": {"ratios": [0.25], "lr": 0}}, "incremental.lr: must be > 0, got 0.0"),
    ({"threads": -1}, "threads: must be >= 1, or 0 for torch's default, got -1"),
    ({"epochs": 0, "pruning": {"method": "magnitude", "sparsity": 0.5}},
     "epochs: pruned training needs epochs >= 1, got 0"),
])
def test_config_errors_in_full(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"device": "cpu", **data})
    assert str(info.value) == message


def test_config_boundaries_that_are_valid() -> None:
    assert TrainConfig.from_dict({"adversarial": {"trades_beta": 0}}).adversarial.trades_beta == 0
    assert TrainConfig.from_dict({"method": "pgd", "momentum": 0}).momentum == 0
    assert TrainConfig.from_dict({**KWTA, "incremental": {"ratios": [0.25], "epochs_per_ratio": 1}}).stage_ratios() \
        == [0.5, 0.25]


# --- whole runs ---------------------------------------------------------------------------------------------------

def test_default_out_and_require_finite() -> None:
    cfg = TrainConfig.from_dict({"dataset": "digits", **KWTA, "method": "pgd", "seed": 3})
    assert str(run.default_out(cfg)) == "runs/digits-cnn-kwta-r0.5-pgd-seed3.pt"
    model = _linear([[0.0, float("nan")], [0.0, 0.0]])
    with pytest.raises(KwtaRobustError, match="training diverged: 1 tensors hold NaN or inf"):
        run.require_finite(model, TrainHistory())


def test_incremental_stages_use_their_lr_epochs_and_stage_seed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Xiao et al.'s fine-tuning: each stage trains epochs_per_ratio epochs at incremental.lr, with its own stage
    seeds; the run's history holds every epoch; torch's thread count is restored."""
    calls: list[tuple[float, int, int]] = []
    real = run.train_model

    def spy(model, train, cfg, device, stage=0, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((cfg.lr, cfg.epochs, stage))
        return real(model, train, cfg, device, stage=stage, **kwargs)

    monkeypatch.setattr(run, "train_model", spy)
    cfg = TrainConfig.from_dict({
        "dataset": "digits", "arch": "cnn", "arch_kwargs": {"channels": [4, 8], "hidden": 16}, "epochs": 1,
        "batch_size": 256, "activation": {"name": "kwta", "k_ratio": 0.4}, "device": "cpu", "lr": 0.001, "threads": 2,
        "augment": "none", "incremental": {"ratios": [0.2, 0.1], "epochs_per_ratio": 2, "lr": 0.0005},
        "out": str(tmp_path / "m.pt")})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run.run_training(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert calls == [(0.001, 1, 0), (0.0005, 2, 1), (0.0005, 2, 2)]
    assert [e.epoch for e in result.history.epochs] == [1, 1, 2, 1, 2]
    assert [s.ratio for s in result.stages] == [0.4, 0.2, 0.1]


def test_run_initializes_the_model_under_the_seed_and_leaves_the_global_rng(tmp_path) -> None:
    cfg = TrainConfig.from_dict({"dataset": "digits", "arch_kwargs": {"channels": [4, 8], "hidden": 16}, "epochs": 0,
                                 "device": "cpu", "seed": 5, "out": str(tmp_path / "m.pt")})
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    result = run.run_training(cfg)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(5)
    fresh = build_model(run.build_spec(cfg, load_dataset("digits", "train")), "model")
    for (name, got), (_, want) in zip(result.model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(got, want), name
