"""From saliency scores to keep-masks at an exact sparsity, layer-wise or global.

Every score-based method (magnitude, SNIP, GraSP, Early-Bird's per-epoch masks) ends here: given one score per
weight (higher = more important) it prunes exactly ``round(s · n)`` weights —

* ``"layerwise"``: in every layer separately (``n`` = that layer's size), so each layer has sparsity ``s``;
* ``"global"``: across all layers at once (``n`` = all weights), so layers with small scores lose more.

Weights already pruned (``keep`` false) are pruned first whatever their score, so masks only shrink across
iterative rounds. Ties are broken by a stable sort (lower flat index pruned first): the result is deterministic
and the count is exact, unlike a threshold that would keep every tied weight.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping

import torch
from torch import Tensor, nn

from kwta_robust.errors import is_finite_number, is_whole_number
from kwta_robust.sparsity.masks import Masks, apply_masks, current_masks

Scope = Literal["layerwise", "global"]
SCOPES: tuple[str, ...] = ("layerwise", "global")


def check_sparsity(sparsity: float, field: str = "sparsity") -> float:
    """``sparsity`` as a float in ``[0, 1)``; raises ``ValueError`` naming ``field`` otherwise."""
    if not is_finite_number(sparsity):
        raise ValueError(f"{field} must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{field} must be in [0, 1) (fraction of weights set to zero), got {sparsity!r}")
    return float(sparsity)


def prune_count(numel: int, sparsity: float) -> int:
    """Number of weights to prune for ``sparsity`` out of ``numel`` (nearest integer)."""
    return min(numel, int(round(sparsity * numel)))


def _lift_pruned(score: Tensor, keep: Tensor | None) -> Tensor:
    score = score.detach().float()
    if torch.isnan(score).any():
        raise ValueError("pruning scores contain NaN")
    if keep is None:
        return score
    return score.masked_fill(~keep.to(device=score.device, dtype=torch.bool), float("-inf"))


def _lowest(flat: Tensor, count: int) -> Tensor:
    """Flat indices of the ``count`` lowest entries (stable: lower index first among ties)."""
    return torch.sort(flat, stable=True).indices[:count]


def masks_from_scores(
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: Scope = "layerwise",
    keep: Mapping[str, Tensor] | None = None,
) -> Masks:
    """Boolean keep-masks pruning exactly ``round(sparsity · n)`` lowest-score weights per layer or globally.

    ``scores``: layer name → score tensor shaped like the weight (higher = keep). ``keep``: optional current masks
    (pruned entries stay pruned). Returns masks on the scores' devices.
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    lifted = {name: _lift_pruned(s, None if keep is None else keep[name]) for name, s in scores.items()}
    masks: Masks = {}
    if scope == "layerwise":
        for name, score in lifted.items():
            flat = score.flatten()
            mask = torch.ones_like(flat, dtype=torch.bool)
            mask[_lowest(flat, prune_count(flat.numel(), sparsity))] = False
            masks[name] = mask.view_as(score)
        return masks
    names = list(lifted)
    device = lifted[names[0]].device
    flat = torch.cat([lifted[n].flatten().to(device) for n in names])
    keep_all = torch.ones_like(flat, dtype=torch.bool)
    keep_all[_lowest(flat, prune_count(flat.numel(), sparsity))] = False
    start = 0
    for name in names:
        score = lifted[name]
        masks[name] = keep_all[start : start + score.numel()].view_as(score).to(score.device)
        start += score.numel()
    return masks


def random_masks(shapes: Mapping[str, torch.Size], sparsity: float | Mapping[str, float],
                 generator: torch.Generator, device: torch.device | str = "cpu") -> Masks:
    """Uniformly random keep-masks with exactly ``round(s · n)`` pruned weights in every layer.

    ``sparsity``: one value for all layers or one per layer (:func:`layer_sparsities`). ``generator`` (a seeded
    CPU ``torch.Generator``) makes the masks reproducible on any device.
    """
    per_layer = sparsity if isinstance(sparsity, Mapping) else {name: sparsity for name in shapes}
    masks: Masks = {}
    for name, shape in shapes.items():
        numel = math.prod(shape)
        order = torch.randperm(numel, generator=generator)
        mask = torch.ones(numel, dtype=torch.bool)
        mask[order[: prune_count(numel, check_sparsity(per_layer[name]))]] = False
        masks[name] = mask.view(shape).to(device)
    return masks


def iterative_targets(sparsity: float, rounds: int) -> list[float]:
    """Cumulative sparsity after each of ``rounds`` rounds that each prune the same fraction of the remaining
    weights: ``s_r = 1 - (1 - s)^(r/R)``; the last entry is exactly ``sparsity``.

    Each round prunes ``p = 1 - (1 - s)^(1/R)`` of what is left (Han et al. 2015; Frankle & Carbin 2019 use p=0.2).
    """
    sparsity = check_sparsity(sparsity)
    if not is_whole_number(rounds, 1):
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    targets = [1.0 - (1.0 - sparsity) ** (r / rounds) for r in range(1, rounds)]
    return targets + [sparsity]


def prune_by_scores(
    modules: Mapping[str, nn.Module],
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: Scope = "layerwise",
) -> Masks:
    """Install masks pruning the lowest ``scores`` to ``sparsity`` (already-pruned weights stay pruned).

    Returns the new keep-masks. The cumulative sparsity counts weights pruned earlier, so calling this with a
    growing sequence of targets (:func:`iterative_targets`) is iterative pruning.
    """
    keep = current_masks(modules)
    masks = masks_from_scores(scores, sparsity, scope, keep=keep)
    apply_masks(modules, masks)
    return masks


DISTRIBUTIONS: tuple[str, ...] = ("uniform", "erk")


def layer_sparsities(shapes: Mapping[str, torch.Size], sparsity: float,
                     distribution: str = "uniform") -> dict[str, float]:
    """Per-layer sparsity for a sparse-from-scratch network with overall ``sparsity``.

    * ``"uniform"``: every layer gets ``sparsity``.
    * ``"erk"`` (Erdős–Rényi-Kernel; Evci et al., ICML 2020, after Mocanu et al. 2018): layer density proportional
      to ``sum(shape) / prod(shape)`` (``(n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w)`` for a
      convolution), scaled so the kept weights add up to ``(1 - sparsity) · N``; layers whose density would exceed 1
      are kept dense and the rest rescaled. Small layers (first convolution, classifier) end up denser.
    """
    sparsity = check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if distribution == "uniform":
        return {name: sparsity for name in shapes}
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    budget = (1.0 - sparsity) * sum(sizes.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        remaining = budget - sum(sizes[n] for n in dense)
        scale = remaining / sum(raw[n] * sizes[n] for n in rest) if rest else 0.0
        over = [n for n in rest if scale * raw[n] > 1.0]
        if not over:
            break
        dense.update(over)
    return {name: 0.0 if name in dense else 1.0 - scale * raw[name] for name in shapes}
