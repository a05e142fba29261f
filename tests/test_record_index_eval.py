"""The passes that read or grow a record per threat point or per unit look its results up in one
:class:`~kwta_robust.record_index.RecordIndex`, not by :class:`~kwta_robust.results.EvalRecord`'s scans.

A run (fresh or resumed) looked every unit up with ``EvalRecord.result`` and put it with ``put_result`` (a scan and a
rebuilt list each), the diagnostics, the budget check's plan and a shard merge took each threat point's results with
``results_at`` (a scan each), and a resumed run saved its whole record after every threat point even where it ran
nothing: work quadratic in the results (1,000 results of 1,000 samples: a resume with nothing to run took 16.6 s, 15 of
them in 52 saves). These tests count scans, saves and budget reads (deterministic, unlike a timing), and check the
index's puts against the record's.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any, Callable

import pytest

from eval_helpers import make_record, make_result
from kwta_robust import diagnostics, evaluate as evaluate_module
from kwta_robust.budget_check import plan_reruns
from kwta_robust.config import EvalConfig
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from kwta_robust.record_index import RecordIndex
from kwta_robust.results import EvalRecord, WorstCase, load_record
from kwta_robust.shards import merge_records
from kwta_robust.specs import BudgetCheckSpec
from test_evaluate import linear_problem
from test_record_index_render import sweep_record
from test_shard_merge import part

SCANS = ("result", "results_at", "worst", "put_result", "put_worst")
#: The scans of the results (``put_worst`` passes over the worst cases: one per threat point, not per unit).
RESULT_SCANS = ("result", "results_at", "put_result")


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, names: tuple[str, ...]) -> list[int]:
    """Count the calls of ``owner``'s functions ``names`` (each still runs) from now until ``monkeypatch.undo()``."""
    count = [0]
    for name in names:
        original = getattr(owner, name)

        def counted(*args: Any, _original: Callable = original, **kwargs: Any) -> Any:
            count[0] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)
    return count


def scans(run: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = SCANS) -> int:
    """How many times ``run`` scans or rebuilds a record's lists (``names``: :data:`SCANS`)."""
    count = counting(monkeypatch, EvalRecord, names)
    run()
    monkeypatch.undo()
    return count[0]


def test_the_index_puts_what_the_record_puts_and_answers_as_its_scans() -> None:
    """Random puts (new keys, replaced keys, a key held twice, one attack at two epsilons and norms, a NaN epsilon
    that only its own object finds) on a record through its index and on a twin through its own methods: the same
    objects in the same order after every put, and the index answering every lookup as the twin's scans."""
    rng, nan = random.Random(11), math.nan
    first = [make_result("a", [1, 0], eps=0.1), make_result("b", [1, 1], eps=0.1, position=1),
             make_result("a", [0, 0], eps=0.1, position=2)]  # "a" at 0.1 twice: the first one is found
    indexed, twin = make_record(first, n=2), make_record(first, n=2)
    twin.worst_case = list(indexed.worst_case)  # the same objects in both
    index = RecordIndex(indexed)
    points = [("linf", 0.1), ("linf", 0.2), ("l2", 0.1), ("linf", nan), ("linf", -0.0)]
    for step in range(400):
        norm, eps = rng.choice(points)
        if rng.random() < 0.7:
            result = make_result(rng.choice("abc"), [rng.choice([-1, 0, 1]) for _ in range(2)], norm=norm, eps=0.5,
                                 position=rng.randrange(3))
            result.eps = eps  # NaN included (which eps_text cannot show)
            index.put_result(result)
            twin.put_result(result)
        else:
            worst = WorstCase(norm, eps, "e", ["a"], indexed.clean, [-1, -1])
            index.put_worst(worst)
            twin.put_worst(worst)
        assert [id(r) for r in indexed.results] == [id(r) for r in twin.results], step
        assert [id(w) for w in indexed.worst_case] == [id(w) for w in twin.worst_case], step
        for (norm, eps), label in itertools.product(points + [("linf", float("nan")), ("linf", 0.0)], "abcd"):
            assert index.result(label, norm, eps) is twin.result(label, norm, eps)
            assert [id(r) for r in index.results_at(norm, eps)] == [id(r) for r in twin.results_at(norm, eps)]
            assert index.worst(norm, eps) is twin.worst(norm, eps)
    assert len(twin.results) > 8 and any(r.eps != r.eps for r in twin.results)  # the puts reached every case


def suite(n_eps: int) -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 32, "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [round(0.005 * (i + 1), 4) for i in range(n_eps)]}],
        "attacks": [{"attack": "fgsm"}, {"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"enabled": False},
    })


