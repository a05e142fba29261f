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


def _scale_in_place(attack: str, params: dict, factor: int) -> bool:
    """Scale ``params`` in place; returns whether the attack has a budget (its queries then grow ``factor`` times)."""
    defaults = attack_defaults(attack)
    if attack == "bpda":
        if params.get("stage_steps") is not None:  # the steps per temperature stage
            params["stage_steps"] = [n * factor for n in params["stage_steps"]]
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


def scale_budget(attack: str, params: dict, factor: int) -> dict | None:
    """A copy of ``params`` with the budget of ``attack`` multiplied by ``factor`` (integer >= 1): Square's
    ``n_queries``; gradient estimation's noise pairs per step (``samples_start``/``samples_end`` or every stage of
    ``samples_schedule``); otherwise ``steps`` (BPDA: of its inner attack, whose step split over temperature stages
    follows, or every entry of its ``stage_steps``), and a ``max_queries`` cap with them; EOT (also as BPDA's inner
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
    ``stage_steps``), Square's ``n_queries`` at ``queries`` (default ``2 · steps``), gradient estimation's noise
    pairs per step (``samples_start``/``samples_end``, every stage of ``samples_schedule``, whose stages then start
    at iterations 1, 2, ...) and a targeted attack's target classes at ``steps``, a learned surrogate's fitting and
    distillation at ``5 · steps`` (:data:`CAPPED_BUDGETS`). Budgets the attack takes by default are capped too."""
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
        if capped.get("stage_steps") is not None:  # steps per stage, not in total
            inner.pop("steps", None)
            capped["stage_steps"] = [min(n, steps) for n in capped["stage_steps"]]
        elif capped.get("temperature_schedule") and "steps" in inner:
            inner["steps"] = max(inner["steps"], len(capped["temperature_schedule"]))
        capped["inner_params"] = inner
    return capped
