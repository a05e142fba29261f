"""The accuracy a checkpoint of someone else's claims against the clean accuracy measured (an ``info`` flag).

A training script saves its test accuracy beside the weights (``{'net': state_dict, 'acc': 91.2, 'epoch': 80}``:
kuangliu's pytorch-cifar, Xiao et al.'s kWTA code); the loader keeps such entries in the record
(``model.training.checkpoint_meta``: :func:`kwta_robust.foreign_weights.checkpoint_entries`). Where the clean
accuracy measured on the record's samples is far from the claim, the usual cause when evaluating another group's
checkpoint is the input pipeline — a normalization (mean/std) or resizing the model was trained with and its
factory does not apply (the harness feeds inputs in [0, 1]) — and it is silent: every number of the run is of a
handicapped model. The samples and split legitimately differ from the script's test set, so this is an ``info``
flag, never critical: it asks the question. Registered by :mod:`kwta_robust.diagnostics`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from kwta_robust.diagnostics_base import INFO, Thresholds
from kwta_robust.errors import is_finite_number
from kwta_robust.numbers import percent_text
from kwta_robust.results import EvalRecord, Flag

#: Diagnostics code of the flag.
CHECKPOINT_ACCURACY = "checkpoint-accuracy-differs"
#: An entry named like a test accuracy: ``acc``, ``accuracy``, ``test_acc``, ``best_acc``, ``top1``, ``acc1``,
#: ``best_prec1``, ``val_accuracy`` (a word of the name, ``_``/``-``/``.`` separated); not a training or an
#: adversarial (robust) accuracy, which differ from the clean test accuracy by design (:data:`NOT_CLEAN`).
ACCURACY_NAME = re.compile(r"(^|[_.\-])(acc|accuracy|acc1|top1|top_1|prec1|prec@1|acc@1)($|[_.\-])", re.IGNORECASE)
NOT_CLEAN = re.compile(r"train|adv|robust|pgd|fgsm|attack|loss|err", re.IGNORECASE)
#: A name that says its value is no top-1 accuracy: a top-5 (any top-k but 1: ``acc_top5``, ``top5_acc``, ``acc5``,
#: ``prec@5``), or a number about the accuracy ending the name (``best_acc_epoch``: 80, ``acc_std``: 0.4).
NOT_TOP1 = re.compile(r"(top|acc|prec)[_@\-]?(?!1(?!\d))\d|[_.\-](epochs?|steps?|iters?|iteration|idx|index|count|n|num"
                      r"|std|var|sem|ci|delta|diff)$", re.IGNORECASE)
#: How far (a fraction: 0.03 = 3 points) the claim may be outside the measured 95% interval before the flag.
ACCURACY_POINTS = 0.03


def claimed_accuracies(meta: Any) -> dict[str, float]:
    """The entries of ``meta`` (``model.training.checkpoint_meta``) named like a clean test accuracy
    (:data:`ACCURACY_NAME`; not :data:`NOT_CLEAN` nor :data:`NOT_TOP1`), as fractions: a value above 1 (at most 100)
    is read as a percentage, one in [0, 1] as a fraction; any other value is left out."""
    if not isinstance(meta, Mapping):
        return {}
    found = {}
    for key, value in meta.items():
        name = str(key).rsplit(".", 1)[-1]
        if not ACCURACY_NAME.search(name) or NOT_CLEAN.search(name) or NOT_TOP1.search(name) \
                or not is_finite_number(value):
            continue
        if 0 <= value <= 1:
            found[str(key)] = float(value)
        elif 1 < value <= 100:
            found[str(key)] = float(value) / 100
    return found


def check_checkpoint_accuracy(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """An ``info`` flag where an accuracy the checkpoint claims (:func:`claimed_accuracies`) lies more than
    :data:`ACCURACY_POINTS` outside the 95% interval of the clean accuracy measured on the record's samples."""
    training = record.model.get("training")
    claims = claimed_accuracies(training.get("checkpoint_meta") if isinstance(training, Mapping) else None)
    clean = record.clean
    if not claims or not clean.n:
        return []
    far = {key: claim for key, claim in claims.items()
           if claim < clean.ci_low - ACCURACY_POINTS or claim > clean.ci_high + ACCURACY_POINTS}
    if not far:
        return []
    meta = training["checkpoint_meta"]
    said = ", ".join(f"{key} {meta[key]!r}" for key in far)
    split = record.dataset.get("split")
    samples = f"these {clean.n}{f' {split}' if isinstance(split, str) else ''} samples"
    return [Flag(
        CHECKPOINT_ACCURACY, INFO,
        f"the checkpoint says {said}; measured clean {percent_text(clean.accuracy)} "
        f"({percent_text(clean.ci_low)}–{percent_text(clean.ci_high)}) on {samples}: other samples, or another "
        "normalization or preprocessing than the model was trained with? (the harness feeds inputs in [0, 1]: a "
        "model trained on normalized inputs needs its mean/std applied in its factory's forward)",
        {"claimed": {key: meta[key] for key in far}, "claimed_fraction": far, "clean": clean.accuracy,
         "ci": [clean.ci_low, clean.ci_high], "n": clean.n, "points": ACCURACY_POINTS},
    )]
