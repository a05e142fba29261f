"""The HTML report (kwta_robust.html_report): numbers from the records, self-contained, deterministic, escaped,
cascade counts, generic sections for fields other modules add, partial records, sweeps, and the CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from html_helpers import expected_numbers, parse_page, quickstart_records
from kwta_robust.cli import main
from kwta_robust.html_records import cascade_counts
from kwta_robust.html_report import build_report
from kwta_robust.html_sweep import load_sweep
from kwta_robust.results import EvalRecord, Flag, save_record


@pytest.fixture(scope="module")
def records() -> list[EvalRecord]:
    return quickstart_records()


@pytest.fixture(scope="module")
def page(records) -> str:
    return build_report(records, title="quickstart report")


def test_every_number_of_the_records_is_on_the_page(records, page) -> None:
    text = parse_page(page).text
    for rec in records:
        for number in expected_numbers(rec):
            assert number in text, number
        assert f"{rec.noise_score():g}" in text
        assert rec.config_hash in text and rec.model["checkpoint_sha256"] in text
        assert rec.provenance["versions"]["torch"] in text
        assert shlex.join(rec.provenance["command"]) in text
    kwta = records[0]
    flag = kwta.diagnostics[0]
    assert flag.code == "adaptive-beats-pgd" and flag.message in text
    assert "broken_among_survivors" in text  # the evidence, not only the message
    worst = kwta.worst("linf", 0.1)
    robust_ids = [kwta.dataset["indices"][i] for i, b in enumerate(worst.first_broken_by) if b == -1]
    assert len(robust_ids) == worst.robust.correct == 10
    assert ", ".join(map(str, robust_ids)) in text
    for section in ("Overview", "Comparison table", "Robust accuracy vs epsilon", "Cascade", "Worst case", "Noise",
                    "Diagnostics", "Attacks", "Provenance"):
        assert f"<h2>{section}</h2>" in page


def test_charts_show_every_attack_and_model(records, page) -> None:
    svgs = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    titles = [parse_page(s).text for s in svgs]
    chart_titles = [svg.split('aria-label="', 1)[1].split('"', 1)[0] for svg in svgs]
    assert len(chart_titles) == len(set(chart_titles)) == 2 + 2 + 4 + 1  # no chart twice
    for rec in records:
        assert any(t.startswith(f"{rec.label}: robust accuracy vs eps (linf)") for t in titles)
        assert any(t.startswith(f"{rec.label}: samples broken by each attack") for t in titles)
    for label in ("worst case", "pgd", "bpda-smooth", "transfer"):
        assert any(t.startswith(f"{label}: robust accuracy vs eps (linf), per model") for t in titles)
    assert any(t.startswith("accuracy under numenta noise (noise pixel value 1)") for t in titles)
    pgd = records[0].result("pgd", "linf", 0.1)  # a point's tooltip carries the record's numbers
    assert "pgd at Linf 0.1: 67.5 (60.7–73.7), 135/200" in page and pgd.robust.correct == 135


def test_cascade_counts_match_the_records(records) -> None:
    for rec in records:
        for norm, eps in rec.threat_points():
            attacks, broken, clean_wrong, robust = cascade_counts(rec, norm, eps)
            assert clean_wrong + sum(broken) + robust == rec.clean.n
            assert clean_wrong == rec.clean.n - rec.clean.correct and robust == rec.worst(norm, eps).robust.correct
            for label, count in zip(attacks, broken):  # cascade mode: each attack ran on the survivors only
                assert count == rec.result(label, norm, eps).n_broken
    assert cascade_counts(records[0], "linf", 0.1)[1:] == ([53, 125, 0], 12, 10)


def test_self_contained_and_deterministic(records, page) -> None:
    assert build_report(quickstart_records(), title="quickstart report") == page
    parsed = parse_page(page)
    assert not any(tag in ("script", "link", "img", "iframe", "object", "embed") for tag, _ in parsed.tags)
    for tag, attrs in parsed.tags:
        for name, value in attrs.items():
            assert name not in ("src", "srcset") and not name.startswith("on"), (tag, name)
            if name == "href":
                assert value.startswith("#"), value
            if name == "xmlns":
                assert value == "http://www.w3.org/2000/svg"  # a namespace name, never fetched
    without_ns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns and "https://" not in without_ns and "url(" not in without_ns
    assert " id=" not in re.sub(r"<section id=\"[a-z-]+\">", "", page)  # no ids that could collide or vary


def test_text_from_records_cannot_inject_markup(records) -> None:
    evil = copy.deepcopy(records[0])
    label = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    evil.model["label"] = label
    evil.diagnostics.append(Flag("odd-flag", "warning", "message with <b>bold</b> & \"quotes\"",
                                 {"<i>key</i>": "<svg onload=alert(1)>"}))
    evil.results[0].label = "pgd</text><script>x</script>"
    page = build_report([evil, records[1]])
    parsed = parse_page(page)
    assert not any(tag in ("script", "img", "i") for tag, _ in parsed.tags)  # (<b> is the page's own)
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert label in parsed.text and "message with <b>bold</b> & \"quotes\"" in parsed.text
    assert "<svg onload=alert(1)>" in parsed.text and "pgd</text><script>x</script>" in parsed.text


@dataclasses.dataclass
class RecordWithCalibration(EvalRecord):
    """A record as another module may extend it: a section this renderer has no dedicated view for."""

    calibration: dict = dataclasses.field(default_factory=dict)


def test_unknown_record_sections_are_shown_generically(records) -> None:
    fields = {f.name: getattr(records[0], f.name) for f in dataclasses.fields(EvalRecord)}
    layers = [{"module": "features.2", "kind": "top-k gate", "wrapped": True},
              {"module": "<classifier.2>", "kind": "piecewise-constant", "wrapped": False}]
    probe = {"n": 4, "probed": 3, "layers": [{"name": "features.2", "module_class": "TopK", "kinds": ["gate"],
                                              "grouping": "volume", "native": False, "evidence": {"k": 3}}]}
    assert "<h2>Detection</h2>" in build_report([dataclasses.replace(records[0], detection=probe)])
    rec = RecordWithCalibration(**fields, calibration={"method": "probe", "layers": layers})
    page = build_report([rec])
    assert "<h2>Calibration</h2>" in page
    section = page[page.index('<section id="extra-calibration">'):]
    section = section[:section.index("</section>")]
    table = re.search(r'<table class="data"><thead><tr><th>module</th><th>kind</th><th>wrapped</th></tr>', section)
    assert table is not None  # a list of objects becomes one table
    assert "<td>&lt;classifier.2&gt;</td><td>piecewise-constant</td><td>false</td>" in section


def test_partial_record_is_marked(records) -> None:
    partial = copy.deepcopy(records[1])
    partial.status = "partial"
    page = build_report([records[0], partial])
    text = parse_page(page).text
    assert "partial: numbers are not final" in text and "1 partial (not final)" in text


def _sweep_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "sweep"
    cells = []
    for i, (ratio, sparsity, flags) in enumerate([(1.0, 0.0, [1, 1, 1, 0]), (1.0, 0.5, [1, 1, 0, 0]),
                                                   (0.25, 0.0, [1, 0, 0, 0])]):
        rec = make_record([make_result("pgd", flags, eps=0.3)], label=f"cell{i}")
        rec.model["sweep_cell"] = {"kwta_ratio": ratio, "weight_sparsity": sparsity, "pruning_method": "magnitude"}
        path = directory / "cells" / f"cell{i}" / "eval-abc.json"
        save_record(rec, path)
        cells.append({"label": f"cell{i}", "kwta_ratio": ratio, "weight_sparsity": sparsity, "status": "done",
                      "record": str(path.relative_to(directory))})
    cells.append({"label": "cell3", "kwta_ratio": 0.25, "weight_sparsity": 0.5, "status": "failed",
                  "error": "RuntimeError: out of memory", "record": "cells/cell3/eval-abc.json"})
    (directory / "sweep.json").write_text(json.dumps({"name": "grid", "description": "a 2x2 grid", "cells": cells}))
    return directory


def test_sweep_report(tmp_path: Path) -> None:
    directory = _sweep_dir(tmp_path)
    run = load_sweep(directory)
    assert [r.label for r in run.records] == ["cell0", "cell1", "cell2"] and run.name == "grid"
    out = tmp_path / "r.html"
    assert main(["report", "--sweep", str(directory), "--out", str(out)]) == 0
    page = out.read_text()
    text = parse_page(page).text
    assert "<h2>Sweep: robustness matrices</h2>" in page and "kwta-robust: grid" in text
    assert "worst case robust accuracy at Linf 0.3 (magnitude pruning, n=4)" in text
    assert "75.0 [30.0, 95.5]" in text  # cell0's heatmap cell: 3/4 with its Wilson interval
    assert "failed cells (no record): cell3" in text and "RuntimeError: out of memory" in text
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg"') >= 4


def test_report_never_overwrites_its_sweep(tmp_path: Path, capsys) -> None:
    """report --sweep DIR --out DIR/sweep.json replaced the sweep's manifest (only RECORD arguments were inputs);
    its listed records are inputs too (this manifest has no format marker and its records are found by path)."""
    directory = _sweep_dir(tmp_path)
    before = {path: path.read_bytes() for path in directory.rglob("*.json")}
    record = Path("cells") / "cell1" / "eval-abc.json"
    for target, what in [(directory / "sweep.json", "--sweep's manifest"),
                         (directory / record, f"--sweep's record {record}")]:
        assert main(["report", "--sweep", str(directory), "--out", str(target)]) == 2
        assert capsys.readouterr().err.strip() == (f"error: --out: {target} is also given as {what}; the output would "
                                                   "overwrite it, use another path")
    assert {path: path.read_bytes() for path in directory.rglob("*.json")} == before
    assert main(["report", "--sweep", str(directory), "--out", str(directory / "report.html")]) == 0


def test_report_command(tmp_path: Path, records, capsys) -> None:
    paths = []
    for rec in records:
        paths.append(tmp_path / f"{rec.label}.json")
        save_record(rec, paths[-1])
    out = tmp_path / "out" / "report.html"
    assert main(["report", *map(str, paths), "--out", str(out), "--title", "my title"]) == 0
    assert out.read_text() == build_report(records, title="my title")
    capsys.readouterr()
    assert main(["report", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: report: give RECORD.json files and/or --sweep DIR"
    assert main(["report", "--sweep", str(tmp_path / "none")]) == 2
    assert "--sweep: " in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--sweep", str(tmp_path / "empty")]) == 2
    assert "no complete cell record" in capsys.readouterr().err


def test_a_list_of_ids_renders_as_each_id_did() -> None:
    """Sample ids (10,000 in a worst case) are joined at once; the text is what rendering each id gave."""
    from kwta_robust.html import FOLD_AFTER, Markup, value_html

    for ids in ([3, 1, 4], list(range(-5, FOLD_AFTER + 5)), [7]):
        page = value_html(ids)
        each = ", ".join(str(value_html(v)) for v in ids)
        assert each in str(page) and (len(ids) > FOLD_AFTER) == ("<details>" in str(page))
        assert isinstance(page, Markup)
    assert "true" in str(value_html([1, True]))  # a bool is not an id
