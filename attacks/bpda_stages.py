"""BPDA's stages: how a total step budget splits over them, and which survivors a later stage attacks.

Part of :mod:`attacks.bpda` (Athalye et al., ICML 2018; the staged smooth-surrogate BPDA of
``benchmarks/STRENGTH.md``): ``stage_keep`` spends a later stage's steps on the samples closest to
misclassification (successive halving over samples). Shapes: indices ``[M]`` (int64, ascending), margins ``[M]``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from attacks.base import create_attack
from attacks.errors import AttackConfigError
from attacks.seed_draws import wrapped_draw

__all__ = ["closest_to_breaking", "split_steps", "stage_error", "stage_budgets", "stage_zero_draw"]


def stage_zero_draw(params: Mapping[str, Any]) -> str:
    """What a BPDA attack draws first from its seed (:mod:`attacks.seed_draws`): stage 0's inner attack (its
    ``stage_params[0].inner``, else ``inner``) given ``inner_params`` and that stage's entry runs with the seed unless
    ``inner_params`` sets another, so its first draw, else a randomized model's noise (BPDA's ``rng_scope``). Its
    surrogate fits draw from seeds derived from it, stage ``i``'s temperatures from ``seed + i`` and its inner attack
    from ``b + i`` (``b``: ``inner_params.seed``, else the seed; ``kwta_robust.bpda_seeds`` compares them by stage)."""
    inner_params = params.get("inner_params") if isinstance(params.get("inner_params"), Mapping) else {}
    entries = params.get("stage_params")
    first = entries[0] if isinstance(entries, Sequence) and entries and isinstance(entries[0], Mapping) else {}
    inner = first.get("inner") or params["inner"]
    given = {**inner_params, **{k: v for k, v in first.items() if k != "inner"}}
    return wrapped_draw(inner, given, params.get("seed"))


def split_steps(total: int, stages: int) -> list[int]:
    """Split ``total`` steps over ``stages`` (earlier stages get the remainder; at least one step each)."""
    base, rest = divmod(int(total), stages)
    return [max(1, base + (1 if i < rest else 0)) for i in range(stages)]


def stage_budgets(given: Sequence[int | None], takes_steps: Sequence[bool], total: int | None,
                  total_text: str) -> list[int | None]:
    """Each stage's ``steps``: its ``stage_steps`` entry where ``given`` sets one; the stages left unset (``None``)
    whose inner attack takes steps (``takes_steps``) share what ``total`` leaves after the set entries
    (:func:`split_steps`); a stage whose inner attack takes no steps (FGSM) gets ``None`` and no share. ``total``
    ``None``: an unset stage keeps its inner attack's own ``steps``. With no entry set the whole total is split (at
    least one step each); with some set, fewer steps left than unset stages is a one-line error naming
    ``total_text`` (where the total comes from, e.g. ``inner_params.steps``) and the fix."""
    unset = [i for i, (n, takes) in enumerate(zip(given, takes_steps)) if n is None and takes]
    budgets: list[int | None] = [n if takes else None for n, takes in zip(given, takes_steps)]
    if not unset or total is None:
        return budgets
    taken = sum(n for n in given if n is not None)
    left = total - taken
    if taken and left < len(unset):
        stages = ", ".join(map(str, unset))
        raise AttackConfigError(
            f"stage_steps: the set entries take {taken} of the {total} inner steps ({total_text}), leaving "
            f"{max(left, 0)} for the {len(unset)} stage(s) left null ({stages}); raise the total (inner_params.steps) "
            f"to at least {taken + len(unset)} or give those stages their steps")
    for i, share in zip(unset, split_steps(left, len(unset))):
        budgets[i] = share
    return budgets


def stage_error(i: int, name: str, inner: str, entry: Mapping[str, Any], built: Mapping[str, Any],
                exc: Exception) -> str:
    """The one-line message of stage ``i``'s inner attack ``name`` refusing ``built`` (``inner_params`` with the
    stage's ``stage_params`` ``entry`` on top, and BPDA's steps and seed) with ``exc``, led by the field at fault:
    ``stage_params[i]`` when the entry alone (with BPDA's steps and seed) is refused too, else ``inner_params`` (for
    a stage running another attack than BPDA's ``inner``: with the fix, give that parameter per stage)."""
    if entry:
        try:
            create_attack(name, **{k: v for k, v in built.items() if k in entry or k in ("steps", "seed")})
        except AttackConfigError:
            return f"stage_params[{i}]: {exc}"
    if name == inner:
        return f"inner_params: {exc}"
    return (f"inner_params: {exc} (stage {i} runs its own inner {name!r}; give the parameters only some stages' "
            "inner attacks take in those stages' stage_params)")


def closest_to_breaking(todo: Tensor, margin: Tensor, keep: float) -> Tensor:
    """The ``ceil(keep · len(todo))`` entries of ``todo`` (indices ``[M]``, ascending) whose ``margin`` (``[M]``,
    the best ``max_{j≠y} z_j - z_y`` found so far, all ``<= 0``) is largest — the samples closest to
    misclassification — in ascending order; ties go to the lower index. ``keep = 1``: ``todo`` itself."""
    if keep >= 1.0 or todo.numel() == 0:
        return todo
    n_keep = max(1, math.ceil(keep * todo.numel() - 1e-9))
    chosen = torch.sort(margin, descending=True, stable=True).indices[:n_keep]
    return todo[chosen.sort().values]

