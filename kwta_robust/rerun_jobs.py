"""The budget check's re-run batches as plain data, and running one (here, or in another process of a sharded run).

One :class:`RerunBatch` is one batch of one extra run of :mod:`kwta_robust.budget_check`: an attack, its scaled
parameters and seed, a threat point and the sampled survivors of one batch of the evaluation's fixed partition. It
holds no tensors and no model, so a worker process can run it from the config alone (:mod:`kwta_robust.shard_jobs`).

Randomized models (:mod:`kwta_robust.randomness`): the attack runs with torch's global RNG seeded from the job's
seed and the batch's positions; each verdict is the plurality of ``draws`` draws of the whole batch under
``verdict_seed`` — the seed of the evaluation's clean pass on that batch, so a survivor the extra run leaves as it
was keeps its clean verdict's draws (common random numbers, :func:`attacks.verdicts.classify_in_batch`) and the
check counts what the larger budget broke, not what new draws flipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.cascade import run_verified
from kwta_robust.config import derive_seed


@dataclass(frozen=True)
class RerunBatch:
    """One batch of one extra run, as plain data (a job another process can run): the attack ``attack``
    (registry name; ``label`` in the record) with ``params`` and ``seed`` at ``norm``/``eps`` on the sampled
    survivors ``positions`` (indices into the evaluated samples, all in one batch of the run's ``batch_size``),
    each verdict the plurality of ``draws`` forward passes drawn under ``verdict_seed`` (module docstring; ``None``:
    the global RNG as the attack left it)."""

    label: str
    attack: str
    params: dict
    seed: int
    norm: str
    eps: float
    positions: tuple[int, ...]
    draws: int = 1
    verdict_seed: Optional[int] = None


#: What one re-run batch gives back: the positions it broke (ascending) and its queries.
BatchOutcome = tuple[list[int], Optional[int]]
#: Runs re-run batches (anywhere: here, on other processes) and returns their outcomes in the same order.
BatchRunner = Callable[[Sequence[RerunBatch]], Sequence[BatchOutcome]]


def run_rerun_batch(model: nn.Module, x: Tensor, y: Tensor, job: RerunBatch, batch_size: int,
                    bpda_layers: Mapping[str, Mapping[str, Any]] | None = None) -> BatchOutcome:
    """Attack ``job.positions`` of ``x`` ``[n, ...]``, ``y`` ``[n]`` with a fresh attack seeded ``job.seed`` (the
    same for every batch of the run, which is independent of the other batches: it can run anywhere); the
    positions broken and the queries spent."""
    layers = (bpda_layers or {}).get(job.label)
    extra = {} if layers is None else {"layers": dict(layers)}
    attack = create_attack(job.attack, **{**job.params, "seed": job.seed, **extra})
    sampled = torch.tensor(job.positions, dtype=torch.long, device=x.device)
    active = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    active[sampled] = True
    outcome = run_verified(model, attack, x, y, ThreatModel(job.norm, job.eps), active, batch_size, draws=job.draws,
                           rng_seed_for=lambda ids: derive_seed(job.seed, "model-rng", *ids.tolist()),
                           verdict_seed_for=lambda _: job.verdict_seed, label=job.label)
    return sampled[outcome.success[sampled]].tolist(), outcome.queries
