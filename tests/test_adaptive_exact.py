"""Gradient estimation and EOT (attacks/adaptive.py): exact budgets, batching and steps, checked against
independent computations (hand-counted queries, autograd gradients, step lengths in the threat's norm)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.adaptive import EOTGradient, LOSSES, balanced_chunks, estimate_gradient, sample_schedule
from attacks.base import AttackConfigError, margin_loss
from test_adaptive import (DIM, InputDropout, Recorder, TwoClassLinear, assert_single_pass, points_at_distance,
                           sign_vector)


class Linear(nn.Module):
    """``logits = x.flatten(1) @ weight + bias``: exact gradients for any number of classes."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.weight + self.bias


class Constant(nn.Module):
    """The same logits for every input (a zero input gradient): class 0 always wins."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tensor([1.0, 0.3]).expand(x.shape[0], 2) + 0 * x.flatten(1)[:, :1]


# --- batching ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "batch"), [(10, 3), (9, 3), (300, 256), (1, 5), (513, 256)])
def test_balanced_chunks_are_ceil_many_nearly_equal_and_at_most_the_batch(rows: int, batch: int) -> None:
    chunks = balanced_chunks(torch.arange(rows), batch)
    sizes = [len(c) for c in chunks]
    assert len(chunks) == math.ceil(rows / batch)
    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1
    assert torch.equal(torch.cat(chunks), torch.arange(rows))


def test_each_noise_chunk_is_one_model_call_of_whole_antithetic_pairs() -> None:
    # query_batch_size 16, 2 rows: 4 pairs (16 probes) per chunk, so 10 pairs come as 4 + 4 + 2 pairs in three calls
    # of 16, 16 and 8 probes, each holding x + σu and x - σu for the same u (their mean is x).
    w = sign_vector()
    model = Recorder(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.1, 0.2])
    estimate_gradient(model, x, y, margin_loss, samples=10, sigma=0.05, generator=torch.Generator().manual_seed(0),
                      query_batch_size=16)
    assert [len(q) for q in model.queries] == [16, 16, 8]
    for probes in model.queries:
        plus, minus = probes.view(2, -1, *x.shape)
        assert torch.allclose((plus + minus) / 2, x.expand_as(plus), atol=1e-6)


def test_forward_batches_bound_every_model_call_and_leave_the_estimate_unchanged() -> None:
    w = sign_vector(4)
    x, y = points_at_distance(w, [0.1, 0.2, 0.3])
    estimates = []
    for forward_batch in (None, 7):
        model = Recorder(TwoClassLinear(w))
        estimates.append(estimate_gradient(model, x, y, margin_loss, samples=20, sigma=0.05,
                                           generator=torch.Generator().manual_seed(0), query_batch_size=64,
                                           forward_batch_size=forward_batch))
        assert max(len(q) for q in model.queries) == (60 if forward_batch is None else 7)
    assert torch.allclose(estimates[0], estimates[1], atol=1e-5)
    model = Recorder(TwoClassLinear(w))
    attack = create_attack("gradient-estimation", steps=3, samples_start=10, samples_end=10, forward_batch_size=5,
                           query_batch_size=64)
    attack(model, x, y, ThreatModel("linf", 0.05))
    assert max(len(q) for q in model.queries[1:]) == 5  # after the entry check (begin_attack's own batches)


def test_forward_batch_never_exceeds_the_query_batch() -> None:
    attack = create_attack("gradient-estimation", forward_batch_size=512, query_batch_size=64)
    assert attack.forward_batch(torch.device("cpu")) == 64
    assert create_attack("gradient-estimation", query_batch_size=64).forward_batch(torch.device("cpu")) == 64


# --- the estimate ---------------------------------------------------------------------------------------------


def test_estimate_uses_each_rows_own_label() -> None:
    # Two rows with labels 0 and 1 on a two-class linear model: the margin gradients are +w and -w. Antithetic
    # differences of a linear loss are exact, so ĝ = (1/n) Σ (g·u) u; n = 2000 in D = 64 gives cos ≈ 0.98.
    w = sign_vector()
    model = TwoClassLinear(w)
    x = torch.full((2, DIM), 0.5) + 0.01 * torch.stack([-w, w])  # each row on its label's side
    y = torch.tensor([0, 1])
    est = estimate_gradient(model, x, y, margin_loss, samples=2000, sigma=0.05,
                            generator=torch.Generator().manual_seed(0), query_batch_size=4096)
    cos = F.cosine_similarity(est, torch.stack([w, -w]), dim=1)
    assert bool((cos > 0.95).all()), cos


# --- the attack's budget and early stop ------------------------------------------------------------------------


def test_eps_zero_returns_the_input_after_only_the_entry_check() -> None:
    w = sign_vector()
    model = Recorder(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.01, 0.2])
    attack = create_attack("gradient-estimation", steps=5, samples_start=3, samples_end=3)
    x_adv = attack(model, x, y, ThreatModel("linf", 0.0))
    assert torch.equal(x_adv, x)
    assert attack.last_queries.tolist() == [1, 1] and attack.last_total_queries == 2
    assert sum(len(q) for q in model.queries) == 2


def test_a_tie_is_not_a_success_so_the_attack_goes_on() -> None:
    # Margin exactly 0 (logits tie, argmax is the label) is not misclassified: at the start (x = 0.5) and after the
    # first step (7/16 + 1/16 = 1/2 in every coordinate, dyadic numbers: exact) the attack goes on.
    w = torch.ones(4)
    x = torch.tensor([[0.5] * 4, [0.4375] * 4])
    y = torch.zeros(2, dtype=torch.long)
    n, steps = 500, 2
    attack = create_attack("gradient-estimation", steps=steps, samples_start=n, samples_end=n, step_size=0.0625)
    x_adv = attack(TwoClassLinear(w), x, y, ThreatModel("linf", 0.25))
    assert attack.last_queries.tolist() == [1 + (2 * n + 1), 1 + steps * (2 * n + 1)]
    assert torch.equal(x_adv[1], torch.full((4,), 0.5625))  # misclassified at the second step


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_step_moves_exactly_the_step_size_in_the_threats_norm(norm: str) -> None:
    # A robust point (margin rises along any ascent step but never crosses), one step of 0.01 inside a large ball:
    # the returned iterate is the stepped one, a signed step for Linf and a normalised one for L2.
    w = sign_vector()
    x, y = points_at_distance(w, [0.45])
    threat = ThreatModel(norm, 1.0 if norm == "linf" else 5.0)
    attack = create_attack("gradient-estimation", steps=1, samples_start=500, samples_end=500, step_size=0.01,
                           sigma=0.01)
    delta = attack(TwoClassLinear(w), x, y, threat) - x
    assert float(threat.distance(x + delta, x)) == pytest.approx(0.01, rel=1e-4)
    assert float(delta.flatten() @ w) > 0  # an ascent step
    if norm == "l2":
        assert float(delta.abs().max()) < 0.01  # not a signed step, whose L2 length would be 0.01 · sqrt(D)


def test_the_returned_iterate_has_the_largest_margin_seen() -> None:
    # One noise pair per iteration on a robust point in a small ball: once at its faces, clipped signed steps go
    # up and down in margin. Every iterate is
    # one forward of a single row (the probes come in pairs), so the recorder sees the whole trajectory.
    w = sign_vector(5)
    model = Recorder(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.45])
    attack = create_attack("gradient-estimation", steps=12, samples_start=1, samples_end=1, step_size=0.02)
    x_adv = attack(model, x, y, ThreatModel("linf", 0.04))
    iterates = torch.cat([q for q in model.queries if len(q) == 1])
    margins = margin_loss(model.model(iterates), torch.zeros(len(iterates), dtype=torch.long))
    assert int(margins.argmax()) not in (0, len(margins) - 1), margins  # the test has teeth: a peak in the middle
    assert float(margin_loss(model.model(x_adv), y)) == pytest.approx(float(margins.max()), abs=1e-4)
    assert float(margins[-1]) < float(margins.max()) - 0.01  # the last iterate is not the answer


def test_ce_loss_is_what_the_estimate_follows() -> None:
    # Three classes; classes 1 and 2 nearly tie, so the margin's gradient is W1 - W0 alone while cross-entropy's
    # weighs W1 and W2 about equally. One step with a precise estimate (tiny sigma) follows the chosen loss's sign.
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 3, generator=gen)
    weight[:, 0] = 0
    x = torch.full((1, 16), 0.5)
    z = x @ weight
    bias = torch.tensor([2.0, -float(z[0, 1]), -float(z[0, 2]) - 0.02])  # class 0 wins; 1 beats 2 by 0.02
    model = Linear(weight, bias)
    y = torch.zeros(1, dtype=torch.long)
    xr = x.clone().requires_grad_(True)
    (ce_grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    (margin_grad,) = torch.autograd.grad(margin_loss(model(xr), y).sum(), xr)
    assert not torch.equal(ce_grad.sign(), margin_grad.sign())  # the losses disagree on some coordinates
    for loss, expected in (("ce", ce_grad), ("margin", margin_grad)):
        recorder = Recorder(model)
        attack = create_attack("gradient-estimation", loss=loss, steps=1, samples_start=2000, samples_end=2000,
                               step_size=0.01, sigma=1e-4)
        attack(recorder, x, y, ThreatModel("linf", 0.1))
        stepped = [q for q in recorder.queries if len(q) == 1][-1]
        clear = expected.abs() > 0.1 * expected.abs().max()  # coordinates the estimate's noise cannot flip
        assert torch.equal((stepped - x).sign()[clear], expected.sign()[clear]), loss


def test_gradient_estimation_on_a_randomized_model_is_seeded_and_keeps_the_global_rng() -> None:
    w = sign_vector(2)
    model = InputDropout(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.03, 0.2])
    state = torch.get_rng_state()
    runs = [create_attack("gradient-estimation", steps=3, samples_start=5, samples_end=5, seed=1)(
        model, x, y, ThreatModel("linf", 0.1)) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("params", [{"steps": True}, {"samples_end": 2.0}, {"query_batch_size": True}])
def test_booleans_and_floats_are_not_counts(params: dict) -> None:
    with pytest.raises(AttackConfigError, match=next(iter(params))):
        create_attack("gradient-estimation", **params)


def test_l2_default_step_is_madrys_once_the_pairs_outnumber_half_the_dimensions() -> None:
    attack = create_attack("gradient-estimation", steps=10)
    x = torch.zeros(1, 1, 8, 8)  # D = 64
    l2 = ThreatModel("l2", 1.0)
    assert attack.default_step(x, l2, [32] * 10) == pytest.approx(0.25)
    assert attack.default_step(x, l2, [100] * 10) == pytest.approx(0.25)  # not shorter than Madry's rule
    assert attack.default_step(x, l2, [8] * 10) == pytest.approx(0.25 / math.sqrt(16 / 64))


# --- EOT ---------------------------------------------------------------------------------------------------------


def test_eot_gradient_of_a_deterministic_model_with_replicas_in_one_chunk() -> None:
    # All 3 replicas of a 2-row batch in one forward (different rows, different labels): the mean over replicas of a
    # deterministic model is the single pass, row by row.
    gen = torch.Generator().manual_seed(0)
    model = Linear(torch.randn(8, 3, generator=gen), torch.zeros(3))
    x, y = torch.rand(2, 8, generator=gen), torch.tensor([0, 2])
    recorder = Recorder(model)
    outputs = EOTGradient(LOSSES["ce"], samples=3, batch_size=64)(recorder, x, y)
    assert [len(q) for q in recorder.queries] == [6]
    assert_single_pass(model, x, y, *outputs)


def test_eot_chunks_are_whole_replicas_within_the_batch_size() -> None:
    model = Recorder(TwoClassLinear(sign_vector()))
    x, y = points_at_distance(sign_vector(), [0.1, 0.2])
    EOTGradient(LOSSES["margin"], samples=5, batch_size=5)(model, x, y)
    assert [len(q) for q in model.queries] == [4, 4, 2]  # 2 replicas of 2 rows fit in 5 rows


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eot_step_is_taken_and_its_end_point_evaluated(norm: str) -> None:
    # One step of 0.05 from x on a robust linear point: the stepped point has the larger margin and is returned (the
    # last iterate is evaluated too); its distance from x is the step, signed for Linf and normalised for L2.
    w = sign_vector()
    x, y = points_at_distance(w, [0.45])
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 1.0)
    attack = create_attack("eot", steps=1, eot_samples=2, loss="margin", random_start=False, step_size=0.05)
    delta = attack(TwoClassLinear(w), x, y, threat) - x
    assert float(threat.distance(x + delta, x)) == pytest.approx(0.05, rel=1e-4)
    assert float(delta.flatten() @ w) > 0


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_eot_default_step_is_two_and_a_half_eps_over_steps(norm: str, eps: float) -> None:
    w = sign_vector()
    model = Recorder(TwoClassLinear(w))
    x, y = points_at_distance(w, [0.45])
    threat = ThreatModel(norm, eps)
    create_attack("eot", steps=5, eot_samples=1, loss="margin", random_start=False)(model, x, y, threat)
    first_step = model.queries[2]  # the entry check, iterate 0 (x), iterate 1
    assert torch.equal(model.queries[1], x)
    assert float(threat.distance(first_step, x)) == pytest.approx(2.5 * eps / 5, rel=1e-4)


def test_eot_random_start_is_where_a_flat_model_leaves_it() -> None:
    # A model with no input gradient: the iterates never move, every margin ties, the first iterate is kept.
    x, y = torch.full((3, 8), 0.5), torch.zeros(3, dtype=torch.long)
    threat = ThreatModel("linf", 0.1)
    started = create_attack("eot", steps=2, eot_samples=1, random_start=True)(Constant(), x, y, threat)
    assert bool(threat.contains(started, x).all()) and bool(((started - x).abs() > 0).all())
    assert torch.equal(create_attack("eot", steps=2, eot_samples=1, random_start=False)(Constant(), x, y, threat), x)


# --- schedules, names, seeds and small query batches ----------------------------------------------------------------


def test_schedules_round_to_the_nearest_count_and_the_l2_step_uses_the_mean() -> None:
    assert sample_schedule(1, 2, 4) == [1, 1, 2, 2]  # 1, 1.33, 1.67, 2
    attack = create_attack("gradient-estimation", steps=2)
    x = torch.zeros(1, 64)
    assert attack.default_step(x, ThreatModel("l2", 1.0), [4, 12]) == pytest.approx(1.25 / math.sqrt(16 / 64))


def test_forward_batch_defaults_by_device_and_names_follow_the_loss() -> None:
    attack = create_attack("gradient-estimation", query_batch_size=4096)
    assert attack.forward_batch(torch.device("cpu")) == 256
    assert attack.forward_batch(torch.device("meta")) == 4096
    assert create_attack("gradient-estimation", loss="ce").name == "gradient-estimation-ce"


def test_seed_sets_the_noise() -> None:
    w = sign_vector()
    x, y = points_at_distance(w, [0.3])
    runs = [create_attack("gradient-estimation", steps=2, samples_start=2, samples_end=2, seed=seed)(
        TwoClassLinear(w), x, y, ThreatModel("linf", 0.1)) for seed in (0, 1)]
    assert not torch.equal(runs[0], runs[1])


class Limited(nn.Module):
    """A model that refuses more than ``calls`` forwards (a runaway loop fails instead of hanging)."""

    def __init__(self, model: nn.Module, calls: int) -> None:
        super().__init__()
        self.model, self.left, self.sizes = model, calls, []

    def forward(self, x: Tensor) -> Tensor:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("too many model calls")
        self.sizes.append(len(x))
        return self.model(x)


def test_more_rows_than_half_the_query_batch_take_one_pair_per_chunk() -> None:
    w = sign_vector()
    x, y = points_at_distance(w, [0.1 + 0.01 * i for i in range(20)])
    model = Limited(TwoClassLinear(w), calls=20)
    estimate_gradient(model, x, y, margin_loss, samples=3, sigma=0.05, generator=torch.Generator().manual_seed(0),
                      query_batch_size=16)
    assert model.sizes == [14, 13, 13] * 3  # three chunks of one pair (40 probes), each in balanced forwards of <= 16
