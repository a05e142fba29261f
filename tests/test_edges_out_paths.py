"""``--out x.md/`` (a trailing separator: the user meant a folder) is refused like an existing folder, with one line
naming ``--out``: ``Path`` drops the separator, so ``report`` and ``table`` wrote the file ``x.md`` instead. Every
``--out`` of a file checks its path with :func:`kwta_robust.safe_paths.check_output_file`; none writes into a
folder (``report --out DIR`` of an existing folder was refused already)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.cli import main
from test_cli_eval import run_error

RECORD = str(Path(__file__).parent / "fixtures" / "quickstart" / "kwta.json")


def _refusal(given: str) -> str:
    return (f"error: --out: {given} is the path of a folder (it ends in '/', '/.' or '/..'); give the path of a file "
            "(inside that folder, for example)")


@pytest.mark.parametrize("command", ["report", "table"])
@pytest.mark.parametrize("tail", ["/", "/.", "//"])
def test_out_ending_in_a_separator_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture, command: str,
                                              tail: str) -> None:
    given = str(tmp_path / "x.md") + tail
    assert run_error(capsys, [command, RECORD, "--out", given]) == _refusal(given)
    assert list(tmp_path.iterdir()) == []  # neither the file x.md nor a folder


def test_out_of_an_existing_folder_with_a_slash_is_refused_as_a_folder(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.md").mkdir()
    line = run_error(capsys, ["report", RECORD, "--out", f"{tmp_path / 'x.md'}/"])
    assert line == f"error: --out: {tmp_path / 'x.md'} is a folder; give the path of a file (inside it, for example)"


def test_out_inside_the_folder_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.md" / "report.md"
    assert main(["report", RECORD, "--out", str(out)]) == 0
    assert out.read_text().startswith("#")
