"""The budget check's larger budgets: which parameter of an attack is its budget, multiplied by ``factor``
(:func:`scale_budget`); the opposite, every budget capped for smoke runs and benchmarks (:func:`cap_budget`).

Kept apart from :mod:`kwta_robust.budget_check` (which runs the re-runs) so that the eval config can refuse, before
anything runs, a ``factor`` whose scaled budget would exceed the count bound (:data:`attacks.errors.COUNT_LIMIT`):
the re-run attack would otherwise refuse it only after every other attack had run.
"""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any, Mapping

from attacks.base import attack_defaults
from kwta_robust.bpda_seeds import stage_inner_attacks


def _scale_in_place(attack: str, params: dict, factor: int) -> bool:
    """Scale ``params`` in place; returns whether the attack has a budget (its queries then grow ``factor`` times)."""
    defaults = attack_defaults(attack)
    if attack == "bpda":
        if params.get("stage_steps") is not None:  # the steps per temperature stage
            params["stage_steps"] = [None if n is None else n * factor for n in params["stage_steps"]]
            inner_defaults = attack_defaults(params.get("inner", defaults["inner"]))
            nulls = [n is None and takes for n, takes in zip(params["stage_steps"], _stages_take_steps(params))]
            if any(nulls) and "steps" in inner_defaults:  # a null entry's share of the total (FGSM's: none)
                inner = params.setdefault("inner_params", {})
                inner["steps"] = inner.get("steps", inner_defaults["steps"]) * factor
            return True
        inner = params.setdefault("inner_params", {})
        return _scale_in_place(params.get("inner", defaults["inner"]), inner, factor)
    if attack == "gradient-estimation":
        if params.get("samples_schedule") is not None:
            params["samples_schedule"] = [[until, n * factor] for until, n in params["samples_schedule"]]
        for key in ("samples_start", "samples_end"):
            params[key] = params.get(key, defaults[key]) * factor
        return True
    if "eot_samples" in params or "eot_samples" in defaults:
        # EOT's budget is steps x draws per gradient (Athalye et al. 2018). As for gradient estimation, the larger
        # budget is more draws per gradient: more steps on as noisy a gradient leave its variance, the first thing a
        # randomized model's check must reduce, where it was; factor x the queries, as every other attack's
        params["eot_samples"] = params.get("eot_samples", defaults["eot_samples"]) * factor
        return True
    if params.get("max_queries") is not None:  # a query cap (HopSkipJump, Boundary) would hold the steps back
        params["max_queries"] *= factor
    for key in ("n_queries", "steps"):
        if key in params or key in defaults:
            params[key] = (params[key] if key in params else defaults[key]) * factor  # a default only if not given
            return True
    return False


def cap_stage_steps(params: dict, inner: dict, steps: int) -> None:
    """BPDA's ``stage_steps`` in ``params`` at most ``steps`` each, in place (:func:`~kwta_robust.budget_check.
    cap_budget`); its inner attack's (capped) parameters ``inner`` keep a total only for null entries to share, at
    most ``steps`` each."""
    given = params["stage_steps"]
    params["stage_steps"] = [None if n is None else min(n, steps) for n in given]
    shares = sum(1 for n, takes in zip(given, _stages_take_steps(params)) if n is None and takes)
    if shares and "steps" in inner:  # a null entry of a stage whose inner takes no steps (FGSM) takes no share
        inner["steps"] = sum(n or 0 for n in params["stage_steps"]) + steps * shares
    else:
        inner.pop("steps", None)


def _stages_take_steps(params: dict) -> list[bool]:
    """Per entry of BPDA's ``stage_steps``: whether that stage's inner attack (its ``stage_params`` entry's
    ``inner``, else BPDA's ``inner``) has a ``steps`` budget (:func:`attacks.bpda_stages.stage_budgets`)."""
    return ["steps" in attack_defaults(name) for name in stage_inner_attacks(params, len(params["stage_steps"]))]


