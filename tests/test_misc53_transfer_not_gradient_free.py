"""A transfer attack does not make the checks of unattacked top-k gates a warning (misc53).

``compare`` adds, after the config's attacks, a transfer attack from each other compared model (its inputs crafted
on the ReLU twin). :func:`kwta_robust.diagnostics_base.gradient_free_labels` counted it as a gradient-free attack,
so ``gates-without-bpda``, ``selections-outside-layers`` and ``bpda-straight-through`` dropped from critical to a
warning on a compare record although the transfer never queried the model under test (Carlini et al. 2019: transfer
is a sanity check, no substitute for an adaptive attack) and broke nothing. Only gradient-free attacks that query the
model (gradient estimation, Square, HopSkipJump, Boundary) make them a warning."""

from __future__ import annotations

import dataclasses

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import run_checks
from kwta_robust.diagnostics_base import gradient_free_labels

PGD = [1] * 6 + [0] * 4
#: compare's transfer attack from the ReLU twin: it broke nothing more than pgd.
TRANSFER = dataclasses.replace(make_result("transfer", [1] * 6 + [-1] * 4, kind="transfer", position=1,
                                           cumulative=True), source="relu")
GATES = {"n": 8, "probed": 5, "bpda_capable": [], "wall_time_s": 0.1,
         "layers": [{"name": "act", "module_class": "DenseTopK", "kinds": ["gate"], "grouping": None,
                     "native": False, "evidence": {"shape": [8, 4]}}]}
INLINE = {"layers": [], "probed": 2, "selections": [{"op": "topk", "modules": [""], "calls": 1}]}


def _flag(code: str, detection: dict, *results) -> object:
    (flag,) = [f for f in run_checks(make_record(list(results), detection=detection)) if f.code == code]
    return flag


@pytest.mark.parametrize("code, detection", [("gates-without-bpda", GATES), ("selections-outside-layers", INLINE)])
def test_a_transfer_attack_leaves_the_flag_critical(code: str, detection: dict) -> None:
    alone = _flag(code, detection, make_result("pgd", PGD))
    with_transfer = _flag(code, detection, make_result("pgd", PGD), TRANSFER)
    assert (alone.severity, with_transfer.severity) == ("critical", "critical")
    assert with_transfer.evidence["gradient_free"] == [] and "only transfer" not in with_transfer.message
    assert with_transfer.message == alone.message  # the transfer changes nothing the flag says
    square = make_result("square", [1] * 6 + [-1] * 4, kind="black-box", position=1, cumulative=True)
    queried = _flag(code, detection, make_result("pgd", PGD), square, dataclasses.replace(TRANSFER, position=2))
    assert queried.severity == "warning" and queried.evidence["gradient_free"] == ["square"]
    assert "only square attacked without" in queried.message


def test_the_worst_case_wording_names_the_transfer_as_crafted_elsewhere() -> None:
    square = make_result("square", [1] * 6 + [0] * 4, kind="black-box")
    flag = _flag("gates-without-bpda", GATES, square, TRANSFER)
    assert flag.severity == "warning"
    assert "so the worst case rests on square, transfer (crafted on another model) alone (no gradient attack ran)" \
        in flag.message
    only = _flag("gates-without-bpda", GATES, dataclasses.replace(TRANSFER, position=0, cumulative=False))
    assert only.severity == "critical" and only.evidence["gradient_free"] == []
    assert "the worst case rests on transfer (crafted on another model) alone" in only.message


def test_what_counts_as_a_transfer() -> None:
    from kwta_robust.diagnostics_base import is_transfer  # new

    unregistered = make_result("own-transfer", PGD, kind="transfer")  # a plug-in of another installation
    registered = make_result("transfer", PGD, kind="white-box")  # the registry says its kind
    assert is_transfer(TRANSFER) and is_transfer(unregistered) and is_transfer(registered)
    assert not is_transfer(make_result("square", PGD, kind="black-box"))
    record = make_record([make_result("pgd", PGD), unregistered, make_result("hsj", PGD, kind="black-box")])
    assert gradient_free_labels(record) == ["hsj"]