def resumed(n_eps: int, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """A run of :func:`suite` written to ``folder``, then resumed (nothing left to run): the scans of the run, then
    the scans of its results and the saves of the resumption; its record holds what the run's held."""
    model, data = linear_problem(n=40)
    out = folder / f"{n_eps}.json"

    def run() -> EvalRecord:
        return evaluate(model, data, suite(n_eps), {"name": "linear"}, out_path=out, progress=False)

    ran = scans(run, monkeypatch)
    before = load_record(out)
    saves = counting(monkeypatch, evaluate_module, ("save_record",))
    scanned = scans(run, monkeypatch, RESULT_SCANS)
    after = load_record(out)
    assert len(after.results) == 2 * n_eps and after.status == "complete"
    assert after.results == before.results
    assert after.worst_case == before.worst_case
    return ran, scanned, saves[0]


def test_a_run_and_its_resumption_scan_no_results_and_a_resumption_saves_a_fixed_number_of_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, a run scanned its results per unit and per threat point (and a resumption too), and a resumption
    saved after every threat point: 4 times the epsilons, 4 times the scans and the saves. (A resumption puts each
    threat point's worst case again through the record's ``put_worst``: a pass over the worst cases, not the
    results.)"""
    small, large = resumed(2, tmp_path, monkeypatch), resumed(8, tmp_path, monkeypatch)
    assert small[:2] == large[:2] == (0, 0)
    assert small[2] == large[2] == 2  # after the clean pass (the record resumed) and at the end (complete)


def ladder_record(n_eps: int) -> EvalRecord:
    """PGD at 5, 10, 20 and 40 steps at each of ``n_eps`` epsilons, each budget breaking one more of 6 samples."""
    results = [make_result(f"pgd-{steps}", [0] * k + [1] * (6 - k), attack="pgd", params={"steps": steps},
                           eps=0.01 * (e + 1), position=k)
               for e in range(n_eps) for k, steps in enumerate((5, 10, 20, 40))]
    return make_record(results, n=6)


def test_the_checks_and_the_budget_plan_scan_a_fixed_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, a scan per threat point (the diagnostics twice, the budget check's plan three times)."""
    ladders, sweeps, spec = (ladder_record(2), ladder_record(8)), (sweep_record(5, 4, "m", 0.1, 0),
                                                                   sweep_record(20, 4, "m", 0.1, 0)), BudgetCheckSpec()
    for check, pairs in ((lambda rec: run_checks(rec), (ladders, sweeps)),
                         (lambda rec: plan_reruns(rec, spec, 0), (ladders,))):
        for small, large in pairs:
            assert scans(lambda: check(small), monkeypatch) == scans(lambda: check(large), monkeypatch)
    assert all(runs for _, _, runs, _ in plan_reruns(ladders[1], spec, 0))  # every point planned a re-run


def test_the_budget_ladder_reads_each_result_s_budget_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget read the attack's signature once per pair of attacks at a threat point (4 attacks: 12 pairs a
    point, each reading both); now once per result. The flags are those of every smaller budget that a larger one
    beat by a point or more."""
    record = ladder_record(3)
    reads = counting(monkeypatch, diagnostics, ("_budget", "_budget_key"))
    flags = diagnostics.check_budget_ladder(record, diagnostics.Thresholds(min_count=1, ladder_margin=0.1))
    assert reads[0] == 2 * len(record.results)
    ladder = itertools.combinations((5, 10, 20, 40), 2)  # (smaller, larger) budgets
    assert sorted((f.evidence["eps"], f.evidence["smaller"], f.evidence["larger"]) for f in flags) == sorted(
        (0.01 * (e + 1), f"pgd-{a}", f"pgd-{b}") for a, b in ladder for e in range(3))


def test_a_shard_merge_scans_a_fixed_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, each part's results and worst cases were scanned at every threat point."""
    def merged(n_eps: int) -> int:
        whole = sweep_record(n_eps, 3, "m", 0.1, 0)
        for r in whole.results:
            r.margins = [None] * 6
        cfg = EvalConfig.from_dict({"dataset": "toy", "attacks": ["pgd"], "diagnostics": {"enabled": False},
                                    "threats": [{"norm": "linf", "epsilons": [0.001 * (e + 1) for e in range(n_eps)]}]})
        parts = [part(whole, 3, 6), part(whole, 0, 3)]
        count = scans(lambda: merge_records(whole, parts, cfg), monkeypatch)
        assert merge_records(whole, parts, cfg).worst_case == sorted(whole.worst_case, key=lambda w: w.eps)
        return count
    assert merged(2) == merged(8)