def scale_budget(attack: str, params: dict, factor: int) -> dict | None:
    """A copy of ``params`` with the budget of ``attack`` multiplied by ``factor`` (integer >= 1): Square's
    ``n_queries``; gradient estimation's noise pairs per step (``samples_start``/``samples_end`` or every stage of
    ``samples_schedule``); otherwise ``steps`` (BPDA: of its inner attack, whose step split over temperature stages
    follows, or every entry of its ``stage_steps`` and the total its null entries share), and a ``max_queries`` cap
    with them; EOT (also as BPDA's inner
    attack) its draws per gradient ``eot_samples``, as gradient estimation its noise pairs.
    ``None`` when the attack has no budget (FGSM: a single deterministic step)."""
    scaled = copy.deepcopy(dict(params))
    return scaled if _scale_in_place(attack, scaled, factor) else None


def largest_scaled(params: Any, scaled: Any) -> int:
    """The largest integer of ``scaled`` (:func:`scale_budget` of ``params``) that scaling changed or added (0 if
    none): the budget the re-run would build its attack with. Seeds and other untouched integers do not count."""
    if isinstance(scaled, dict):
        own = params if isinstance(params, dict) else {}
        return max((largest_scaled(own.get(k), v) for k, v in scaled.items()), default=0)
    if isinstance(scaled, list):
        own = params if isinstance(params, list) and len(params) == len(scaled) else [None] * len(scaled)
        return max((largest_scaled(a, b) for a, b in zip(own, scaled)), default=0)
    changed = isinstance(scaled, int) and not isinstance(scaled, bool) and scaled != params
    return scaled if changed else 0


#: The budgets :func:`cap_budget` caps, as multiples of its ``steps``.
CAPPED_BUDGETS: Mapping[str, int] = MappingProxyType({
    "steps": 1, "n_queries": 2, "samples_start": 1, "samples_end": 1, "n_target_classes": 1, "fit_steps": 5,
    "distill_steps": 5,
})


def cap_budget(attack: str, params: Mapping[str, Any], steps: int, queries: int | None = None) -> dict:
    """A copy of ``params`` with every budget of ``attack`` at most ``steps`` — the opposite of :func:`scale_budget`,
    for smoke runs and for benchmarks that measure something other than strength (memory, scale-out, the quickstart
    test): ``steps`` (BPDA: its inner attack's, at least one per temperature stage, or every entry of
    ``stage_steps`` and the total its null entries share, :func:`cap_stage_steps`), Square's ``n_queries`` at
    ``queries`` (default ``2 · steps``), gradient estimation's noise pairs per step (``samples_start`` /
    ``samples_end``, every stage of ``samples_schedule``, whose stages then start at iterations 1, 2, ...) and a
    targeted attack's target classes at ``steps``, a learned surrogate's fitting and distillation at ``5 · steps``
    (:data:`CAPPED_BUDGETS`). Budgets the attack takes by default are capped too."""
    capped = copy.deepcopy(dict(params))
    defaults = attack_defaults(attack)
    for key, multiple in CAPPED_BUDGETS.items():
        if key in capped or key in defaults:
            limit = queries if key == "n_queries" and queries is not None else multiple * steps
            capped[key] = min(capped.get(key, defaults[key]), limit)
    if capped.get("samples_schedule") is not None:
        capped["samples_schedule"] = [[i + 1, min(n, steps)] for i, (_, n) in enumerate(capped["samples_schedule"])]
    if attack == "bpda":
        inner = cap_budget(capped.get("inner", defaults["inner"]), capped.get("inner_params") or {}, steps, queries)
        if capped.get("stage_steps") is not None:  # steps per stage, not in total (but what null entries share)
            cap_stage_steps(capped, inner, steps)
        elif capped.get("temperature_schedule") and "steps" in inner:
            inner["steps"] = max(inner["steps"], len(capped["temperature_schedule"]))
        capped["inner_params"] = inner
    return capped
