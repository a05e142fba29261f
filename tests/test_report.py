"""Tables rendered from stored records: Markdown, CSV, LaTeX, JSON; eps notation, intervals, flags."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from eval_helpers import SEED_ONLY_HASH, make_record, make_result
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_records, render_stdout
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
    assert header.startswith("| model | activation | weight sparsity (%) | n | clean |")
    row = next(line for line in lines if line.startswith("| kwta_0.1 "))
    assert row.startswith("| kwta_0.1 | kwta 0.1 volume | 50.0 | 10 |")
    assert f"60.0 ({math.floor(1000 * lo) / 10:.1f}–{math.ceil(1000 * hi) / 10:.1f})" in row  # outward (outward50)
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
    assert latex_escape("a − b: p < 1e-6, 3× ≤ 4") == r"a $-$ b: p \textless{} 1e-6, 3$\times$ $\leq$ 4"
    assert latex_escape("run|2 > 1") == r"run\textbar{}2 \textgreater{} 1"


def test_the_paired_comparison_follows_the_records_in_latex_and_wide_only(tmp_path: Path) -> None:
    """A paper's table of two models on the same samples carries their paired comparison (Newcombe interval,
    McNemar) as ``md`` does; csv and json stay one rectangular table."""
    records = stored_records(tmp_path)
    latex = render_stdout(records, "latex")
    assert latex.count(r"\begin{tabular}") == 2 and "McNemar p" in latex
    assert r"kwta\_0.1 $-$ relu & clean & 10 &" in latex
    wide = render_stdout(records, "wide")
    assert "| kwta_0.1 − relu | clean | 10 |" in wide and "McNemar p" in wide
    for fmt in ("csv", "json"):  # one table: the paired numbers are its columns (paired_columns), no paired table
        out = render_stdout(records, fmt)
        assert "Paired over the same samples" not in out and "kwta_0.1 − relu" not in out
        assert "paired clean McNemar p" in out
    assert "McNemar" not in render_stdout(records[:1], "latex")  # one record: nothing to pair


def test_long_layout(tmp_path: Path) -> None:
    records = stored_records(tmp_path)
    md = render(detail_table(records[0]), "md")
    assert "| kwta_0.1 | Linf 8/255 | +bpda | bpda |" in md
    assert "| kwta_0.1 | Linf 8/255 | worst case |" in md
    assert "noise numenta: levels 0 / 0.5, 1 draw, noise score 15" in md
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


def test_numbers_print_as_papers_print_them() -> None:
    """Exact halves round up (27/48 = 56.25% is 56.3, not Python's half-to-even 56.2); a noise score of 100,685
    prints whole, not as 1.007e+05."""
    from kwta_robust.report import number_text, percent_text

    assert [percent_text(v) for v in (27 / 48, 0.145, 0.875, 2 / 3, 0.0, 1.0)] == \
        ["56.3", "14.5", "87.5", "66.7", "0.0", "100.0"]
    assert percent_text(0.12345, 2) == "12.35" and percent_text(float("nan")) == "nan"
    assert [number_text(v) for v in (100685.0, 12345.67, 12.3456, 0.1234)] == ["100685", "12345.7", "12.35", "0.1234"]
    record = make_record([make_result("pgd", [1] * 27 + [0] * 21)])
    record.noise = [NoiseResult("numenta", [0.0, 0.05], 1, 0, {"noise_score": 100685.0, "accuracy": [0.99, 0.98]},
                                0.1)]
    text = render(compare_table([record]), "md")
    assert "| 100685 |" in text and "e+05" not in text and "56.3 (" in text


def test_cascade_and_standalone_numbers_never_share_a_column() -> None:
    """A cascade record's '+fgsm' (robust after pgd and fgsm) and an independent record's fgsm (fgsm alone) are
    different numbers: two columns (and two rows, two matrices), each '—' for the other record."""
    from kwta_robust.narrow import threat_tables

    cascade = make_record([make_result("pgd", [1] * 6 + [0] * 4),
                           make_result("fgsm", [1] * 5 + [0] + [-1] * 4, position=1, cumulative=True)], label="A")
    independent = make_record([make_result("pgd", [1] * 6 + [0] * 4), make_result("fgsm", [1] * 8 + [0] * 2,
                                                                                    position=1)],
                              label="B", mode="independent")
    table = compare_table([cascade, independent])
    fgsm = [i for i, h in enumerate(table.headers) if "fgsm" in h]
    assert [table.headers[i] for i in fgsm] == ["+fgsm Linf 0.3", "fgsm Linf 0.3"]
    assert [[row[i].value for i in fgsm] for row in table.rows] == [[0.5, None], [None, 0.8]]
    rows = {row[0].value: [c.value for c in row[1:]] for row in threat_tables([cascade, independent])[0].rows}
    assert rows["+fgsm"] == [0.5, None] and rows["fgsm"] == [None, 0.8]


def test_cascade_rows_keep_every_records_suite_order() -> None:
    """A record with pgd, bpda next to one with pgd, fgsm, bpda: the first-seen order put '+bpda' above '+fgsm',
    so the second record's '+fgsm' (66.7, after pgd and fgsm) sat below its '+bpda' (50.0, after all three) in a
    column of numbers 'after that attack and every attack above it'. Now the rows and columns keep each record's
    suite order (pgd, +fgsm, +bpda); three compared models' transfers likewise (each runs the others in the
    models' order, which a first-seen order broke for the second and third); a suite order already consistent
    (every single-suite table) is unchanged."""
    from kwta_robust.narrow import threat_tables
    from kwta_robust.report import suite_order

    short = make_record([make_result("pgd", [1] * 6 + [0] * 4),
                         make_result("bpda", [1] * 2 + [0] * 4 + [-1] * 4, position=1, cumulative=True)], label="A")
    long = make_record([make_result("pgd", [1] * 6 + [0] * 4),
                        make_result("fgsm", [1] * 5 + [0] + [-1] * 4, position=1, cumulative=True),
                        make_result("bpda", [1] * 3 + [0] * 2 + [-1] * 5, position=2, cumulative=True)], label="B")
    for records in ([short, long], [long, short]):
        assert [row[0].value for row in threat_tables(records)[0].rows] == ["pgd", "+fgsm", "+bpda", "worst case"]
        assert [h for h in compare_table(records).headers if "Linf" in h][:3] == [
            "pgd Linf 0.3", "+fgsm Linf 0.3", "+bpda Linf 0.3"]
    transfers = [["pgd", "t(B)", "t(C)"], ["pgd", "t(A)", "t(C)"], ["pgd", "t(A)", "t(B)"]]
    assert suite_order(transfers) == ["pgd", "t(A)", "t(B)", "t(C)"]
    assert suite_order([["pgd", "bpda"], ["pgd", "apgd", "bpda", "square"]]) == ["pgd", "apgd", "bpda", "square"]
    assert suite_order([["a", "b"], ["b", "a"]]) == ["a", "b"]  # no order fits both: the first seen goes first


def test_the_html_worst_case_names_the_attack_that_broke_the_most() -> None:
    """Independent mode: each attack's own count (pgd broke 3, bpda 5), not the first-broken-by credit that gives
    pgd every sample both broke."""
    from kwta_robust.html_records import worst_case_section

    both = [make_result("pgd", [0, 0, 0] + [1] * 7), make_result("bpda", [0] * 5 + [1] * 5, kind="bpda", position=1)]
    independent = worst_case_section([make_record(both, mode="independent")])
    assert "<td>bpda</td>" in independent.body and "<td>pgd</td>" in independent.body  # strongest: bpda; first: pgd
    assert independent.body.index("<td>bpda</td>") > independent.body.index("<td>pgd</td>")
    cascade = worst_case_section([make_record([make_result("pgd", [0, 0, 0] + [1] * 7),
                                               make_result("bpda", [-1] * 3 + [0, 0] + [1] * 5, kind="bpda",
                                                           position=1, cumulative=True)])])
    assert cascade.body.count("<td>pgd</td>") == 2  # in cascade pgd broke 3, bpda 2 of what it left


def test_the_noise_score_column_says_what_it_holds() -> None:
    """The column is the first numenta probe's score, a count over the images evaluated: its note gives the
    definition, the settings, the score per image and level, and names any further numenta probe left out."""
    pgd = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    record = make_record([pgd], label="kwta")
    record.noise = [
        NoiseResult("numenta", [0.0, 0.5], 2, 0, {"noise_score": 15.0, "num_samples": 10,
                                                  "params": {"value": 1.0}}, 0.1),
        NoiseResult("numenta", [0.0, 0.5], 2, 0, {"noise_score": 12.0, "num_samples": 10,
                                                  "params": {"value": 0.7469}}, 0.1),
    ]
    table = compare_table([record])
    assert table.rows[0][table.headers.index("noise score")].value == 15.0
    note, = [n for n in table.notes if n.startswith("noise score:")]
    assert "Ahmad & Scheinkman 2019" in note and "levels 0 / 0.5, 2 draws, noise pixel value 1" in note
    assert "per image and level: 75.0%; in parentheses" in note  # 15 of 2 levels x 10 images; no counts: no interval
    assert note.endswith("else the score is shown alone")
    other, = [n for n in table.notes if "numenta probes" in n]
    assert "shows noise numenta [1], the first of 2 numenta probes" in other
    assert "the others: noise numenta [2]: levels 0 / 0.5, 2 draws, noise pixel value 0.7469, noise score 12" in other


def test_tables_say_the_sanity_attack_ran_and_what_it_left() -> None:
    """A table without a large-eps-not-zero flag still says the check ran, per record (Carlini et al. 2019)."""
    pgd = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    broken = make_result("sanity-pgd", [0] * 10, eps=1.0)
    stuck = make_result("sanity-pgd", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], eps=1.0)
    table = compare_table([make_record([pgd], label="relu", sanity=[broken]),
                           make_record([pgd], label="kwta", sanity=[stuck])])
    note, = [n for n in table.notes if n.startswith("sanity check:")]
    assert note.startswith("sanity check: sanity-pgd at Linf 1 leaves relu 0.0%, kwta 30.0% robust")
    assert not [n for n in compare_table([make_record([pgd])]).notes if n.startswith("sanity check:")]
    one = compare_table([make_record([pgd], label="kwta", sanity=[broken])])
    assert any(n.startswith("sanity check: sanity-pgd at Linf 1 leaves 0.0% robust") for n in one.notes)
    assert "large-eps-not-zero" in {f.code for f in run_checks(make_record([pgd], sanity=[stuck]))}
    assert one.notes[[n.startswith("sanity") for n in one.notes].index(True)].endswith("any image is within reach)")
    l2 = make_result("sanity-pgd", [0] * 10, norm="l2", eps=10.0)  # an L2 ball of radius 10 misses most of [0, 1]^784
    note, = [n for n in compare_table([make_record([pgd], sanity=[l2])]).notes if n.startswith("sanity check:")]
    assert note == "sanity check: sanity-pgd at L2 10 leaves 0.0% robust (must be about 0: an eps this large)"


def test_records_not_evaluated_alike_are_said_to_be_so() -> None:
    pgd = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    a, b = make_record([pgd], label="a"), make_record([pgd], label="b")
    assert not [n for n in compare_table([a, b]).notes if "evaluated on different" in n or "different evaluation" in n]
    b.dataset = {**b.dataset, "indices": list(range(10, 20))}
    b.config_hash = "def"
    notes = compare_table([a, b]).notes
    assert notes[0].startswith("the records were evaluated on different samples of toy (n 10 / 10)")
    assert notes[1].startswith(f"the records ran different evaluation configs (config hash {SEED_ONLY_HASH[:8]} / def)")
    b.dataset = {**b.dataset, "name": "digits"}
    assert compare_table([a, b]).notes[0] == ("NOT COMPARABLE: the records were evaluated on different data sets "
                                             "(a: toy test, n=10, b: digits test, n=10)")


def test_tables_give_the_lowest_robust_accuracy_the_budget_check_verified() -> None:
    """The budget check's re-runs broke samples the suite left robust: the notes give the tighter upper bound they
    prove (the worst case stays the suite's); kills of samples the suite already broke, or of no sample, say nothing."""
    from kwta_robust.results import Flag

    pgd = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], eps=0.1)  # robust: positions 0-5 (60%)

    def rerun(attack: str, broken: list[int], first: list[int] | None = None, eps: float = 0.1) -> Flag:
        evidence = {"source": "rerun", "attack": attack, "norm": "linf", "eps": eps, "factor": 3,
                    "broken_indices": broken}
        if first is not None:
            evidence["first_sample"] = {"broken_indices": first}
        return Flag("budget-checked", "info", "...", evidence)

    rec = make_record([pgd], label="kwta")
    rec.dataset = {**rec.dataset, "indices": [100 + i for i in range(10)]}  # data set ids, not positions
    rec.diagnostics = [rerun("pgd", [1, 4]), rerun("bpda-smooth", [4, 7], first=[5]),
                       Flag("budget-still-lowering", "warning", "ladder", {"source": "ladder"})]
    note, = [n for n in compare_table([rec]).notes if n.startswith("budget check")]
    assert note == ("budget check at Linf 0.1: its re-runs (pgd at 3x, bpda-smooth at 3x) broke 3 samples the suite "
                    "left robust (at positions 1, 4, 5; data set ids 101, 104, 105): the lowest robust accuracy this "
                    "run verified is 30.0% (10.7–60.4); the worst case keeps the suite's 60.0%, which its config "
                    "reproduces")
    assert rec.worst("linf", 0.1).robust.correct == 6  # the record's worst case is untouched
    assert note in detail_table(rec).notes
    relu = make_record([pgd], label="relu")
    relu.diagnostics = [rerun("pgd", [7]), rerun("bpda-smooth", [])]  # 7: already broken by the suite
    notes = compare_table([rec, relu]).notes
    assert [n[:33] for n in notes if "budget check at" in n] == ["[kwta] budget check at Linf 0.1: "]
    assert not [n for n in compare_table([relu]).notes if n.startswith("budget check")]


