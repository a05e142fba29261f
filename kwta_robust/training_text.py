"""How a record's model was trained, for the tables: :func:`training_text` (``pgd Linf 0.1, 10 steps``) and
:func:`beyond_training_notes`, which say where a record was evaluated beyond the budget its model was adversarially
trained for.

PGD adversarial training (Madry et al., ICLR 2018) and TRADES (Zhang et al., ICML 2019) buy robustness inside the
training threat model only: a number at a larger epsilon (or in another norm) measures something the training never
aimed at, and reading it as the defense's robustness is a classic mistake (Carlini et al. 2019, Sec. 3). The
checkpoints ``kwta-robust train`` writes record the recipe (metadata ``method`` and ``training.adversarial``), which
every evaluation record keeps under ``model.training``; models of your own record none, and get no note.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from attacks.base import threat_text
from kwta_robust.results import EvalRecord

#: The training methods that train against a threat model (``TrainConfig.method``).
ADVERSARIAL_METHODS: tuple[str, ...] = ("pgd", "trades")


def training_recipe(record: EvalRecord) -> tuple[str, Mapping[str, Any]] | None:
    """``(method, adversarial settings)`` of the checkpoint ``record`` evaluated, or ``None`` where the record
    does not say (a model of your own, an older checkpoint)."""
    training = record.model.get("training")
    if not isinstance(training, Mapping) or not isinstance(training.get("method"), str):
        return None
    config = training.get("training")
    adversarial = config.get("adversarial") if isinstance(config, Mapping) else None
    return training["method"], adversarial if isinstance(adversarial, Mapping) else {}


def training_budget(record: EvalRecord) -> tuple[str, float] | None:
    """``(norm, eps)`` the record's model was adversarially trained at; ``None`` for standard training or where
    the record does not say."""
    recipe = training_recipe(record)
    if recipe is None or recipe[0] not in ADVERSARIAL_METHODS:
        return None
    norm, eps = recipe[1].get("norm"), recipe[1].get("eps")
    if not isinstance(norm, str) or not isinstance(eps, (int, float)):
        return None
    return norm, float(eps)


def training_text(record: EvalRecord) -> str:
    """``standard``, ``pgd Linf 0.1, 10 steps``, ``trades Linf 0.1, 10 steps, beta 6``; ``?`` where unknown."""
    recipe = training_recipe(record)
    if recipe is None:
        return "?"
    method, adversarial = recipe
    budget = training_budget(record)
    if budget is None:
        return method
    norm, eps = budget
    text = f"{method} {threat_text(norm, eps)}"
    steps = adversarial.get("steps")
    if isinstance(steps, int):
        text += f", {steps} steps"
    beta = adversarial.get("trades_beta")
    if method == "trades" and isinstance(beta, (int, float)):
        text += f", beta {beta:g}"
    return text


def any_adversarially_trained(records: Sequence[EvalRecord]) -> bool:
    """Whether the tables of ``records`` need a ``training`` column (some model was adversarially trained)."""
    return any(training_budget(rec) is not None for rec in records)


def beyond_training_notes(records: Sequence[EvalRecord]) -> list[str]:
    """Per adversarially trained record, the threat points it was evaluated at beyond its training budget (a larger
    epsilon in the training norm, or another norm), one note each."""
    notes = []
    for rec in records:
        budget, recipe = training_budget(rec), training_recipe(rec)
        if budget is None or recipe is None:
            continue
        norm, eps = budget
        beyond = [threat_text(n, e) for n, e in rec.threat_points()
                  if n != norm or e > eps * (1 + 1e-6)]
        if beyond:
            notes.append(f"[{rec.label}] BEYOND THE TRAINING BUDGET at {', '.join(beyond)}: the model was "
                         f"adversarially trained ({recipe[0]}) at {threat_text(norm, eps)} only; report those numbers "
                         "as robustness it was not trained for")
    return notes
