"""Rendering a record takes time linear in its attack results, and the same bytes as before.

The tables and the report looked every cell up with :class:`~kwta_robust.results.EvalRecord`'s scans (``result``,
``results_at``, ``worst``: a pass over the results each), and merged suites with a loop that rebuilt every sequence
per item: rendering N results was quadratic (8,000 results: ``table`` 28 s, ``report`` 57 s). They now look up a
:class:`~kwta_robust.record_index.RecordIndex` built once per render. These tests count the scans and the Python
calls a render makes (deterministic, unlike a timing) and compare the renders with those the scans give.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from eval_helpers import make_record, make_result
from kwta_robust import narrow, report
from kwta_robust.formats import FORMATS, render_records_as_matrices, render_stdout
from kwta_robust.html_report import build_report
from kwta_robust.md_report import build_markdown_report
from kwta_robust.record_index import RecordIndex
from kwta_robust.results import EvalRecord, load_records
from kwta_robust.suite_order import suite_order

QUICKSTART = Path(__file__).parent / "fixtures" / "quickstart"


def sweep_record(n_eps: int, n_attacks: int, label: str, ratio: float, seed: int) -> EvalRecord:
    """A cascade of ``n_attacks`` attacks at each of ``n_eps`` epsilons on 6 samples (a long eps sweep), placed in
    a matrix row by its kWTA ratio."""
    rng = random.Random(seed)
    results = []
    for e in range(n_eps):
        alive = [1] * 6
        for a in range(n_attacks):
            flags = [-1 if s != 1 else (0 if rng.random() < 0.15 else 1) for s in alive]
            alive = [1 if f == 1 else -1 for f in flags]
            results.append(make_result(f"atk{a}", flags, eps=0.001 * (e + 1), position=a, cumulative=True))
    rng.shuffle(results)  # results_at sorts by position
    record = make_record(results, n=6, label=label)
    record.model["kwta_ratio"] = ratio
    return record


def sweep_records(n_eps: int, n_attacks: int) -> list[EvalRecord]:
    return [sweep_record(n_eps, n_attacks, "kwta_a", 0.1, 0), sweep_record(n_eps, n_attacks, "kwta_b", 0.2, 1)]


def renders(records: Sequence[EvalRecord]) -> dict[str, str]:
    """Every rendering of ``records``: each format wide and long, the matrices, the Markdown and HTML reports."""
    out = {}
    for fmt in FORMATS.names():
        out[f"table {fmt}"] = render_stdout(records, fmt)
        out[f"long {fmt}"] = render_stdout(records, fmt, detail=True)
        out[f"matrix {fmt}"] = render_records_as_matrices(records, fmt)
    out["report md"] = build_markdown_report(records)
    out["report html"] = build_report(records)
    return out


def reference_suite_order(sequences: Sequence[Sequence[Any]]) -> list[Any]:
    """The merge :func:`suite_order` replaced, verbatim (quadratic): the reference it must agree with."""
    remaining = [list(dict.fromkeys(seq)) for seq in sequences]
    seen = list(dict.fromkeys(item for seq in remaining for item in seq))
    order: list[Any] = []
    while any(remaining):
        heads = [item for item in seen if any(seq and seq[0] == item for seq in remaining)]
        later = {item for seq in remaining for item in seq[1:]}
        item = next((h for h in heads if h not in later), heads[0])
        order.append(item)
        remaining = [[x for x in seq if x != item] for seq in remaining]
        seen.remove(item)
    return order


def test_suite_order_chooses_what_the_reference_merge_chooses() -> None:
    rng = random.Random(7)
    for _ in range(3000):  # few items: repeats, shared heads, disagreeing suites (cycles) and empty suites
        items = rng.randint(1, 8)
        sequences = [[rng.randrange(items) for _ in range(rng.randint(0, 7))] for _ in range(rng.randint(0, 4))]
        assert suite_order(sequences) == reference_suite_order(sequences), sequences


def test_the_index_answers_what_the_record_scans_answer() -> None:
    nan = math.nan
    record = sweep_record(4, 3, "m", 0.1, 3)
    twin = make_result("atk1", [1] * 6, eps=0.002, position=9)  # a second unit of a key: the first one counts
    odd = make_result("atk0", [1] * 6, eps=0.5, position=0)
    odd.eps = nan  # NaN equals nothing, itself included (a key holding this very object matches, as in a tuple)
    record.results += [twin, odd, make_result("atk2", [1] * 6, norm="l2", eps=0.0, position=2)]
    record.worst_case.append(record.worst_case[0].__class__("linf", 0.002, "0.002", [], record.clean, [-1] * 6))
    index = RecordIndex(record)
    keys = [(r.label, r.norm, r.eps) for r in record.results] + [("atk9", "linf", 0.001), ("atk0", "linf", nan),
                                                                ("atk2", "l2", -0.0), ("atk1", "linf", 2e-3)]
    for label, norm, eps in keys:
        assert index.result(label, norm, eps) is record.result(label, norm, eps)
        assert [id(r) for r in index.results_at(norm, eps)] == [id(r) for r in record.results_at(norm, eps)]
        assert index.worst(norm, eps) is record.worst(norm, eps)
    assert index.results_at("linf", odd.eps) == [] and index.result("atk0", "linf", odd.eps) is odd
    assert index.threat_points() == record.threat_points()


@pytest.mark.parametrize("which", ["quickstart", "quickstart kwta", "sweep"])
def test_renders_are_the_bytes_the_record_scans_give(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if which == "sweep":
        records = sweep_records(6, 5)
    else:
        records = load_records(sorted(QUICKSTART.glob("*.json"))[: 1 if which.endswith("kwta") else None])
    indexed = renders(records)
    for name in ("result", "results_at", "worst"):  # the index answering by the record's scans, as before
        monkeypatch.setattr(RecordIndex, name, lambda self, *key, _name=name: getattr(self.record, _name)(*key))
    monkeypatch.setattr(report, "suite_order", reference_suite_order)
    monkeypatch.setattr(narrow, "suite_order", reference_suite_order)
    assert renders(records) == indexed


def scans(render: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times ``render`` scans a record's results (its ``result``, ``results_at``, ``worst``)."""
    count = [0]
    for name in ("result", "results_at", "worst"):
        scan = getattr(EvalRecord, name)

        def counted(self: EvalRecord, *key: Any, _scan: Callable = scan) -> Any:
            count[0] += 1
            return _scan(self, *key)
        monkeypatch.setattr(EvalRecord, name, counted)
    render()
    monkeypatch.undo()
    return count[0]