def test_records_sharing_a_model_label_are_told_apart_by_their_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """One weights file evaluated under two factory arguments gives two records labelled by its stem: `table` showed
    two columns and a paired row ``gsc − gsc`` that nobody could tell apart."""
    from kwta_robust.cli import main  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    for name, flags in (("kif1.json", [1] * 6 + [0] * 4), ("kif15.json", [1] * 3 + [0] * 7)):
        save_record(make_record([make_result("pgd", flags, eps=EPS)], label="gsc"), tmp_path / name)
    save_record(make_record([make_result("pgd", [1] * 10, eps=EPS)], label="relu"), tmp_path / "relu.json")
    assert main(["table", "kif1.json", "kif15.json", "relu.json"]) == 0
    out = capsys.readouterr().out
    assert "| gsc (kif1.json) " in out and "| gsc (kif15.json) " in out and "| relu " in out
    assert "gsc (kif1.json) − gsc (kif15.json)" in out and "gsc − gsc" not in out
    assert load_record(tmp_path / "kif1.json").label == "gsc"  # the records themselves are not changed


def test_noise_probes_without_a_column_are_in_the_notes_of_every_layout() -> None:
    """`compare` with noise.yaml: Gaussian, uniform and salt-and-pepper probes have no column, and neither the md nor
    the wide table said anything of them (only `--layout long` did)."""
    records = []
    for label, acc in (("gsc", [0.9, 0.7]), ("dense", [0.95, 0.4])):
        record = make_record([make_result("pgd", [1] * 6 + [0] * 4)], label=label)
        record.noise = [
            NoiseResult("numenta", [0.0, 0.5], 1, 0, {"noise_score": 15.0, "num_samples": 10}, 0.1),
            NoiseResult("gaussian", [0.0, 0.3], 3, 0, {"noise_score": 48.0, "accuracy": acc}, 0.1),
        ]
        records.append(record)
    wide = compare_table(records).notes
    assert "[gsc] noise gaussian: levels 0 / 0.3, 3 draws, noise score 48, accuracy % per level 90.0 / 70.0" in wide
    assert "[dense] noise gaussian: levels 0 / 0.3, 3 draws, noise score 48, accuracy % per level 95.0 / 40.0" in wide
    text = " ".join(render_stdout(records, "md").split())
    assert "[dense] noise gaussian: levels 0 / 0.3, 3 draws, noise score 48, accuracy % per level 95.0 / 40.0" in text
    records[1].noise = records[1].noise[1:]  # no numenta probe at all: still said
    records[0].noise = records[0].noise[1:]
    assert "[gsc] noise gaussian: levels 0 / 0.3" in render_stdout(records, "md")
