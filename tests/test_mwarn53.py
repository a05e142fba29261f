"""A matrix cell whose record says its number is unreliable or an overstated upper bound is marked ``!`` in every
text format (Markdown, LaTeX, CSV/JSON ``flags`` column) with a legend line naming the flag and the cell: a
``budget-still-lowering`` warning (the worst case at Linf 0.1 overstated) showed nowhere in the matrices, a critical
flag only in the legend of Markdown and LaTeX. Matrices without such flags render as before."""

from __future__ import annotations

import csv
import io
import json

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_matrices
from kwta_robust.matrix import build_matrices, matrix_table
from kwta_robust.plots import heatmap_figure
from kwta_robust.report import cell_text
from kwta_robust.results import Flag

N = 10
BUDGET = Flag("budget-still-lowering", "warning", "pgd-200 broke 3 of the 6 samples pgd left robust",
              {"smaller": "pgd", "larger": "pgd-200", "norm": "linf", "eps": 0.1, "broken": 3, "n": N})


def _record(ratio: float, robust: dict[float, int]):
    """A dense sweep-cell record at k/N ``ratio`` (1.0: the ReLU twin): pgd keeps ``robust[eps]`` of N."""
    results = [make_result("pgd", [1] * k + [0] * (N - k), eps=eps) for eps, k in robust.items()]
    rec = make_record(results, label=f"cell{ratio:g}")
    rec.model["activation"] = "relu" if ratio == 1.0 else "kwta"
    rec.model["kwta_ratio"] = None if ratio == 1.0 else ratio
    rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": 0.0, "pruning_method": "none",
                               "cell_id": f"cell{ratio:g}", "activation": rec.model["activation"]}
    return rec


def _records():
    return [_record(1.0, {0.1: 6, 0.3: 1}), _record(0.1, {0.1: 7, 0.3: 2})]


def _section(text: str, title: str) -> str:
    """The part of ``text`` from the matrix titled ``title`` to the next matrix's title."""
    return text.split(title, 1)[1].split("robust accuracy at", 1)[0]


def test_a_budget_still_lowering_cell_is_marked_in_every_text_format_with_a_legend_line() -> None:
    records = _records()
    records[1].diagnostics = [BUDGET]
    matrices = build_matrices(records)
    md = render_matrices(matrices, "md")
    row = next(line for line in _section(md, "worst case robust accuracy at Linf 0.1").splitlines()
               if line.startswith("| 0.1 "))
    assert "70.0 (39.6–89.3)!" in row
    other = next(line for line in _section(md, "worst case robust accuracy at Linf 0.3").splitlines()
                 if line.startswith("| 0.1 "))
    assert "!" not in other  # its evidence names Linf 0.1: the other threat point is not marked
    clean = next(line for line in md.split("clean accuracy", 1)[1].splitlines() if line.startswith("| 0.1 "))
    assert "!" not in clean  # clean accuracy is no attack's upper bound
    legend = [line for line in md.split("\n\n")[0].splitlines() if "budget-still-lowering" in line]
    assert legend and legend[0].startswith("- ! = a warning") and "k/N 0.1 × 0 (dense) cell0.1" in " ".join(legend)
    wide = render_matrices(matrices, "wide")
    assert "| 0.1 | 70.0 (39.6–89.3)! |" in wide
    tex = render_matrices(matrices, "latex")
    assert r"0.1 & 70.0\,{\scriptsize[39.6, 89.3]}! \\" in tex
    assert any(line.startswith(r"\item ! = a warning") and "budget-still-lowering" in line
               for line in tex.splitlines())
    rows = list(csv.DictReader(io.StringIO(render_matrices(matrices, "csv"))))
    flagged = {(r["metric"], r["eps"], r["kwta_ratio"]) for r in rows if r["flags"] == "budget-still-lowering"}
    assert flagged == {("worst case", "0.1", "0.1"), ("pgd", "0.1", "0.1")}
    assert all(r["flags"] == "" for r in rows if (r["metric"], r["eps"], r["kwta_ratio"]) not in flagged)
    data = json.loads(render_matrices(matrices, "json"))
    assert {(r["metric"], r["eps"], r["kwta_ratio"]) for r in data["rows"] if r["flags"]} == {
        ("worst case", 0.1, 0.1), ("pgd", 0.1, 0.1)}
    assert any("budget-still-lowering" in n and "cell0.1" in n for n in data["notes"])
    worst = next(m for m in matrices if m.metric == "worst case" and m.eps == 0.1)
    fig = heatmap_figure(worst)  # the PNG marks the cell as the text formats do, and its caption says why
    assert "70.0 !\n[39.6, 89.3]" in [t.get_text() for t in fig.axes[0].texts]
    assert [t.get_text() for t in fig.texts] == ["! a warning that the number is an upper bound that may be overstated "
                                                 "(e.g. budget-still-lowering): see the matrices' legend"]


def test_a_critical_flag_marks_its_cells_in_markdown_and_latex_not_only_the_legend() -> None:
    records = _records()
    records[0].diagnostics = [Flag("adaptive-beats-pgd", "critical", "bpda broke 5 pgd survivors")]
    matrices = build_matrices(records)
    md = render_matrices(matrices, "wide")
    assert "| 1.0 (ReLU twin) | 60.0 (31.2–83.2)! |" in md
    assert "| 0.1 | 70.0 (39.6–89.3) |" in md  # the unflagged cell stays unmarked
    assert "- ! after a cell's number: its record holds a critical diagnostics flag" in md
    tex = render_matrices(matrices, "latex")
    assert r"1.0 (ReLU twin) & 60.0\,{\scriptsize[31.2, 83.2]}! \\" in tex
    rows = list(csv.DictReader(io.StringIO(render_matrices(matrices, "csv"))))
    assert {r["flags"] for r in rows if r["record"] == "cell1"} == {"adaptive-beats-pgd"}


def test_unflagged_cells_render_as_before_and_only_upper_bound_warnings_mark() -> None:
    plain = build_matrices(_records())
    records = _records()
    records[1].diagnostics = [Flag("eps-not-monotonic", "warning", "-", {"norm": "linf"}),
                              Flag("budget-checked", "info", "-")]
    other = build_matrices(records)
    for fmt in ("md", "wide", "latex", "csv", "json"):  # a warning that bounds nothing: byte for byte as without
        assert render_matrices(other, fmt) == render_matrices(plain, fmt)
    assert "!" not in render_matrices(plain, "wide") and "flags" not in render_matrices(plain, "csv").split(",")
    assert cell_text(matrix_table(plain[1]).rows[1][1]) == "70.0 (39.6–89.3)"
    records[1].diagnostics.append(Flag("gates-without-bpda", "warning", "gates no BPDA acted on; square ran"))
    masked = render_matrices(build_matrices(records), "wide")  # a masking warning bears on every threat point
    assert masked.count("| 0.1 | 70.0 (39.6–89.3)! |") == 2 and masked.count("| 0.1 | 20.0 (5.6–51.0)! |") == 2
    assert "| 0.1 | 100.0 (72.2–100.0) |" in masked  # clean accuracy is not marked for it
