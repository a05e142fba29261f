"""Is a plug-in attack reproducible? One batch attacked again with the same seeds, compared bit for bit.

The runner seeds everything an attack may draw from per batch (:mod:`kwta_robust.evaluate`): the generator it is
built with (``batch_seed``) and, inside :func:`attacks.rng.rng_scope`, torch's, NumPy's and Python's global RNGs
(``model_rng_seed``). So the built-in attacks write the same record on every run. A plug-in that draws from a
source the runner cannot seed (``os.urandom``, ``random.SystemRandom``, a ``torch.Generator`` seeded from the
clock) writes other numbers on each run. For every attack a plug-in registered (``Entry.built_in`` false), the
runner attacks the first attacked batch of the first threat point it runs at a second time, with the same
per-batch seeds, on the same device, and compares the projected outputs ``x_adv`` ``[B, C, H, W]`` bit for bit
(the model is deterministic by then, or flagged ``non-deterministic``). The finding goes to the record's
``provenance.plugin_repeats`` (a resumed run does not repeat it) and :func:`check_plugin_repeats` flags
``plugin-not-reproducible`` from it. Cost: one batch per plug-in attack per evaluation; ``diagnostics.enabled:
false`` skips it. Built-in attacks are never attacked twice.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import Tensor

from attacks.base import REGISTRY, threat_text
from kwta_robust.diagnostics_base import WARNING, Thresholds
from kwta_robust.results import EvalRecord, Flag

logger = logging.getLogger(__name__)

#: The provenance key of the findings: a list of ``{attack, norm, eps, eps_text, n, differing, max_abs_diff,
#: reproducible}`` (one per plug-in attack, at the threat point it was checked at).
PROVENANCE_KEY = "plugin_repeats"


def is_plugin_attack(name: str) -> bool:
    """``name`` is registered, and not by this repository's own code (a plug-in, a script, a notebook)."""
    return name in REGISTRY and not REGISTRY.info(name).built_in


def _findings(record: EvalRecord) -> list[dict]:
    """The repeat checks ``record.provenance`` holds (:data:`PROVENANCE_KEY`; entries that are no dict skipped)."""
    found = record.provenance.get(PROVENANCE_KEY)
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def checked_labels(record: EvalRecord) -> set[str]:
    """The labels of the attacks the record already holds a repeat check of."""
    return {e.get("attack") for e in _findings(record)}


def first_batch(active: Tensor, batch_size: int) -> Tensor:
    """``[N]`` bool: the active samples of the first batch (of ``batch_size`` consecutive positions) holding any."""
    idx = active.nonzero().flatten()
    if not idx.numel():
        return torch.zeros_like(active, dtype=torch.bool)
    lo = int(idx[0]) // batch_size * batch_size
    mask = torch.zeros_like(active, dtype=torch.bool)
    mask[lo:lo + batch_size] = active[lo:lo + batch_size]
    return mask


def repeat_entry(label: str, norm: str, eps: float, eps_text: str, first: Tensor, second: Tensor) -> dict[str, Any]:
    """The finding for one batch's two projected outputs ``[B, ...]`` (same seeds): numbers, not text."""
    same = (first == second) | (first.isnan() & second.isnan())
    rows = (~same).flatten(1).any(dim=1) if first.numel() else torch.zeros(0, dtype=torch.bool, device=first.device)
    diff = (first.double() - second.double()).abs()
    return {"attack": label, "norm": norm, "eps": float(eps), "eps_text": eps_text, "n": int(first.shape[0]),
            "differing": int(rows.sum()), "max_abs_diff": float(diff.nan_to_num(0.0).max()) if diff.numel() else 0.0,
            "reproducible": bool(same.all())}


def repeat_first_batch(rerun: Callable[[Tensor], Tensor], x_adv: Tensor, active: Tensor, batch_size: int,
                       label: str, norm: str, eps: float, eps_text: str) -> dict[str, Any] | None:
    """Attack the first attacked batch again: ``rerun(mask)`` returns the projected ``x_adv`` ``[N, ...]`` of a run
    on the ``[N]`` bool ``mask`` alone (the runner's seeds); compare with the first run's ``x_adv`` there. ``None``
    where nothing was attacked (the next threat point checks it)."""
    mask = first_batch(active, batch_size)
    if not bool(mask.any()):
        return None
    again = rerun(mask)
    return repeat_entry(label, norm, eps, eps_text, x_adv[mask], again[mask])


def repeat_plugin_unit(record: EvalRecord, enabled: bool, attack: str, rerun: Callable[[Tensor], Tensor],
                       outcome: Any, batch_size: int, label: str, norm: str, eps: float, eps_text: str) -> bool:
    """The runner's hook after a unit ran (``outcome``: its :class:`~attacks.cascade.AttackOutcome`, ``x_adv``
    ``[N, ...]`` over ``active`` ``[N]``): where diagnostics are enabled, ``attack`` is a plug-in's and the record
    holds no check of ``label`` yet, add its finding to ``record.provenance`` (:data:`PROVENANCE_KEY`). Whether the
    attack ran again (the caller then verifies the model is unchanged)."""
    if not enabled or not is_plugin_attack(attack) or label in checked_labels(record):
        return False
    entry = repeat_first_batch(rerun, outcome.x_adv, outcome.active, batch_size, label, norm, eps, eps_text)
    if entry is None:
        return False
    record.provenance.setdefault(PROVENANCE_KEY, []).append(entry)
    if not entry["reproducible"]:
        logger.warning("plug-in attack %r at %s is not reproducible: attacked again with the same seeds, %d of %d "
                       "outputs differ (flag plugin-not-reproducible)", label, threat_text(norm, eps_text),
                       entry["differing"], entry["n"])
    return True


def check_plugin_repeats(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """A plug-in attack attacked one batch twice with the same per-batch seeds and wrote other inputs: its numbers
    change from run to run (it draws from a source the runner does not seed)."""
    bad = [e for e in _findings(record) if e.get("reproducible") is False]
    if not bad:
        return []
    where = "; ".join(f"{e.get('attack')!r} at {threat_text(str(e.get('norm')), str(e.get('eps_text')))} "
                      f"({e.get('differing')} of {e.get('n')} outputs differ, max |diff| "
                      f"{float(e.get('max_abs_diff') or 0.0):.3g})" for e in bad)
    return [Flag(
        "plugin-not-reproducible", WARNING,
        f"plug-in attack {where}: attacked again with the same seeds on the same batch, it returned other inputs, "
        "so its numbers change on every run; draw from torch's global RNG (the runner seeds it per batch, as it "
        "seeds numpy's and Python's random) or from the generator the attack is built with, never from os.urandom, "
        "random.SystemRandom or a generator seeded from the clock",
        {"attacks": [dict(e) for e in bad]},
    )]
