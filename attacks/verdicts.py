"""The runner's verdict on an input: one forward pass, or the plurality of several draws of a randomized model.

A deterministic classifier's verdict is ``argmax`` of its logits. A *randomized* one (noise injection, stochastic
activations, random input transformations) gives a different prediction on each call, so one call is one draw of
a random verdict: an attack that "breaks" a sample on one lucky draw, and a cascade that keeps the union of such
draws over many attacks, overstates what the attacks achieved (Athalye, Carlini & Wagner, ICML 2018, §4.2; Carlini
et al. 2019, "On evaluating adversarial robustness", §5.10).

With ``draws > 1`` the verdict is that of the *plurality classifier* ``g(x) = argmax_c P(f(x) = c)`` (the
classifier randomized smoothing certifies, Cohen, Rosenfeld & Kolter, ICML 2019), estimated from ``draws``
forward passes: ``pred`` is the most frequent prediction, ties counted against the true class (conservative);
``margin`` is ``max_{j≠y} p_j − p_y`` over the vote shares ``p`` (in ``[−1, 1]``; positive or zero: broken);
``error_rate`` is ``1 − p_y``, the fraction of draws misclassified (the per-sample estimate of ``P(f(x) ≠ y)``, from
which expected accuracy is computed). Of several draws, one with a non-finite logit votes for no class (wrong).
With ``draws == 1`` it is one forward pass: the logits' ``argmax``, the logit margin ``max_{j≠y} z_j − z_y`` and
``error_rate`` 0 or 1; logits that are not all finite are wrong there too (:func:`finite_predictions`: torch's
``argmax`` takes NaN as the largest, so a row of NaN "predicted" class 0 and counted right on class-0 samples).

Seeding: a randomized model draws from torch's *global* generator (``torch.randn_like`` …), which attacks never
touch (they use their own generators). :func:`global_rng` forks it and seeds it for one batch, so the same seed
gives the same draws whatever ran before — in another order, in another shard, on resume — and the caller's
state is restored. A model drawing from a generator of its own cannot be seeded from outside.

A model's draws depend on the shape of its input batch (``torch.randn_like(x)`` gives row ``i`` other noise in a
batch of 3 than in a batch of 5), so :func:`classify_in_batch` re-classifies a few rows of a batch as the *whole*
fixed batch: a sample's verdict then depends on its own input, its position and the seed — not on which of its
batch-mates are still being attacked. With the seed of the clean pass, every verdict on a sample reuses the clean
verdict's draws (common random numbers): a clean and an adversarial verdict differ by the input, not by the noise.

Shapes: ``x`` ``[N, ...]``; ``y`` ``[N]`` int64; every output ``[N]`` on ``x.device``.
This module never imports ``kwta_robust``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from attacks.base import batched_logits, margin_loss, rng_scope
from attacks.errors import check_count

#: ``rng_seed_for(batch_ids [B] int64) -> int``: the seed of the global RNG for one batch, from its samples' ids.
BatchSeed = Callable[[Tensor], int]


@dataclass
class Verdict:
    """The runner's verdict on ``N`` inputs: ``pred`` int64, ``margin`` and ``error_rate`` float64 (module doc).

    ``non_finite`` bool: whether any of the input's draws had a NaN or infinite logit. A plurality's margin is a
    vote share, finite whatever the logits were, so without it a NaN draw could not be told from a wrong one
    (the noise probes count these inputs for the ``non-finite-logits`` diagnostic); ``None``: not recorded."""

    pred: Tensor
    margin: Tensor
    error_rate: Tensor
    non_finite: Tensor | None = None


@contextlib.contextmanager
def global_rng(seed: int | None) -> Iterator[None]:
    """Fork torch's global RNG (CPU and initialised CUDA devices) and seed it with ``seed``; the caller's state is
    restored afterwards. ``None``: leave the global RNG alone (no fork)."""
    if seed is None:
        yield
        return
    with rng_scope(seed):
        yield


def finite_predictions(logits: Tensor, y: Tensor, finite: Tensor | None = None) -> Tensor:
    """``logits.argmax(1)`` ``[N]``, but the first class other than ``y`` where a row of ``logits`` ``[N, K]`` holds
    a NaN or infinity: a model that outputs no number has not classified the input (as one draw of a randomized
    model votes for no class), and ``argmax`` would read a NaN as the largest logit. ``finite``: the rows' mask
    ``logits.isfinite().all(1)`` where the caller has it already."""
    finite = logits.isfinite().all(dim=1) if finite is None else finite
    return torch.where(finite, logits.argmax(dim=1), (y == 0).long())  # no host sync


def classify(model: nn.Module, x: Tensor, y: Tensor, draws: int = 1, batch_size: int = 512) -> Verdict:
    """The verdict on ``x`` ``[N, ...]`` with labels ``y`` ``[N]``: one forward pass, or the plurality of ``draws``
    (module docstring). No gradients; the caller sets eval mode and, for a randomized model, the RNG scope."""
    check_count("draws", draws)
    if not len(x):  # no input: no model call
        empty = torch.empty(0, dtype=torch.float64, device=x.device)
        return Verdict(torch.empty(0, dtype=torch.long, device=x.device), empty, empty.clone(),
                       torch.empty(0, dtype=torch.bool, device=x.device))
    if draws == 1:
        logits = batched_logits(model, x, batch_size)
        finite = logits.isfinite().all(dim=1)  # a row not all finite is wrong, and has no margin (NaN: none)
        pred = finite_predictions(logits, y, finite)
        margin = margin_loss(logits, y).to(torch.float64).where(finite, float("nan"))
        return Verdict(pred, margin, (pred != y).to(torch.float64), ~finite)
    counts: Tensor | None = None
    non_finite = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(draws):
        logits = batched_logits(model, x, batch_size)
        votes = torch.nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1]).to(torch.float64)
        finite = logits.isfinite().all(dim=1)
        votes *= finite[:, None]  # a draw with NaN/inf logits votes for no class: wrong
        non_finite |= ~finite
        counts = votes if counts is None else counts + votes
    shares = counts / draws
    true_share = shares.gather(1, y[:, None]).squeeze(1)
    against_true = shares.scatter_add(1, y[:, None], torch.full_like(true_share[:, None], -0.5 / draws))
    return Verdict(against_true.argmax(dim=1), margin_loss(shares, y), 1.0 - true_share, non_finite)


def classify_in_batch(model: nn.Module, batch_x: Tensor, batch_y: Tensor, rows: Tensor, inputs: Tensor, draws: int,
                      seed: int | None, batch_size: int = 512) -> Verdict:
    """The verdict on ``inputs`` ``[R, ...]`` placed at positions ``rows`` ``[R]`` int64 of one fixed batch
    ``batch_x`` ``[B, ...]`` (labels ``batch_y`` ``[B]``; the other rows keep their inputs): the whole batch is
    classified with ``draws`` draws inside :func:`global_rng` seeded ``seed``, and the verdicts of ``rows`` are
    returned (module docstring: independent of the batch-mates' inputs, common random numbers)."""
    full = batch_x.clone()
    full[rows] = inputs
    with global_rng(seed):
        verdict = classify(model, full, batch_y, draws, batch_size)
    non_finite = None if verdict.non_finite is None else verdict.non_finite[rows]
    return Verdict(verdict.pred[rows], verdict.margin[rows], verdict.error_rate[rows], non_finite)


def classify_batches(model: nn.Module, x: Tensor, y: Tensor, *, draws: int = 1, batch_size: int = 512,
                     ids: Tensor | None = None, rng_seed_for: BatchSeed | None = None) -> Verdict:
    """:func:`classify` batch by batch over the fixed partition of ``x`` into ``batch_size`` consecutive samples,
    each batch's draws inside :func:`global_rng` seeded by ``rng_seed_for(ids of the batch)`` (``ids`` default
    ``0..N-1``; no ``rng_seed_for``: the global RNG as it is)."""
    n = x.shape[0]
    if n == 0 or rng_seed_for is None:
        return classify(model, x, y, draws, batch_size)
    ids = torch.arange(n) if ids is None else ids
    parts = []
    for start in range(0, n, batch_size):
        with global_rng(rng_seed_for(ids[start:start + batch_size])):
            parts.append(classify(model, x[start:start + batch_size], y[start:start + batch_size], draws, batch_size))
    return Verdict(*(torch.cat([getattr(p, name) for p in parts]) for name in ("pred", "margin", "error_rate",
                                                                               "non_finite")))
