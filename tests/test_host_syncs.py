"""Host-device synchronisations per attack step, counted on the CPU (:mod:`tests.host_syncs`) on the simulated CUDA
device (:mod:`tests.simulated_device`: the accelerator's code paths, e.g. :func:`attacks.progress.check_interval`'s
read every :data:`~attacks.progress.ACCELERATOR_CHECK_STEPS` steps, and the kWTA layer's top-k, not its CPU-only
NumPy selection).

Each family runs at two step counts on the same inputs; the syncs the extra steps add, divided by the extra steps,
must stay under the family's bound (stated per case): a constant per step, never a count that grows with the steps.
A small ``eps`` keeps most samples unbroken, so every step runs on a full batch.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.progress import ACCELERATOR_CHECK_STEPS
from tests.attack_fixtures import trained_cnn
from tests.fuzz46_wild import Inline
from tests.host_syncs import HostSyncs
from tests.simulated_device import simulated_cuda

PROGRESS = 1 / ACCELERATOR_CHECK_STEPS  # one read of which samples are broken every 8 steps


def test_the_counter_counts_each_kind_of_read_and_nothing_else() -> None:
    t, mask, idx = torch.arange(6.0), torch.tensor([True, False] * 3), torch.tensor([0, 2])
    with HostSyncs() as syncs:
        t.sum().item(), bool(t.any()), float(t[0]), int(t[1]), t.tolist(), t.cpu(), t.numpy()
        torch.nonzero(t), t.masked_select(mask), t[mask], torch.where(mask), t.unique(), torch.equal(t, t)
        t[mask] = 0.0
    assert syncs.total == 14, syncs.counts
    with HostSyncs() as syncs:  # gathers, scatters, torch.where(cond, a, b), masks as arithmetic: no read
        t[idx], torch.where(mask, t, 0.0), t * mask, t.index_fill(0, idx, 1.0), t.topk(2), t.amax()
    assert syncs.total == 0, syncs.counts


def _kwta() -> tuple[nn.Module, Tensor, Tensor]:
    model, x, y = trained_cnn("kwta")
    return model.requires_grad_(False), x[:12], y[:12]


def _inline(spec: dict) -> Callable[[], tuple[nn.Module, Tensor, Tensor]]:
    """A foreign model with its gate written inline in a block's ``forward`` (tests/fuzz46_wild.py)."""

    def build() -> tuple[nn.Module, Tensor, Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Inline(4, spec, True), nn.Flatten(),
                                  nn.Linear(256, 10)).eval().requires_grad_(False)
        x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        return model, x, model(x).argmax(1)

    return build


INLINE = {"1": {"kind": "inline"}}
TOPK = {"style": "topk", "method": "topk", "grouping": "sample", "ratio": 0.3}
CASES = {
    # name: (model, attack of `steps` steps, norm, eps, bound on syncs per step)
    "pgd": (_kwta, lambda s: create_attack("pgd", steps=s), "linf", 0.01, PROGRESS),
    "apgd-ce": (_kwta, lambda s: create_attack("apgd-ce", steps=s), "linf", 0.01, PROGRESS),
    "cw": (_kwta, lambda s: create_attack("cw", steps=s, search_steps=1), "l2", 0.1, PROGRESS),
    "bpda-smooth-kwta": (_kwta, lambda s: create_attack("bpda", surrogate="smooth", inner_params={"steps": s}),
                         "linf", 0.01, PROGRESS),
    # per gate call: one screen (one read) of each floating-point result after the top-k up to the gate (two here:
    # the mask's float copy, the product), then the grouping's fit (two reads: attacks/gate_fits_batched); before: 5,
    # the mask's copy screened again for a gate of tied count (attacks.tied_gates), now read from a ScreenMemo
    "bpda-inline-topk": (_inline(TOPK), lambda s: create_attack(
        "bpda", surrogate="smooth", inner_params={"steps": s}, layers=INLINE), "linf", 0.01, 4 + PROGRESS),
    # h[(f < t).view_as(h)] = 0 on the tensor topk ranked (through its view f; attacks/mask_assign.py): per gate
    # call the assignment's own read (a boolean-mask index, as without BPDA), one screen of the tensor it wrote
    # against its copy from before, then the grouping's fit (two reads); before: refused, no gate BPDA could read
    "bpda-inline-setitem": (_inline({"style": "inplace", "how": "index", "ratio": 0.3}), lambda s: create_attack(
        "bpda", surrogate="smooth", inner_params={"steps": s}, layers=INLINE), "linf", 0.01, 4 + PROGRESS),
    # per gate call: one read for the 0/1 mask's float copy (no x · mask), two for the gate (x · mask, then its
    # pooled values); before: up to six per candidate, the pool's input a candidate twice
    "bpda-inline-pool": (_inline({"style": "pool"}), lambda s: create_attack(
        "bpda", surrogate="smooth", inner_params={"steps": s}, layers=INLINE), "linf", 0.01, 3 + PROGRESS),
    # an LWTA (blocks of 2 channels, one winner each) read after its amax: per gate call two screens (the product
    # on the blocks' view, then that product viewed as h against h; against the product itself, its own memory, it
    # is screened out with no read) and every grouping's fit of both (attacks.gates.fit_groupings), each one or two
    # reads, the whole-channel check and the next grouping's count one together (gate_fits_batched.PairFits): 16.
    # Before: 25, a third screen, a read more for each whole-channel check, and the groupings fitted again for one
    # of one winner per group (attacks.one_winner, now given the fits made); 45 before that, the second pass by the
    # plain fits, about eight reads each
    "bpda-inline-lwta": (_inline({"style": "lwta", "block": 2, "how": "amax"}), lambda s: create_attack(
        "bpda", surrogate="smooth", inner_params={"steps": s}, layers=INLINE), "linf", 0.01, 16 + PROGRESS),
    # per step: which samples still stand (one read: the batch shrinks as they break; before, five boolean masks
    # more, for the best iterate, its margin and the broken samples)
    "gradient-estimation": (_kwta, lambda s: create_attack(
        "gradient-estimation", steps=s, samples_start=4, samples_end=4), "linf", 0.01, 1),
}


def _syncs(build: Callable, make: Callable[[int], Callable], norm: str, eps: float, steps: int) -> int:
    model, x, y = build()
    with simulated_cuda() as sim:
        attack = make(steps)
        with HostSyncs() as syncs:
            attack(model.to("cuda"), x.to("cuda"), y.to("cuda"), ThreatModel(norm, eps))
    assert sim.device_ops > 0 and not sim.findings
    return syncs.total


@pytest.mark.parametrize("name", list(CASES))
def test_syncs_per_attack_step_are_bounded_by_a_constant(name: str) -> None:
    build, make, norm, eps, bound = CASES[name]
    few, many = (_syncs(build, make, norm, eps, steps) for steps in (8, 24))
    assert 0 <= many - few <= bound * 16, (few, many)
