"""Tables rendered from stored records: Markdown, CSV, LaTeX, JSON; eps notation, intervals, flags."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_records
from kwta_robust.formats import render_table as render
from kwta_robust.formats.latex import latex_escape
from kwta_robust.report import compare_table, detail_table
from kwta_robust.results import NoiseResult, load_record, save_record, wilson_interval

EPS = 8 / 255


def stored_records(tmp_path: Path):
    kwta = make_record([
        make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], eps=EPS),
        make_result("bpda", [0, 0, 0, 0, 1, 1, -1, -1, -1, -1], eps=EPS, kind="bpda", position=1, cumulative=True),
    ], label="kwta_0.1")
    kwta.model.update({"kwta_ratio": 0.1, "kwta_mode": "volume", "weight_sparsity": {"overall": 0.5}})
    kwta.diagnostics = run_checks(kwta)
    kwta.noise.append(NoiseResult("numenta", [0.0, 0.5], 1, 3, {"noise_score": 15}, 0.2))
    relu_model = {"activation": "relu", "weight_sparsity": {"overall": 0.0}}
    relu = make_record([
        make_result("pgd", [0, 0, 0, 0, 0, 0, 0, 0, 0, 1], eps=EPS),
        make_result("bpda", [-1] * 9 + [1], eps=EPS, kind="bpda", position=1, cumulative=True),
    ], label="relu")
    relu.model.update(relu_model)
    paths = []
    for rec in (kwta, relu):
        path = tmp_path / f"{rec.label}.json"
        save_record(rec, path)
        paths.append(path)
    return [load_record(p) for p in paths]


def test_markdown_compare_table(tmp_path: Path) -> None:
    records = stored_records(tmp_path)
    text = render(compare_table(records), "md")
    lines = text.splitlines()
    header = lines[0]
    assert "| pgd Linf 8/255 |" in header and "| +bpda Linf 8/255 |" in header
    assert "worst case Linf 8/255" in header and "noise score" in header and header.endswith("| flags |")
    lo, hi = wilson_interval(6, 10)
    assert header.startswith("| model | activation | weight sparsity | n | clean |")
    row = next(line for line in lines if line.startswith("| kwta_0.1 "))
    assert row.startswith("| kwta_0.1 | kwta 0.1 volume | 50.0 | 10 |")
    assert f"60.0 ({100 * lo:.1f}–{100 * hi:.1f})" in row
    assert "| 20.0 (" in row  # worst case 2/10
    assert "| 15 |" in row and row.endswith("| adaptive-beats-pgd |")
    relu_row = next(line for line in lines if line.startswith("| relu "))
    assert relu_row.endswith("| none |") and "| — |" in relu_row  # relu has no noise probe
    assert any("[kwta_0.1] critical adaptive-beats-pgd: bpda beats pgd" in line for line in lines)


def test_csv_and_json_keep_numbers(tmp_path: Path) -> None:
    records = stored_records(tmp_path)
    rows = list(csv.DictReader(io.StringIO(render(compare_table(records), "csv"))))
    assert [r["model"] for r in rows] == ["kwta_0.1", "relu"]
    lo, hi = wilson_interval(6, 10)
    assert float(rows[0]["pgd Linf 8/255 (%)"]) == pytest.approx(60.0)
    assert float(rows[0]["pgd Linf 8/255 ci_low (%)"]) == pytest.approx(100 * lo, abs=1e-4)
    assert float(rows[0]["pgd Linf 8/255 ci_high (%)"]) == pytest.approx(100 * hi, abs=1e-4)
    assert rows[1]["noise score"] == ""
    data = json.loads(render(compare_table(records), "json"))
    first = data["rows"][0]
    assert first["worst case Linf 8/255 (%)"] == pytest.approx(20.0)
    assert first["n"] == 10 and first["flags"] == "adaptive-beats-pgd"
    assert data["rows"][1]["noise score"] is None


def test_latex(tmp_path: Path) -> None:
    text = render(compare_table(stored_records(tmp_path)), "latex")
    assert text.startswith(r"\begin{tabular}")
    assert r"\toprule" in text and r"\bottomrule" in text
    assert "pgd Linf 8/255" in text
    assert r"60.0\,{\scriptsize[" in text
    assert r"kwta\_0.1" in text and "adaptive-beats-pgd" in text
    assert latex_escape("50% & a_b") == r"50\% \& a\_b"


def test_long_layout(tmp_path: Path) -> None:
    records = stored_records(tmp_path)
    md = render(detail_table(records[0]), "md")
    assert "| kwta_0.1 | Linf 8/255 | +bpda | bpda |" in md
    assert "| kwta_0.1 | Linf 8/255 | worst case |" in md
    assert "noise numenta: levels [0.0, 0.5], 1 draws, noise score 15" in md
    rows = list(csv.DictReader(io.StringIO(render_records(records, "csv", "long"))))
    assert {r["model"] for r in rows} == {"kwta_0.1", "relu"}
    assert len(rows) == 2 * 4  # clean, two attacks, worst case per record
    assert json.loads(render_records(records, "json", "long"))["rows"][0]["attack"] == "clean"


def test_bad_format_and_empty() -> None:
    with pytest.raises(ConfigError, match="unknown format 'html'"):
        render(compare_table([make_record([make_result("pgd", [1])])]), "html")
    with pytest.raises(ConfigError, match="no records"):
        compare_table([])
    with pytest.raises(ConfigError, match="layout"):
        render_records([make_record([make_result("pgd", [1])])], "md", "tall")
