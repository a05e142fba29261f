"""Named attack suites: ordered lists of ``{"attack": name, "params": {...}}`` entries, kept as data.

The evaluation cascade runs a suite's attacks in order, each only on the samples still robust; the per-sample
worst case over the suite is the headline number.

* ``quick``: FGSM and a 20-step PGD -- a smoke test, not a robustness claim (on a model with top-k gates the
  record's ``gates-without-bpda`` flag says so; ``standard`` gets it too, as a warning: Square needs no gradient).
* ``standard``: faithful to AutoAttack ``version="standard"`` (Croce & Hein, ICML 2020): APGD-CE (100 iterations,
  1 restart), APGD-T (100 iterations, 9 target classes), FAB-T (100 iterations, 9 target classes), Square (5,000
  queries, ``p_init=0.8``). torchattacks defaults to 10 iterations for APGD/FAB; these entries spell out the
  reference budgets.
* ``kwta-adaptive``: the adaptive evaluation of kWTA models after Tramèr, Carlini, Brendel & Madry, "On Adaptive
  Attacks to Adversarial Example Defenses" (NeurIPS 2020): PGD (CE and margin), BPDA with the identity, smooth
  (sharpening temperature schedule) and learned surrogates, gradient estimation over Gaussian noise, and Square
  as a gradient-free check for masking. Its BPDA entries name no layers: they act on the eval config's
  ``bpda_layers`` (default ``auto``: every top-k gate and piecewise-constant layer ``kwta_robust.detect`` finds,
  whoever built the model), so ``--bpda-layer`` reaches them too.

``get_suite(name, num_classes=C)`` adapts a suite to a model with ``C`` classes: target counts become
``min(9, C - 1)`` and attacks whose loss is undefined for ``C`` classes (targeted DLR needs 4, DLR 3) are
**dropped with a logged warning** naming them -- the remaining suite still runs, and the list the caller gets
(and records) says exactly what ran. Fewer than 2 classes, or a suite left empty, is an error. Without
``num_classes`` the suite is returned as written and an attack raises a clear error at call time if the model has
too few classes.
"""

from __future__ import annotations

import copy
import logging
from types import MappingProxyType
from typing import Any, Mapping

from attacks.base import REGISTRY, AttackConfigError
from attacks.apgd import AUTOATTACK_STEPS, AUTOATTACK_TARGETS
from attacks.errors import is_whole_number

logger = logging.getLogger(__name__)

_PGD_ADAPTIVE = {"steps": 100, "loss": "margin"}
#: The strongest BPDA per query on the small kWTA CNNs (benchmarks/STRENGTH.md): APGD-CE inside, a short stage that
#: breaks the easy samples, then a long run at a low temperature on the rest (each stage starts afresh on the samples
#: still robust); the long variant runs 1,000 steps at each of three temperatures (which one breaks the hard samples
#: differs between models).
_BPDA_SMOOTH = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.05, 0.03],
                "stage_steps": [100, 500]}
_BPDA_SMOOTH_LONG = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.05, 0.03],
                     "stage_steps": [1000, 1000, 1000]}

SUITES: Mapping[str, tuple[Mapping[str, Any], ...]] = MappingProxyType(
    {
        "quick": (
            {"attack": "fgsm", "params": {}},
            {"attack": "pgd", "params": {"steps": 20}},
        ),
        "standard": (
            {"attack": "apgd-ce", "params": {"steps": AUTOATTACK_STEPS, "restarts": 1}},
            {
                "attack": "apgd-t",
                "params": {"steps": AUTOATTACK_STEPS, "restarts": 1, "n_target_classes": AUTOATTACK_TARGETS},
            },
            {
                "attack": "fab-t",
                "params": {"steps": AUTOATTACK_STEPS, "restarts": 1, "n_target_classes": AUTOATTACK_TARGETS},
            },
            {"attack": "square", "params": {"n_queries": 5000, "p_init": 0.8, "restarts": 1}},
        ),
        "kwta-adaptive": (
            {"attack": "pgd", "params": {"steps": 100, "loss": "ce"}},
            {"attack": "bpda", "label": "bpda-smooth", "params": _BPDA_SMOOTH},
            {"attack": "pgd", "params": dict(_PGD_ADAPTIVE)},
            {"attack": "bpda",
             "params": {"surrogate": "identity", "inner": "pgd", "inner_params": dict(_PGD_ADAPTIVE)}},
            {"attack": "bpda", "label": "bpda-smooth-long", "params": _BPDA_SMOOTH_LONG},
            {"attack": "bpda", "params": {"surrogate": "learned", "inner": "pgd", "inner_params": dict(_PGD_ADAPTIVE)}},
            {"attack": "gradient-estimation", "params": {"steps": 100, "samples_start": 10, "samples_end": 100}},
            {"attack": "square", "params": {"n_queries": 5000, "p_init": 0.8}},
        ),
    }
)


def available_suites() -> list[str]:
    """Names of the shipped attack suites."""
    return sorted(SUITES)


def _min_classes(entry: Mapping[str, Any]) -> tuple[int, str]:
    """Fewest classes the entry needs, and the attack that needs them (wrappers: their ``inner`` attack)."""
    names = [entry["attack"], entry["params"].get("inner")]
    needs = [(REGISTRY.get(n).min_classes, n) for n in names if n is not None]
    return max(needs)


def _cap_targets(params: dict[str, Any], num_classes: int) -> None:
    if "n_target_classes" in params:
        params["n_target_classes"] = min(params["n_target_classes"], num_classes - 1)
    inner = params.get("inner_params")
    if isinstance(inner, dict):
        _cap_targets(inner, num_classes)


def get_suite(name: str, num_classes: int | None = None) -> list[dict[str, Any]]:
    """A fresh copy of suite ``name`` as ``[{"attack": ..., "params": {...}}, ...]`` (an entry may also name its
    ``label``), adapted to ``num_classes``.

    See the module docstring for what adapting does; the returned list is the caller's to modify.
    """
    if name not in SUITES:
        raise AttackConfigError(f"suite: unknown suite {name!r}; known suites: {', '.join(available_suites())}")
    entries = [copy.deepcopy(dict(entry)) for entry in SUITES[name]]
    if num_classes is None:
        return entries
    if not is_whole_number(num_classes, 2):
        raise AttackConfigError(f"num_classes: a classifier needs at least 2 classes, got {num_classes!r}")
    kept = []
    for entry in entries:
        needed, attack = _min_classes(entry)
        if num_classes < needed:
            logger.warning(
                "suite %r: dropping %s for a %d-class model: its DLR loss needs at least %d classes "
                "(the other attacks of the suite still run)", name, attack, num_classes, needed,
            )
            continue
        _cap_targets(entry["params"], num_classes)
        kept.append(entry)
    if not kept:
        raise AttackConfigError(f"suite {name!r}: none of its attacks applies to a {num_classes}-class model")
    return kept
