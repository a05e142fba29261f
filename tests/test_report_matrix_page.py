"""What a researcher walking the README noticed (persona walk, report --matrix day):

* ``report --matrix RECORD...`` rendered its page as a sweep's: the subtitle read ``sweep NAME``, the section
  ``Sweep: robustness matrices``, and its errors (two records on one cell) began ``table --matrix:``, a command the
  user had not run; a real sweep's page and ``table --matrix``'s errors stay as they were;
* the terminal's model table cut the flags column at 56 characters (``adaptive-beats-pgd, budget-still-lowering,
  (budget-chec…``): every flag code is shown now, a long list continued on the lines below;
* the HTML report's noise chart was titled ``accuracy under numenta (value=1) noise`` where every note says
  ``noise pixel value 1``;
* the README said ``--n-examples 20`` (any config) takes a minute or two on a CPU: true for ``quickstart.yaml``,
  not for ``cifar10.yaml`` (7.5 minutes for 8 samples on 2 shared cores)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from html_helpers import parse_page
from kwta_robust.cli import main
from kwta_robust.html_report import build_report
from kwta_robust.html_sweep import SweepRun
from kwta_robust.matrix import parse_grid_cell
from kwta_robust.narrow import WIDTH, narrow_markdown
from kwta_robust.results import Flag, NoiseResult, save_record

README = Path(__file__).resolve().parent.parent / "README.md"


def _declared(folder: Path, name: str, cell: str) -> str:
    record = make_record([make_result("pgd", [1, 0, 0, 1])], label=name)
    record.model["grid_cell"] = parse_grid_cell(cell)
    save_record(record, folder / f"{name}.json")
    return str(folder / f"{name}.json")


def test_report_matrix_page_says_it_holds_records_placed_in_matrices(tmp_path: Path) -> None:
    paths = [_declared(tmp_path, "mine-0.1", "kwta_ratio=0.1,weight_sparsity=0"),
             _declared(tmp_path, "mine-relu", "kwta_ratio=1,weight_sparsity=0")]
    assert main(["report", "--matrix", *paths, "--out", str(tmp_path / "grid.html")]) == 0
    text = parse_page((tmp_path / "grid.html").read_text(encoding="utf-8")).text
    assert "2 records · toy test, n=4 · robustness matrices of 2 records · rendered by" in text
    assert "robustness matrices of 2 records , placed by their cells (evaluate --grid-cell" in text  # <b>, </b>
    assert "Robustness matrices" in text and "Sweep:" not in text and f"sweep {tmp_path.name}" not in text
    cell = make_record([make_result("pgd", [1, 0])], label="cell")
    cell.model["kwta_ratio"] = 0.1
    sweep = SweepRun(tmp_path, "grid", records=[cell])
    real = parse_page(build_report([], sweep=sweep)).text  # a sweep's page as it was
    assert "1 record · toy test, n=2 · sweep grid · rendered by" in real and "Sweep: robustness matrices" in real


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_report_matrix_errors_name_report_matrix(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 suffix: str) -> None:
    paths = [_declared(tmp_path, "a", "kwta_ratio=0.1,weight_sparsity=0"),
             _declared(tmp_path, "b", "kwta_ratio=0.1,weight_sparsity=0")]
    assert main(["report", "--matrix", *paths, "--out", str(tmp_path / f"grid{suffix}")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: report --matrix: records 'a' and 'b' both sit at k/N=0.1, weight sparsity 0 (none); pass one record "
        "per cell")
    assert main(["table", "--matrix", *paths]) == 2  # the command the user ran, there too
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: table --matrix: records 'a' and 'b'")


def test_the_model_table_shows_every_flag_code() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="mine")
    codes = ["adaptive-beats-pgd", "budget-still-lowering", "budget-check-skipped", "piecewise-constant-layers",
             "selections-outside-layers"]
    record.diagnostics = [Flag(c, "info" if c == "budget-check-skipped" else "warning", "evidence") for c in codes]
    text = narrow_markdown([record])
    overview = text.split("\n\n")[0].splitlines()
    assert "…" not in "\n".join(overview) and max(len(line) for line in text.splitlines()) <= WIDTH
    cells = [line.rstrip(" |").rsplit("| ", 1)[1].strip() for line in overview[2:]]
    assert " ".join(cells) == ("adaptive-beats-pgd, budget-still-lowering, (budget-check-skipped), "
                               "piecewise-constant-layers, selections-outside-layers")
    assert len(cells) == 3 and overview[3].startswith("|       |")  # continued below, the other cells empty


def test_the_noise_chart_names_the_pixel_value_as_the_notes_do() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="kwta")
    record.noise = [NoiseResult("numenta", [0.0, 0.5], 1, 0, {"noise_score": 5.0, "num_samples": 4,
                                                              "params": {"value": 1.0}, "accuracy": [1.0, 0.5]}, 0.1)]
    page = build_report([record])
    titles = re.findall(r'<svg [^>]*aria-label="([^"]*)"', page)
    assert "accuracy under numenta noise (noise pixel value 1)" in titles
    assert "value=1" not in page and "numenta noise (noise pixel value 1)" in parse_page(page).text


def test_the_readme_says_which_config_takes_a_minute_or_two() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "(any config) is a first look in a minute or two" not in text
    assert ("with `quickstart.yaml` (MNIST) and a model of the quickstart's size it takes a minute or two on a CPU; "
            "with `cifar10.yaml` (100-step attacks on CIFAR-10) and a ResNet-18, tens of minutes (8 samples took 7.5 "
            "minutes on 2 shared cores) before its BPDA attacks followed `mnist5k-full.yaml`'s, which run up to 3,600 "
            "steps on each sample PGD leaves") in text
