"""The flags a run will raise from its layer probe and the layers its BPDA attacks act on, raised by a dry run.

Some of the run's checks read, of the attacks, only which ran (label, registry name, kind, params) and which layers
each BPDA attack acted on (``AttackResult.bpda_layers``), next to the layer probe (``record.detection``, with the
straight-through probe of modules named in ``bpda_layers``, :mod:`kwta_robust.straight_through`) — never their
numbers: :data:`LAYER_CHECKS`. A dry run knows all of that before the first attack, so it runs those checks, the
run's own code (:func:`kwta_robust.diagnostics.run_checks`), over its record with one placeholder result per planned
unit (:func:`planned_results`: nothing attacked, every sample ``-1``) and prints their flags in the run's words. A
``--bpda-layer`` naming a normalization layer instead of the model's kWTA gates then says, before hours of attacks,
that BPDA would pass the gradient straight through a module it cannot relax (``bpda-straight-through``; BPDA needs
``g(x) ≈ f(x)``, Athalye, Carlini & Wagner, ICML 2018, §4.1) and leave the gates to plain gradients
(``gates-without-bpda``; Tramèr et al., NeurIPS 2020).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from attacks.base import attack_info
from kwta_robust.diagnostics import run_checks
from kwta_robust.results import Accuracy, AttackResult, EvalRecord, Flag

#: The run's checks whose verdict and message depend on the layer probe and on which attacks run with which BPDA
#: layers alone, not on the attacks' results: a dry run raises them as the run will.
LAYER_CHECKS: tuple[str, ...] = ("gates-without-bpda", "selections-outside-layers", "piecewise-constant-layers",
                                 "bpda-straight-through")  # in the order the run's checks are registered


def planned_results(units: Sequence[Any], cfg: Any) -> list[AttackResult]:
    """One placeholder :class:`~kwta_robust.results.AttackResult` per unit of the plan's attacks (``units``: its
    :class:`~kwta_robust.dry_run.UnitPlan` rows; the sanity attack's, which the run keeps in ``record.sanity``, left
    out), threat point by threat point as the run appends them: its label, registry name, kind, params, transfer
    source and BPDA layers, and nothing attacked (no samples, no flags)."""
    sanity = cfg.diagnostics.sanity.label if cfg.diagnostics.sanity is not None else None
    attacks = [u for u in units if u.label != sanity]
    results = []
    for threat in cfg.threats:
        for eps, text in zip(threat.epsilons, threat.eps_text):
            results += [AttackResult(
                label=u.label, attack=u.attack, kind=u.kind, single_step=attack_info(u.attack).single_step,
                params=dict(u.params), norm=threat.norm, eps=eps, eps_text=text, position=position, seed=cfg.seed,
                cumulative=cfg.mode == "cascade", robust=Accuracy.of(0, 0), n_attacked=0, n_broken=0, flags=[],
                wall_time_s=0.0, violations=0, max_violation=0.0, source=u.source,
                bpda_layers=None if u.bpda_layers is None else dict(u.bpda_layers), settings=u.settings)
                for position, u in enumerate(attacks) if (threat.norm, text) in u.points]
    return results


def layer_flags(record: EvalRecord, units: Sequence[Any], cfg: Any) -> list[Flag]:
    """The flags of :data:`LAYER_CHECKS` the run will raise over ``record`` (its layer probe in ``detection``) once
    the planned ``units`` ran (:func:`planned_results`), with the config's thresholds; none with the diagnostics off
    (the run raises no flag then). ``record`` is left as it was."""
    if not cfg.diagnostics.enabled:
        return []
    return run_checks(replace(record, results=planned_results(units, cfg)), cfg.diagnostics.thresholds, LAYER_CHECKS)
