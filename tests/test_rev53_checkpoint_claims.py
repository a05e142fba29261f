"""Entries of a checkpoint named like an accuracy that are no top-1 claim (:data:`kwta_robust.checkpoint_checks.
NOT_TOP1`): a top-5 accuracy (``acc_top5``, ``top5_acc``, ``acc5``: ImageNet-style scripts save both) or a number
about the accuracy (``best_acc_epoch``: 80, ``acc_std``: 0.4) was read as the claimed clean accuracy, and the
``checkpoint-accuracy-differs`` flag told a user whose model measured as the checkpoint says (``acc`` 91.2, 91%
measured) that it claims 99.6% or 80%, asking about the normalization. Top-1 names and both scales are still read
(``acc`` 0.912 or 91.2 against 91.2% measured raises nothing)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kwta_robust.checkpoint_checks import CHECKPOINT_ACCURACY, check_checkpoint_accuracy, claimed_accuracies
from kwta_robust.diagnostics_base import Thresholds


def record(meta: dict) -> SimpleNamespace:
    """The fields the check reads: 912 of 1000 correct (91.2%, interval about 89.3–92.8%)."""
    clean = SimpleNamespace(n=1000, accuracy=0.912, ci_low=0.893, ci_high=0.928)
    return SimpleNamespace(model={"training": {"checkpoint_meta": meta}}, clean=clean, dataset={"split": "test"})


@pytest.mark.parametrize("name, value", [("acc_top5", 99.6), ("top5_acc", 0.996), ("top_5_acc", 99.6),
                                         ("val_acc_top10", 99.9), ("best_acc_epoch", 80), ("acc_std", 0.4)])
def test_no_top1_claim_is_no_claim(name: str, value: float) -> None:
    """Beside top-1 claims on both scales (percent and fraction), which are read and agree: no flag."""
    meta = {"acc": 91.2, "best_acc1": 0.912, "top1": 91.2, name: value}
    assert claimed_accuracies(meta) == {"acc": pytest.approx(0.912), "best_acc1": pytest.approx(0.912),
                                        "top1": pytest.approx(0.912)}
    assert check_checkpoint_accuracy(record(meta), Thresholds()) == []  # type: ignore[arg-type]


def test_far_top1_claim_still_flagged() -> None:
    (flag,) = check_checkpoint_accuracy(record({"acc": 99.6, "acc_top5": 99.9}), Thresholds())  # type: ignore[arg-type]
    assert flag.code == CHECKPOINT_ACCURACY
    assert "acc 99.6" in flag.message and "acc_top5" not in flag.message