def test_rendering_scans_the_results_a_fixed_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, a scan per cell: 4 times the epsilons, 4 times the scans (each over 4 times the results)."""
    small, large = sweep_records(5, 4), sweep_records(20, 4)
    assert scans(lambda: renders(large), monkeypatch) == scans(lambda: renders(small), monkeypatch)


def python_calls(render: Callable[[], Any]) -> int:
    """The Python function calls (and generator resumptions) ``render`` makes: deterministic, unlike its time."""
    count = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            count[0] += 1
    render()  # caches (compiled patterns, imports) filled first
    sys.setprofile(profile)
    try:
        render()
    finally:
        sys.setprofile(None)
    return count[0]


@pytest.mark.parametrize("shape", ["eps sweep", "many attacks"])
def test_rendering_work_grows_linearly_with_the_results(shape: str) -> None:
    """Results doubled twice: the calls the second doubling adds are (up to 5%) twice those the first added, as
    for work linear in the results (the cost that does not grow cancels out); quadratic rendering added more (2.2
    to 2.4 times at these sizes, before). Many epsilons exercise the lookups, many attacks the suite merge."""
    shapes = [(5, 4), (10, 4), (20, 4)] if shape == "eps sweep" else [(2, 12), (2, 24), (2, 48)]
    calls = [python_calls(lambda: renders(sweep_records(*s))) for s in shapes]
    assert calls[2] - calls[1] <= 2.1 * (calls[1] - calls[0]), calls
