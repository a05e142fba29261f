"""``report --out``'s suffix picks the report's format: ``.html``/``.htm`` the HTML page, ``.md``/``.markdown`` the
tables as Markdown; any other suffix is refused (``--out x.json`` wrote HTML into a file named as JSON)."""

from __future__ import annotations

from pathlib import Path

import pytest

from html_helpers import quickstart_records
from kwta_robust.cli import main
from kwta_robust.results import save_record
from test_cli_eval import run_error
from test_html_report import _sweep_dir


@pytest.fixture(scope="module")
def record_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("records")
    paths = []
    for rec in quickstart_records():
        paths.append(folder / f"{rec.label}.json")
        save_record(rec, paths[-1])
    return paths


@pytest.mark.parametrize("name", ["r.html", "r.htm", "R.HTML"])
def test_an_html_suffix_writes_the_html_page(tmp_path: Path, record_paths: list[Path], name: str) -> None:
    out = tmp_path / name
    assert main(["report", *map(str, record_paths), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>\n") and "| model |" not in text


@pytest.mark.parametrize("name", ["r.md", "r.markdown"])
def test_a_markdown_suffix_writes_the_tables_as_markdown(tmp_path: Path, record_paths: list[Path], name: str) -> None:
    out = tmp_path / name
    assert main(["report", *map(str, record_paths), "--out", str(out), "--title", "my title"]) == 0
    lines = out.read_text().splitlines()
    assert "<" not in lines[0] and lines[:2] == ["### my title", ""]
    assert lines[2].startswith("| model | activation | n | clean | pgd Linf 0.1 |")
    assert lines[3] == "|" + "|".join(["---"] * 14) + "|"
    # the quickstart record's clean accuracy 188/200 with its Wilson interval, as the fixture's record holds it
    assert lines[4].startswith("| kwta | kwta 0.1 volume | 200 | 94.0 (89.8–96.6) |")
    assert "### Paired comparison" in lines and not any("DOCTYPE" in line for line in lines)


def test_a_sweep_as_markdown_holds_its_matrices(tmp_path: Path) -> None:
    directory = _sweep_dir(tmp_path)
    out = tmp_path / "sweep.md"
    assert main(["report", "--sweep", str(directory), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("### kwta-robust: grid\n\n| model |")
    assert "| cell0 |" in text and "### grid: worst case robust accuracy at Linf 0.3" in text
    assert "\n- failed cell (no record): cell3: RuntimeError: out of memory\n" in text  # the manifest's failed cell


@pytest.mark.parametrize("name", ["x.json", "report", "r.txt", "r.html.bak"])
def test_any_other_suffix_is_refused_and_nothing_is_written(tmp_path: Path, record_paths: list[Path], name: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / name
    line = run_error(capsys, ["report", *map(str, record_paths), "--out", str(out)])  # exit 2, one line, no traceback
    suffix = out.suffix or "no suffix"
    assert line == (f"error: --out: {str(out)!r} ends in {suffix!r}; the report is written as HTML (.html, .htm) "
                    "or Markdown (.md, .markdown): give a path ending in one of them")
    assert not out.exists() and list(tmp_path.iterdir()) == []
