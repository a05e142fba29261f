"""Query counting (attacks/queries.py): forward and backward rows through the model, exact for PGD and gradient
estimation, recorded by the runner for every attack; gradient estimation's staged noise schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ThreatModel, create_attack
from attacks.adaptive import staged_schedule
from attacks.base import AttackConfigError
from attacks.cascade import run_verified
from attacks.queries import count_queries


def far_from_boundary() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear 2-class model whose margin no eps-0.05 perturbation can overcome: every attack runs its full budget."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0] * 6, [0.0] * 6]))
        model[1].bias.copy_(torch.tensor([10.0, 0.0]))
    x = torch.rand(5, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    return model, x, torch.zeros(5, dtype=torch.long)


def test_counts_forward_and_backward_rows_and_removes_its_hook() -> None:
    model, x, _ = far_from_boundary()
    with count_queries(model) as count:
        model(x)
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).sum(), xr)
        with torch.no_grad():
            model(x[:2])
    assert (count.forwards, count.backwards, count.total) == (12, 5, 17)
    assert not model._forward_hooks
    model(x)
    assert count.forwards == 12  # nothing counted after the block


def test_pgd_and_gradient_estimation_counts_are_exact() -> None:
    model, x, y = far_from_boundary()
    threat = ThreatModel("linf", 0.05)
    with count_queries(model) as count:
        create_attack("pgd", steps=7)(model, x, y, threat)
    # one entry check, steps + 1 forwards (the last one checks the final iterate), one backward per step
    assert (count.forwards, count.backwards) == (5 * (1 + 8), 5 * 7)
    ge = create_attack("gradient-estimation", steps=4, samples_schedule=[[2, 3], [4, 5]])
    with count_queries(model) as count:
        ge(model, x, y, threat)
    assert count.backwards == 0 and count.forwards == ge.last_total_queries == 5 * (1 + 2 * 7 + 2 * 11)


def test_runner_records_queries_of_every_attack() -> None:
    model, x, y = far_from_boundary()
    outcome = run_verified(model, create_attack("pgd", steps=3), x, y, ThreatModel("linf", 0.05), batch_size=2)
    assert outcome.queries == 5 * (1 + 4) + 5 * 3  # three batches, summed; the runner's own re-check not included


def test_staged_schedule() -> None:
    assert staged_schedule([[2, 10], [5, 20]], 7) == [10, 10, 20, 20, 20, 20, 20]
    assert staged_schedule([[20, 50], [40, 500], [100, 10000]], 100)[19:21] == [50, 500]
    for bad in ([], [[3, 1], [3, 2]], [[2, 0]], [[2]], "x"):
        with pytest.raises(AttackConfigError, match="samples_schedule"):
            create_attack("gradient-estimation", samples_schedule=bad)
