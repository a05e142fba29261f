"""Docstring promises of the attack library (attacks/*.py) that no other test pinned: who a transfer attack queries,
what a deep copy made while counting counts, a log-uniform temperature stage's first temperature, gradient
estimation's default forward batch, and the float16 margin at which cross-entropy's gradient vanishes."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from attack_fixtures import CountingModel, linear_binary
from attacks.adaptive import estimate_gradient
from attacks.base import ThreatModel, create_attack, margin_loss
from attacks.bpda_temperature import StepTemperature, stage_temperature
from attacks.precision import loss_logits
from attacks.queries import count_queries


def test_transfer_attack_never_queries_the_target() -> None:
    """transfer.py: "the target is only queried by the runner, never by this attack"."""
    source, x, y = linear_binary(n=6)
    target, _, _ = linear_binary(n=6, seed=1)
    attack = create_attack("transfer", source=source, inner="pgd", inner_params={"steps": 3})
    with count_queries(target) as on_target, count_queries(source) as on_source:
        x_adv = attack(target, x, y, ThreatModel("linf", 0.1))
    assert on_target.forwards == 0 and on_target.backwards == 0
    assert on_source.forwards >= len(x) and on_source.backwards > 0  # the entry check and PGD ran on the source
    assert x_adv.shape == x.shape


def test_a_deep_copy_made_while_counting_is_counted_too() -> None:
    """queries.py: "a deep copy of a module copies its hooks, so a twin deep-copied while counting is counted too";
    one made before the block is not. The block removes the model's hook, not the copy's: the twin goes on counting
    into the same count after the block (the docstring says so)."""
    model, x, _ = linear_binary(n=5)
    before = copy.deepcopy(model)
    with count_queries(model) as count:
        twin = copy.deepcopy(model)
        twin(x)
        before(x[:2])
    assert count.forwards == 5 and count.backwards == 0
    model(x)  # the model's own hook is gone
    assert count.forwards == 5
    twin(x)  # the twin's copy of the hook is not
    assert count.forwards == 5 + 5


def test_a_temperature_stage_entry_gives_its_first_temperature_and_per_step_change() -> None:
    """bpda_temperature.py example: {"log_uniform": [0.02, 0.1]} starts at the geometric mean 0.0447...; a list
    cycles from its first entry; a plain temperature has no per-step change."""
    first, steps = stage_temperature({"log_uniform": [0.02, 0.1]}, None)
    assert first == pytest.approx(math.sqrt(0.02 * 0.1)) and f"{first:.4f}" == "0.0447"
    assert steps == StepTemperature("log-uniform", (0.02, 0.1))
    draws = [steps.sampler(seed=3)(i) for i in range(50)]
    assert all(0.02 <= t <= 0.1 for t in draws) and draws == [steps.sampler(seed=3)(i) for i in range(50)]
    first, steps = stage_temperature([0.3, 0.1], None)
    assert first == 0.3 and [steps.sampler(0)(i) for i in range(3)] == [0.3, 0.1, 0.3]
    assert stage_temperature(0.05, None) == (0.05, None)


def test_estimate_gradient_forward_batch_defaults_to_query_batch_size() -> None:
    """adaptive.py: probes go through the model in balanced batches of at most ``query_batch_size`` by default — the
    whole chunk when it fits, split when one antithetic pair per row already exceeds it."""
    model, x, y = linear_binary(n=8)
    counting = CountingModel(model)
    gen = torch.Generator().manual_seed(0)
    estimate_gradient(counting, x[:2], y[:2], margin_loss, 4, 0.1, gen, query_batch_size=8)
    assert counting.batches == [8, 8]  # 2 pairs for 2 rows per chunk: each chunk in one forward
    counting.batches.clear()
    estimate_gradient(counting, x, y, margin_loss, 2, 0.1, gen, query_batch_size=4)
    assert counting.batches == [4] * 8  # a chunk of one pair for 8 rows is 16 probes: 4 forwards of 4, twice


@pytest.mark.parametrize("classes", [2, 10])
def test_float16_cross_entropy_gradient_vanishes_from_a_margin_of_about_17(classes: int) -> None:
    """precision.py: in float16 the true class's entry of CE's gradient is 0 from a margin of about 9, the whole
    gradient only from about 17 (``p_j`` below half the smallest subnormal); :func:`loss_logits` keeps it."""
    def grad(margin: float, upcast: bool) -> torch.Tensor:
        z = torch.zeros(1, classes)
        z[0, 0] = margin
        z = z.half().requires_grad_(True)
        F.cross_entropy(loss_logits(z, rescale=True) if upcast else z, torch.tensor([0])).backward()
        return z.grad.float()

    assert grad(8.0, False)[0, 1:].gt(0).all()
    at_12 = grad(12.0, False)
    assert at_12[0, 0] == 0 and at_12[0, 1:].gt(0).all()  # the true class's entry is gone, the others remain
    assert grad(17.0, False).abs().sum() > 0
    assert torch.equal(grad(18.0, False), torch.zeros(1, classes))
    assert grad(18.0, True)[0, 1:].gt(0).all()  # upcast to float32 before the loss: the gradient survives


def test_foolbox_results_beyond_eps_are_logged_as_info_and_keep_the_clean_input(caplog) -> None:
    """blackbox.py: samples whose minimal adversarial lies beyond ``eps`` get the clean input back and the count is
    logged as an info line (the no-start case is the warning, pinned in tests/test_attacks_blackbox.py)."""
    model, x, y = linear_binary(n=4)
    attack = create_attack("hopskipjump", steps=2, init_directions=20, init_steps=10, initial_gradient_eval_steps=5,
                           max_gradient_eval_steps=10)
    with caplog.at_level(logging.INFO, logger="attacks.blackbox"):
        x_adv = attack(model, x, y, ThreatModel("l2", 1e-4))
    beyond = [r for r in caplog.records if "lie beyond eps" in r.getMessage()]
    assert len(beyond) == 1 and beyond[0].levelno == logging.INFO
    assert "4 of 4 minimal adversarials lie beyond eps=0.0001; 0 of those samples" in beyond[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert torch.equal(x_adv, x)
