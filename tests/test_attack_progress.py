"""The iterative attacks read their per-sample progress every step on the CPU and every few steps elsewhere
(:mod:`attacks.progress`): the interval must change which rows share a batch, never what the attack returns.

The accelerator's interval is exercised here on the CPU by replacing each attack module's ``check_interval``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import attacks.apgd
import attacks.gradient
import attacks.minimal
from attacks.base import ThreatModel, create_attack
from attacks.progress import ACCELERATOR_CHECK_STEPS, check_interval, record_first
from tests.attack_fixtures import CountingModel, robust_flags, trained_cnn
from tests.host_syncs import HostSyncs

ATTACK_MODULES = (attacks.gradient, attacks.apgd, attacks.minimal)

CASES = [
    ("pgd", {"steps": 12}, "linf", 0.1),
    ("pgd", {"steps": 6, "restarts": 2, "loss": "margin"}, "l2", 1.0),
    ("apgd-ce", {"steps": 20}, "linf", 0.1),
    ("apgd-dlr", {"steps": 12, "restarts": 2}, "l2", 1.0),
    ("apgd-t", {"steps": 8, "n_target_classes": 2}, "linf", 0.1),
    ("cw", {"steps": 15, "search_steps": 2}, "l2", 1.0),
    ("bpda", {"surrogate": "smooth", "inner": "apgd-ce", "stage_steps": [8, 16], "stage_keep": [1, 0.5],
              "temperature_schedule": [0.05, 0.03]}, "linf", 0.1),
]


@pytest.fixture(scope="module")
def kwta_cnn() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_cnn("kwta")
    return model.requires_grad_(False), x[:40], y[:40]


def _with_interval(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    for module in ATTACK_MODULES:
        monkeypatch.setattr(module, "check_interval", lambda device, _steps=steps: _steps)


def test_the_interval_is_one_step_on_the_cpu_and_a_few_elsewhere() -> None:
    assert check_interval(torch.device("cpu")) == 1
    assert ACCELERATOR_CHECK_STEPS > 1
    for device in ("cuda", "cuda:1", "mps", "meta"):
        assert check_interval(torch.device(device)) == ACCELERATOR_CHECK_STEPS


def test_record_first_keeps_each_rows_first_hit_only() -> None:
    out, taken = torch.zeros(5, 2), torch.zeros(5, dtype=torch.bool)
    rows = torch.tensor([4, 1, 2])
    record_first(out, taken, rows, torch.tensor([True, False, True]), torch.full((3, 2), 1.0))
    record_first(out, taken, rows, torch.tensor([True, True, True]), torch.full((3, 2), 2.0))
    assert torch.equal(taken, torch.tensor([False, True, True, False, True]))
    assert torch.equal(out[:, 0], torch.tensor([0.0, 2.0, 1.0, 0.0, 1.0]))  # rows 4 and 2 kept their first hit
    record_first(out, taken, torch.tensor([0]), torch.tensor([False]), torch.full((1, 2), 3.0))
    assert not bool(taken[0]) and float(out[0, 0]) == 0.0


@pytest.mark.parametrize(("name", "params", "norm", "eps"), CASES, ids=[c[0] + "-" + c[2] for c in CASES])
def test_every_interval_returns_the_same_adversarials(name, params, norm, eps, kwta_cnn, monkeypatch) -> None:
    """Intervals 1 (the CPU's), 3, the accelerator's and one longer than the run give the same outputs and the same
    per-sample verdicts, on a model where the attack breaks some samples and not others (so samples leave the batch
    mid-run). Same up to rounding: a batched kernel may round a row differently in a batch of another size (seen
    here once, 1.5e-8 on one sample of PGD-L2's second restart); every other case is bit-identical."""
    model, x, y = kwta_cnn
    threat = ThreatModel(norm, eps)
    outputs = []
    for steps in (1, 3, ACCELERATOR_CHECK_STEPS, 1000):
        _with_interval(monkeypatch, steps)
        outputs.append(create_attack(name, **params)(model, x, y, threat))
    robust = robust_flags(model, outputs[0], y)
    assert 0 < int(robust.sum()) < int((robust_flags(model, x, y)).sum())
    for other in outputs[1:]:
        assert torch.equal(robust_flags(model, other, y), robust)
        assert torch.allclose(other, outputs[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_between_reads_broken_samples_stay_in_the_batch(name: str, kwta_cnn, monkeypatch) -> None:
    """With an interval of 4 the batch shrinks only after the steps the host reads (PGD reads after its steps 3, 7,
    11, so its calls 4, 8, 12 shrink; APGD reads before its iterations 0, 4, 8, 12, so after its initial evaluation
    the calls 1, 5, 9, 13 do); with 1 it shrinks as samples break, and computes fewer rows in all."""
    model, x, y = kwta_cnn
    sizes = {}
    for steps in (1, 4):
        _with_interval(monkeypatch, steps)
        counting = CountingModel(model)
        create_attack(name, steps=16)(counting, x, y, ThreatModel("linf", 0.1))
        sizes[steps] = counting.batches[1:]  # the first call is the attack's clean check
    assert sum(sizes[1]) < sum(sizes[4])
    changes = [i for i in range(1, len(sizes[4])) if sizes[4][i] != sizes[4][i - 1]]
    phase = 0 if name == "pgd" else 1
    assert len(changes) >= 2 and all(i % 4 == phase for i in changes), sizes[4]
    assert any(sizes[1][i] != sizes[1][i - 1] and i % 4 != phase for i in range(1, len(sizes[1]))), sizes[1]


@pytest.mark.parametrize(("name", "params", "norm", "eps", "checks"), [
    ("pgd", {"steps": 16}, "linf", 0.1, 4),  # reads after steps 3, 7, 11, 15
    ("apgd-ce", {"steps": 16}, "linf", 0.1, 3),  # before iterations 4, 8, 12 (0 at every interval)
    ("cw", {"steps": 16, "search_steps": 2}, "l2", 1.0, 6),  # at steps 4, 8, 12 of each search (16 at every interval)
])
def test_a_progress_read_is_one_host_read(name, params, norm, eps, checks, kwta_cnn, monkeypatch) -> None:
    """Each progress read costs one host read, however many per-sample tensors the loop then compacts (the
    broken samples leave the batch by gathers): against a run with no read between the first and the last step,
    interval 4 adds exactly one host read per extra check. A boolean mask per tensor was one read each."""
    model, x, y = kwta_cnn
    reads = {}
    for steps in (1000, 4):
        _with_interval(monkeypatch, steps)
        with HostSyncs() as counter:
            create_attack(name, **params)(model, x, y, ThreatModel(norm, eps))
        reads[steps] = counter.total
    assert reads[4] - reads[1000] == checks, reads
