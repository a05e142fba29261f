"""The speed-ups keep the attacks' numbers (issue 13): native APGD against torchattacks, the per-sample early stops
of PGD and CW, gradient estimation's forward batches, and the channels-last evaluation layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.adaptive import balanced_chunks
from attacks.apgd import apgd_single_run, dlr_loss, targeted_dlr_loss
from attacks.gradient import per_sample_loss
from attack_fixtures import CountingModel, robust_flags, trained_cnn


@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_cnn("relu")
    return model.requires_grad_(False), x[:96], y[:96]


# --- APGD, written here, against the reference (torchattacks 3.5.1) ---------------------------------------------
@pytest.mark.parametrize(("name", "norm", "eps"), [("apgd-ce", "linf", 0.15), ("apgd-dlr", "linf", 0.15),
                                                   ("apgd-ce", "l2", 0.4), ("apgd-t", "linf", 0.15)])
def test_apgd_breaks_exactly_the_samples_torchattacks_breaks(cnn, name: str, norm: str, eps: float) -> None:
    model, x, y = cnn
    threat = ThreatModel(norm, eps)
    ours = create_attack(name, steps=20, **({"n_target_classes": 3} if name == "apgd-t" else {}), seed=3)
    x_adv = ours(model, x, y, threat)
    ta_norm = "Linf" if norm == "linf" else "L2"
    with torch.random.fork_rng(devices=[]):
        if name == "apgd-t":
            reference = torchattacks.APGDT(model, norm=ta_norm, eps=eps, steps=20, seed=3, n_classes=4)
        else:
            reference = torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=20, seed=3, loss=name[5:])
        ref_adv = reference(x, y)
    ours_robust, ref_robust = robust_flags(model, x_adv, y), robust_flags(model, ref_adv, y)
    assert 0 < int(ours_robust.sum()) < len(y)  # the comparison is not trivial
    # the same samples broken (on an AVX2-only EPYC one sample differed until a misclassified iterate found at a
    # step-size checkpoint was kept: test_apgd_keeps_a_misclassified_iterate_found_at_a_checkpoint)
    assert torch.equal(ours_robust, ref_robust)
    assert bool(threat.contains(x_adv, x).all())


class ScriptedLogits(nn.Module):
    """Logits ``[1, 10]`` set per call (a fixed row plus a small linear term in the input, so each call has its own
    gradient direction); records every input it is called on."""

    def __init__(self, rows: list[list[float]], features: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.rows = torch.tensor(rows)
        self.weights = torch.randn(len(rows), features, 10, generator=generator)
        self.inputs: list[Tensor] = []

    def forward(self, z: Tensor) -> Tensor:
        call = len(self.inputs)
        self.inputs.append(z.detach().clone())
        return self.rows[call] + 0.01 * z.flatten(1) @ self.weights[call]


def test_apgd_keeps_a_misclassified_iterate_found_at_a_checkpoint() -> None:
    # 20 steps: the first step-size checkpoint follows call 4 (the start is call 0). Call 1 has the highest CE but is
    # still classified 0 (its probability mass spread over ten classes); call 4 is misclassified (class 1) with a
    # lower CE, and since the loss rose on one step only the checkpoint halves the step and moves back to call 1.
    spread, confident, fooled = [0.0] + [-0.1] * 9, [5.0] + [0.0] * 9, [0.0, 0.1] + [-10.0] * 8
    model = ScriptedLogits([confident, spread, confident, confident, fooled] + [confident] * 17, features=4)
    x, y = torch.full((1, 4), 0.5), torch.tensor([0])
    x_adv, was_fooled = apgd_single_run(model, x, y, ThreatModel("linf", 0.1),
                                        lambda z, t, rows: F.cross_entropy(z, t, reduction="none"), steps=20,
                                        rho=0.75, generator=torch.Generator().manual_seed(0))
    assert len(model.inputs) == 5  # the sample stopped being computed once fooled
    assert not torch.equal(model.inputs[1], model.inputs[4])
    assert bool(was_fooled[0]) and torch.equal(x_adv, model.inputs[4])


def test_apgd_stops_computing_samples_it_broke(cnn) -> None:
    model, x, y = cnn
    counting = CountingModel(model)
    create_attack("apgd-ce", steps=20)(counting, x, y, ThreatModel("linf", 0.15))
    iterations = counting.batches[1:]  # after the entry check: the start, then one pass per iteration
    assert len(iterations) == 21
    assert iterations[0] == int(robust_flags(model, x, y).sum())  # the clean-correct samples
    assert iterations[-1] < iterations[0]  # broken samples left the batch
    assert iterations == sorted(iterations, reverse=True)


def test_dlr_losses_match_their_definitions() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = torch.tensor([0, 0])
    # sample 0: y is the top logit: -(3 - 1) / (3 - 0.5); sample 1: -(0 - 2) / (2 - 0.5)
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-2 / 2.5, 2 / 1.5]))
    target = torch.tensor([1, 2])
    # -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2)
    assert torch.allclose(targeted_dlr_loss(logits, y, target),
                          torch.tensor([-(3 - 1) / (3 - 0.25 + 0.5), -(0 - 1) / (2 - 0.25)]))


# --- PGD and CW: per-sample early stop, same results --------------------------------------------------------------
def reference_pgd(model: nn.Module, x: Tensor, y: Tensor, start: Tensor, threat: ThreatModel, steps: int,
                  step_size: float) -> Tensor:
    """PGD on the whole batch every step; per sample the first misclassified iterate, else the last."""
    current, best = start.clone(), start.clone()
    fooled = torch.zeros(len(y), dtype=torch.bool)
    for step in range(steps + 1):
        current.requires_grad_(True)
        with torch.enable_grad():
            logits = model(current)
            hit = (logits.argmax(dim=1) != y) & ~fooled
            best[hit] = current.detach()[hit]
            fooled |= hit
            if step == steps:
                break
            grad = torch.autograd.grad(per_sample_loss(logits, y, "ce").sum(), current)[0]
        current = threat.project(threat.step(current.detach(), grad, step_size), x).detach()
    best[~fooled] = current.detach()[~fooled]
    return best


def test_pgd_early_stop_returns_what_the_full_batch_loop_returns(cnn) -> None:
    model, x, y = cnn
    threat = ThreatModel("linf", 0.1)
    counting = CountingModel(model)
    x_adv = create_attack("pgd", steps=10, random_start=False)(counting, x, y, threat)
    correct = robust_flags(model, x, y)
    expected = reference_pgd(model, x[correct], y[correct], x[correct], threat, 10, 2.5 * 0.1 / 10)
    assert torch.equal(x_adv[correct], expected)
    assert counting.batches[1] == int(correct.sum()) and counting.batches[-1] < counting.batches[1]


def test_cw_stops_a_sample_once_it_has_an_adversarial_inside_the_ball(cnn) -> None:
    model, x, y = cnn
    x, y = x[:16], y[:16]
    wide, narrow = ThreatModel("l2", 100.0), ThreatModel("l2", 1e-3)
    for threat, stops in ((wide, True), (narrow, False)):
        counting = CountingModel(model)
        x_adv = create_attack("cw", steps=20, search_steps=2, lr=0.1)(counting, x, y, threat)
        passes = sum(counting.batches[1:])
        if stops:  # every sample is done once broken: fewer than 2 x 20 passes of 16, and some are broken
            assert passes < 2 * 20 * 16 and not bool(robust_flags(model, x_adv, y).all())
        else:  # nothing is adversarial inside a tiny ball: the full budget runs
            assert passes == 2 * 20 * 16


# --- gradient estimation: the forward batch changes the speed, not the numbers -------------------------------------
def test_balanced_chunks_leave_no_small_tail() -> None:
    sizes = [len(c) for c in balanced_chunks(torch.zeros(1000, 3), 256)]
    assert sizes == [250, 250, 250, 250]
    assert [len(c) for c in balanced_chunks(torch.zeros(10, 3), 256)] == [10]


def test_gradient_estimation_results_do_not_depend_on_the_forward_batch(cnn) -> None:
    model, x, y = cnn
    x, y = x[:24], y[:24]
    threat = ThreatModel("linf", 0.1)
    runs = []
    for forward_batch in (None, 64, 4096):
        counting = CountingModel(model)
        attack = create_attack("gradient-estimation", steps=3, samples_start=8, samples_end=16,
                               forward_batch_size=forward_batch)
        runs.append((attack(counting, x, y, threat), attack.last_queries, max(counting.batches)))
    (a, qa, ba), (b, qb, bb), (c, qc, bc) = runs
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(qa, qb) and torch.equal(qa, qc)
    assert ba <= 256 and bb <= 64 < bc  # CPU default: cache-sized forwards


def test_forward_batch_defaults_by_device() -> None:
    attack = create_attack("gradient-estimation")
    assert attack.forward_batch(torch.device("cpu")) == 256
    assert attack.forward_batch(torch.device("cuda")) == attack.query_batch_size == 4096
    assert create_attack("gradient-estimation", forward_batch_size=8000).forward_batch(torch.device("cpu")) == 4096
