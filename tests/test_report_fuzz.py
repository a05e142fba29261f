"""Rendering records fuzz (table in every format, report): labels with line breaks in LaTeX, epsilons or attack
labels that two columns would share (a JSON row kept one of them), paths no file system takes (a NUL byte, a name
over 255 bytes) and record text that is not valid Unicode: each rendered faithfully or refused in one line."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from html_helpers import parse_page
from kwta_robust.cli import main
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_records, render_records_as_matrices, render_stdout
from kwta_robust.html_report import build_report, write_report
from kwta_robust.results import NoiseResult, RecordError, load_record, save_record
from test_html_report import _sweep_dir

LONG = "n" * 300  # one name of 300 bytes: file systems allow 255


def _table(capsys, *argv: str) -> str:
    assert main(["table", *argv]) == 0
    return capsys.readouterr().out


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def _tabular_rows(latex: str) -> list[str]:
    body = latex[latex.index(r"\midrule") + len(r"\midrule"):latex.index(r"\bottomrule")]
    return body.strip("\n").split("\n")


@pytest.mark.parametrize("label", ["a\n\nb", "a\r\nb", "a\rb", "a\x0cb", "a\u2028b"])
def test_a_line_break_in_a_label_is_a_space_in_latex(tmp_path: Path, capsys, label: str) -> None:
    """A blank line in a tabular row or a \\paragraph title is a paragraph break (an error in the title); every
    line break is one space now, as Markdown writes it, and each table row stays one source line."""
    rec = make_record([make_result(label, [1, 0, 1, 1])], label=label)
    rec.model["sweep_cell"] = {"kwta_ratio": 0.5, "weight_sparsity": 0.0, "pruning_method": "magnitude"}
    path = tmp_path / "r.json"
    save_record(rec, path)
    spaced = " ".join(label.splitlines())
    for argv in ([], ["--layout", "long"], ["--protocol"]):
        text = _table(capsys, str(path), "--format", "latex", *argv)
        rows = _tabular_rows(text)
        assert all(row.endswith(r"\\") for row in rows), rows  # no row split over two source lines
        assert spaced in text and not re.search(r"\n\s*\n", text[:text.index(r"\end{tabular}")])
    matrices = _table(capsys, str(path), "--format", "latex", "--matrix")
    title = next(line for line in matrices.splitlines() if line.startswith(r"\paragraph{a"))
    assert title == rf"\paragraph{{{spaced} robust accuracy at Linf 0.3 (magnitude pruning, n=4)}}"  # one line


def _two_eps_record(label: str = "m"):
    return make_record([make_result("pgd", [1, 0, 1, 1], eps=0.3),
                        make_result("pgd", [1, 1, 1, 1], eps=0.1 + 0.2)], label=label)


def test_epsilons_written_alike_get_columns_of_their_own(tmp_path: Path, capsys) -> None:
    """0.3 and 0.1 + 0.2 were both columns 'pgd Linf 0.3': the JSON row kept the second (100.0) under the name, the
    first (75.0) was lost; both are written in full now, in every format."""
    path = tmp_path / "r.json"
    save_record(_two_eps_record(), path)
    row = json.loads(_table(capsys, str(path), "--format", "json"))["rows"][0]
    assert row["pgd Linf 0.3 (%)"] == 75.0 and row["pgd Linf 0.30000000000000004 (%)"] == 100.0
    assert row["worst case Linf 0.3 (%)"] == 75.0 and row["worst case Linf 0.30000000000000004 (%)"] == 100.0
    rows = list(csv.reader(io.StringIO(_table(capsys, str(path), "--format", "csv"))))
    cells = dict(zip(rows[0], rows[1]))
    assert len(set(rows[0])) == len(rows[0]) and cells["pgd Linf 0.3 (%)"] == "75"
    assert cells["pgd Linf 0.30000000000000004 (%)"] == "100"
    wide = _table(capsys, str(path), "--format", "wide").splitlines()[0]
    assert "| pgd Linf 0.3 | pgd Linf 0.30000000000000004 |" in wide
    long = _table(capsys, str(path), "--format", "json", "--layout", "long")
    assert {r["threat"] for r in json.loads(long)["rows"]} == {"none", "Linf 0.3", "Linf 0.30000000000000004"}


def test_two_records_at_epsilons_written_alike_keep_every_number(tmp_path: Path, capsys) -> None:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    save_record(make_record([make_result("pgd", [1, 0, 0, 1], eps=0.3)], label="A"), paths[0])
    save_record(make_record([make_result("pgd", [1, 1, 1, 0], eps=0.1 + 0.2)], label="B"), paths[1])
    rows = json.loads(_table(capsys, *map(str, paths), "--format", "json"))["rows"]
    assert [r["pgd Linf 0.3 (%)"] for r in rows] == [50.0, None]
    assert [r["pgd Linf 0.30000000000000004 (%)"] for r in rows] == [None, 75.0]


def test_an_attack_labelled_worst_case_leaves_the_worst_case_its_name(tmp_path: Path, capsys) -> None:
    """Its column was 'worst case Linf 0.3' too: the JSON row kept the real worst case's 50.0 under that name and
    dropped the attack's 75.0; the attack's column names its number now, the worst case keeps its name."""
    rec = make_record([make_result("worst case", [1, 0, 1, 1]), make_result("pgd", [0, 0, 1, 1], position=1)])
    path = tmp_path / "r.json"
    save_record(rec, path)
    table = json.loads(_table(capsys, str(path), "--format", "json"))
    row = table["rows"][0]
    assert row["worst case Linf 0.3 (%)"] == 50.0 and row["worst case Linf 0.3 (column 5) (%)"] == 75.0
    assert row["pgd Linf 0.3 (%)"] == 50.0 and len(set(table["columns"])) == len(table["columns"])


@pytest.fixture
def record_path(tmp_path: Path) -> Path:
    path = tmp_path / "r.json"
    save_record(make_record([make_result("pgd", [1, 0, 1, 1])]), path)
    return path


@pytest.mark.parametrize("command,option,suffix", [("table", "--out", ".md"), ("report", "--out", ".html")])
def test_an_output_path_no_file_system_takes_is_one_line(tmp_path: Path, capsys, record_path: Path, command: str,
                                                         option: str, suffix: str) -> None:
    """Were ValueError: embedded null byte / OSError: File name too long tracebacks."""
    for out, words in [(f"{tmp_path}/a\x00b{suffix}", "contains a NUL byte"),
                       (f"{tmp_path}/{LONG}{suffix}", f"a name of {300 + len(suffix)} bytes"),
                       (f"{tmp_path}/{LONG}/r{suffix}", "a name of 300 bytes")]:
        err = _one_line_error(capsys, [command, str(record_path), option, out])
        assert err.startswith(f"error: {option}: ") and words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # nothing written


@pytest.mark.parametrize("command", ["table", "report"])
def test_a_record_path_no_file_system_takes_is_one_line(tmp_path: Path, capsys, command: str) -> None:
    err = _one_line_error(capsys, [command, f"{tmp_path}/a\x00b.json", "--out", str(tmp_path / "o.md")])
    assert err.startswith("error: RECORD ") and "contains a NUL byte" in err
    err = _one_line_error(capsys, [command, f"{tmp_path}/{LONG}.json"])
    assert err.startswith("error: RECORD ") and "holds a name of 305 bytes" in err


def test_load_record_refuses_such_a_path_with_a_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="^record: cannot read .*File name too long"):
        load_record(tmp_path / f"{LONG}.json")


def test_a_sweep_path_no_file_system_takes_is_one_line(tmp_path: Path, capsys) -> None:
    err = _one_line_error(capsys, ["report", "--sweep", str(tmp_path / LONG)])
    assert err.startswith("error: --sweep: ") and "a name of 300 bytes" in err
    directory = _sweep_dir(tmp_path)
    manifest = json.loads((directory / "sweep.json").read_text())
    manifest["cells"][0]["record"] = "cells/cell0/a\x00b.json"
    (directory / "sweep.json").write_text(json.dumps(manifest))
    err = _one_line_error(capsys, ["report", "--sweep", str(directory), "--out", str(tmp_path / "r.html")])
    assert err.startswith(f"error: --sweep: {directory / 'sweep.json'}'s record: ") and "NUL byte" in err
    assert not (tmp_path / "r.html").exists()


def _with_text(src: Path, dst: Path, edit) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))  # json writes a lone surrogate as the escape "\ud800"
    return dst


@pytest.mark.parametrize("field,edit", [
    ("model.label", lambda d: d["model"].__setitem__("label", "a\ud800b")),
    ("results[0].label", lambda d: d["results"][0].__setitem__("label", "pgd\udcff")),
    ("diagnostics[0].message", lambda d: d["diagnostics"].append(
        {"code": "x", "severity": "warning", "message": "\udfff", "evidence": {}})),
])
def test_record_text_that_is_not_unicode_is_one_line(tmp_path: Path, capsys, record_path: Path, field: str,
                                                     edit) -> None:
    """A lone surrogate (JSON "\\ud800") was read, then every format failed to print or write it: a
    UnicodeEncodeError traceback after the work."""
    bad = _with_text(record_path, tmp_path / "bad.json", edit)
    assert "\\ud" in bad.read_text()
    for argv in (["table", str(bad)], ["table", str(bad), "--format", "csv", "--out", str(tmp_path / "t.csv")],
                 ["report", str(bad), "--out", str(tmp_path / "r.html")]):
        err = _one_line_error(capsys, argv)
        assert err == (f"error: record: {bad}: {field} holds text that is not valid Unicode (a lone surrogate such "
                       "as \\ud800); write that text without it")
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "r.html").exists()
    with pytest.raises(RecordError, match=re.escape(f"{field} holds text that is not valid Unicode")):
        load_record(bad)


def test_valid_unicode_in_a_record_still_renders(tmp_path: Path, capsys, record_path: Path) -> None:
    good = _with_text(record_path, tmp_path / "good.json",
                      lambda d: d["model"].__setitem__("label", "\U0001f600 \u202emodel\u202c ünï"))
    # the bidirectional controls are written as escapes (kwta_robust.visible_text), the rest as it is
    assert "\U0001f600 \\u202emodel\\u202c ünï" in _table(capsys, str(good), "--format", "csv")


def test_a_sweep_manifest_whose_text_is_not_unicode_is_one_line(tmp_path: Path, capsys) -> None:
    directory = _sweep_dir(tmp_path)
    _with_text(directory / "sweep.json", directory / "sweep.json", lambda d: d.__setitem__("name", "grid\ud800"))
    err = _one_line_error(capsys, ["report", "--sweep", str(directory), "--out", str(tmp_path / "r.html")])
    assert err == (f"error: --sweep: {directory / 'sweep.json'}: name holds text that is not valid Unicode (a lone "
                   "surrogate such as \\ud800); re-run the sweep to rewrite it")
    shutil.rmtree(directory)


def test_the_md_protocol_keeps_120_columns_with_long_model_and_attack_labels(tmp_path: Path, capsys) -> None:
    """Its two key columns (model, label) were each cut to 56 characters and a third column added: 178 columns."""
    path = tmp_path / "r.json"
    save_record(make_record([make_result("x" * 200, [1, 0, 1, 1])], label="m" * 200), path)
    lines = _table(capsys, str(path), "--protocol").splitlines()
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if line.startswith("| m"))
    assert header.split("|")[1].strip() == "model" and "label" in header and "attack" in header  # 3 columns kept


def test_a_noise_parameter_without_a_value_reads_none_not_python_none(tmp_path: Path, capsys) -> None:
    """A record writes an infinite parameter as null: the notes said 'p None' / 'p=None'."""
    rec = make_record([make_result("pgd", [1, 0, 1, 1])])
    rec.noise.append(NoiseResult("gaussian", [0.0, 0.1], 2, 0, {"params": {"p": None, "q": 0.5}}, 0.1))
    path = tmp_path / "r.json"
    save_record(rec, path)
    wide = _table(capsys, str(path), "--format", "wide")
    long = _table(capsys, str(path), "--format", "wide", "--layout", "long")
    assert "levels 0 / 0.1, 2 draws, p none, q 0.5" in wide
    assert "noise gaussian: levels 0 / 0.1, 2 draws, p none, q 0.5" in long  # the long layout's notes say it alike
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    text = parse_page(out.read_text()).text
    assert "noise gaussian: levels 0 / 0.1, 2 draws, p none, q 0.5" in text
    assert "None" not in text  # nor 'sample seed None': the record has none


def test_the_python_renderers_refuse_what_is_not_a_record_in_one_line(record_path: Path) -> None:
    """A loaded JSON dict failed deep in the renderers with AttributeError: 'dict' object has no attribute ..."""
    data = json.loads(record_path.read_text())
    for name, render in [("render_records", lambda: render_records([data])),
                         ("render_stdout", lambda: render_stdout([load_record(record_path), data], "csv")),
                         ("render_records_as_matrices", lambda: render_records_as_matrices([data])),
                         ("build_report", lambda: build_report([data]))]:
        with pytest.raises(RecordError) as info:
            render()
        assert str(info.value) == (f"{name}: expected EvalRecord objects, got dict; read a record with "
                                   "kwta_robust.results.load_record or EvalRecord.from_dict")


def test_write_report_refuses_a_path_it_cannot_write_in_one_line(tmp_path: Path, record_path: Path) -> None:
    """Were IsADirectoryError (after the page was built, from the rename) and ValueError: embedded null byte."""
    record = load_record(record_path)
    with pytest.raises(ConfigError, match="^write_report path: .* is a folder; give the path of a file"):
        write_report(tmp_path, [record])
    with pytest.raises(ConfigError, match="^write_report path: .* contains a NUL byte"):
        write_report(tmp_path / "a\x00b.html", [record])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temp file left
    assert write_report(tmp_path / "r.html", [record]).read_text() == build_report([record])


def _cells(tmp_path: Path, results, **model) -> list[str]:
    paths = []
    for i, (ratio, sparsity) in enumerate([(1.0, 0.0), (0.5, 0.0), (1.0, 0.5), (0.5, 0.5)]):
        rec = make_record(results(i), label=f"c{i}")
        rec.model.update(model, sweep_cell={"kwta_ratio": ratio, "weight_sparsity": sparsity,
                                            "pruning_method": "magnitude"})
        paths.append(str(tmp_path / f"c{i}.json"))
        save_record(rec, paths[-1])
    return paths


def test_matrices_read_a_weight_sparsity_given_as_a_bare_fraction(tmp_path: Path, capsys) -> None:
    """The record schema allows model.weight_sparsity as a number (record_sections); table --matrix and report
    failed on it with AttributeError: 'float' object has no attribute 'get'."""
    paths = _cells(tmp_path, lambda i: [make_result("pgd", [1, 0, 1, i % 2])], weight_sparsity=0.25)
    rows = json.loads(_table(capsys, *paths, "--matrix", "--format", "json"))["rows"]
    assert {r["measured_weight_sparsity"] for r in rows} == {0.25} and len(rows) == 3 * 4  # clean, worst, pgd
    assert main(["report", *paths, "--out", str(tmp_path / "r.html")]) == 0


def test_matrices_at_epsilons_written_alike_have_titles_of_their_own(tmp_path: Path, capsys) -> None:
    paths = _cells(tmp_path, lambda i: [make_result("pgd", [1, 0, 1, i % 2], eps=0.3),
                                        make_result("pgd", [1, 1, 1, 0], eps=0.1 + 0.2)])
    titles = [line for line in _table(capsys, *paths, "--matrix", "--format", "wide").splitlines()
              if line.startswith("### pgd")]
    assert titles == ["### pgd robust accuracy at Linf 0.3 (magnitude pruning, n=4)",
                      "### pgd robust accuracy at Linf 0.30000000000000004 (magnitude pruning, n=4)"]


def test_a_loop_of_symbolic_links_is_one_line(tmp_path: Path, capsys, record_path: Path) -> None:
    """Path.resolve raised RuntimeError: Symlink loop (a traceback) for --out, a RECORD and a sweep's record."""
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    for argv, where in [(["table", str(record_path), "--out", str(tmp_path / "l1" / "t.md")], "--out"),
                        (["report", str(record_path), "--out", str(tmp_path / "l1")], "--out"),
                        (["table", str(tmp_path / "l1")], f"RECORD {tmp_path / 'l1'}")]:
        err = _one_line_error(capsys, argv)
        assert err.startswith(f"error: {where}: cannot follow ") and "(a loop of symbolic links)" in err
    directory = _sweep_dir(tmp_path / "s")
    (directory / "cells" / "l1").symlink_to(directory / "cells" / "l2")
    (directory / "cells" / "l2").symlink_to(directory / "cells" / "l1")
    manifest = json.loads((directory / "sweep.json").read_text())
    manifest["cells"][0]["record"] = "cells/l1/eval-abc.json"
    (directory / "sweep.json").write_text(json.dumps(manifest))
    err = _one_line_error(capsys, ["report", "--sweep", str(directory), "--out", str(tmp_path / "r.html")])
    assert err.startswith(f"error: --sweep: {directory / 'sweep.json'}'s record: cannot follow ")


def test_a_lone_surrogate_escaped_in_capitals_is_found_and_valid_pairs_load(tmp_path: Path, record_path: Path) -> None:
    """load_record walks the record for lone surrogates only where its text holds a surrogate escape; the escape
    may be written in capitals (a hand-edited file), and an escaped pair (an emoji) is valid Unicode."""
    data = json.loads(record_path.read_text())
    data["model"]["label"] = "LABEL-TO-EDIT"
    text = json.dumps(data)
    upper = tmp_path / "upper.json"
    upper.write_text(text.replace('"LABEL-TO-EDIT"', '"a\\uD800b"'))
    with pytest.raises(RecordError, match=re.escape("model.label holds text that is not valid Unicode")):
        load_record(upper)
    pair = tmp_path / "pair.json"
    pair.write_text(text.replace('"LABEL-TO-EDIT"', '"a\\ud83d\\ude00b"'))
    assert load_record(pair).model["label"] == "a\U0001F600b"
