"""Mutation review 52 of kwta_robust.matrix_transfer: a worst case without its transfer attacks (the samples only
they broke robust again, counted so; every attack a transfer one: no worst case; transfer attacks not at its tail or
none: as stored), which ``black-box-beats-white-box`` flags count as a transfer attack's (that code, at every point of
its evidence), the stored flags a recomputed code keeps (the budget check's re-runs, a transfer attack's), and
evaluate's order of flags (a re-run's and an unknown code's after the checks' of one severity); the legend's line
names records with transfer attacks alone."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust import matrix_transfer
from kwta_robust.matrix_transfer import (BLACK_BOX_CODE, _suite_worst, evaluate_order, suite, suite_flags,
                                         transfer_flags, transfer_note)
from kwta_robust.record_flags import RERUN_SOURCE
from kwta_robust.results import Accuracy, Flag, WorstCase


def worst(attacks: list[str], first: list[int]) -> WorstCase:
    return WorstCase(norm="linf", eps=0.1, eps_text="0.1", attacks=attacks,
                     robust=Accuracy.of(first.count(-1), len(first)), first_broken_by=first)


def test_the_samples_only_transfer_attacks_broke_are_robust_again() -> None:
    view = _suite_worst(worst(["pgd", "fgsm", "tr"], [0, 1, 2, -1, 2]), {"tr"})
    assert view.attacks == ["pgd", "fgsm"] and view.first_broken_by == [0, 1, -1, -1, -1]
    assert (view.robust.correct, view.robust.n) == (3, 5)


def test_no_worst_case_without_configured_attacks_and_none_changed_off_the_tail() -> None:
    assert _suite_worst(worst(["tr"], [0, -1]), {"tr"}) is None
    stored = worst(["tr", "pgd"], [0, 1])
    assert _suite_worst(stored, {"tr"}) is stored  # not a tail: as stored
    assert _suite_worst(stored, set()) is stored


def beats(code: str, points: list[tuple[str, float]], attack: str = "tr") -> Flag:
    return Flag(code, "critical", "m", {"attack": attack, "points": [{"norm": n, "eps": e} for n, e in points]})


def test_a_transfer_attacks_flag_is_that_code_at_every_point_of_its_evidence() -> None:
    tr = make_result("tr", [0, 1], eps=0.1, kind="transfer", position=1)
    tr.source = "relu"
    record = make_record([make_result("pgd", [1, 1], eps=0.1), make_result("pgd", [1, 1], eps=0.2), tr])
    mine = beats(BLACK_BOX_CODE, [("linf", 0.1)])
    flags = [mine, beats("other-code", [("linf", 0.1)]), beats(BLACK_BOX_CODE, [("linf", 0.1), ("linf", 0.2)]),
             beats(BLACK_BOX_CODE, [("linf", 0.1)], attack="pgd")]
    assert transfer_flags(record, flags) == [mine]


def test_evaluate_order_puts_a_reruns_and_an_unknown_codes_flags_after_the_checks() -> None:
    rerun = Flag("budget-still-lowering", "warning", "m", {"source": RERUN_SOURCE})
    plugin = Flag("my-plugin-check", "warning", "m")
    check = Flag("budget-still-lowering", "warning", "m")
    critical = Flag("my-plugin-check", "critical", "m")
    assert evaluate_order([rerun, plugin, check, critical]) == [critical, check, rerun, plugin]


def test_a_recomputed_code_keeps_its_reruns_and_the_transfer_attacks_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    tr = make_result("tr", [0, 1], eps=0.1, kind="transfer", position=1)
    tr.source = "relu"
    record = make_record([make_result("pgd", [1, 1], eps=0.1), tr])
    view = make_record([record.results[0]])
    transfer, rerun = beats(BLACK_BOX_CODE, [("linf", 0.1)]), Flag("budget-still-lowering", "warning", "m",
                                                                     {"source": RERUN_SOURCE})
    record.diagnostics = [transfer, rerun]
    white = beats(BLACK_BOX_CODE, [("linf", 0.1)], attack="pgd")  # another flag of both codes on the record alone
    ladder = Flag("budget-still-lowering", "warning", "from the record")
    monkeypatch.setattr(matrix_transfer, "config_thresholds", lambda config: "THR")
    monkeypatch.setattr(matrix_transfer, "stored_reason", lambda *args: None)
    monkeypatch.setattr(matrix_transfer, "recomputed_codes", lambda: [BLACK_BOX_CODE, "budget-still-lowering"])
    monkeypatch.setattr(matrix_transfer, "run_checks", lambda rec, thr, codes: [white, ladder] if rec is record else [])
    flags, changed = suite_flags(record, view)
    assert changed == [BLACK_BOX_CODE, "budget-still-lowering"] and flags == [transfer, rerun]


def test_the_legend_names_no_record_without_transfer_attacks() -> None:
    plain = make_record([make_result("pgd", [1, 1], eps=0.1)])
    assert transfer_note([plain], [suite(plain)], ["cell"]) == []
