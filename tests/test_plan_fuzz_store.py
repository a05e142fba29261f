"""``evaluate --dry-run --save-adversarial`` refuses the store the run's clean pass refuses, with the run's line (the
fuzz round of the dry-run plan against the real run): ``adv.pt.parts`` being a file (resumed or ``--no-resume``), a
store of other samples, a store holding a unit the record does not. Each was a plan and exit status 0 from the dry
run, then the run stopped before its first attack. The store is only read: nothing is written or removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwta_robust.cli import main
from test_dry_run import files, write_checkpoint, write_config

SMALL = {"n_examples": 6, "batch_size": 6, "threats": [{"norm": "linf", "epsilons": [0.1]}],
         "attacks": [{"attack": "fgsm"}], "noise": []}


def command(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """Exit status and the `error:` lines of one command (never a traceback)."""
    rc = main(argv)
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.fixture()
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`evaluate CHECKPOINT --config C --out r.json --save-adversarial a.pt` in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    ckpt = write_checkpoint(tmp_path / "kwta.pt")
    config = write_config(tmp_path / "c.yaml", **SMALL)
    write_config(tmp_path / "other.yaml", **SMALL, sample_seed=5)
    return ["evaluate", str(ckpt), "--config", str(config), "--out", "r.json", "--save-adversarial", "a.pt",
            "--no-progress"]


def refused_alike(argv: list[str], root: Path, capsys: pytest.CaptureFixture) -> str:
    """The one `error:` line the dry run and then the run end with (exit status 2 each; the dry run wrote
    nothing)."""
    before = files(root)
    rc, dry = command([*argv, "--dry-run"], capsys)
    assert (rc, len(dry)) == (2, 1)
    assert files(root) == before
    assert command(argv, capsys) == (2, dry)
    return dry[0]


@pytest.mark.parametrize("resume", [[], ["--no-resume"]], ids=["resume", "no-resume"])
def test_a_parts_file_is_refused_by_the_dry_run_too(resume: list[str], base: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.pt.parts").write_text("mine")
    line = refused_alike([*base, *resume], tmp_path, capsys)
    assert line == ("error: --save-adversarial: a.pt.parts is a file, where the run keeps its units until it "
                    "completes; move that file or choose another path")
    assert (tmp_path / "a.pt.parts").read_text() == "mine" and not (tmp_path / "r.json").exists()


def test_a_store_of_other_samples_is_refused_by_the_dry_run_too(base: list[str], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    other = [*base[:3], str(tmp_path / "other.yaml"), "--out", "other.json", *base[6:]]
    assert command(other, capsys) == (0, [])
    store = (tmp_path / "a.pt").read_bytes()
    line = refused_alike(base, tmp_path, capsys)
    assert line == "error: --save-adversarial: a.pt holds other samples; use a new path or --no-resume"
    assert (tmp_path / "a.pt").read_bytes() == store


def test_a_store_of_units_the_record_lacks_is_refused_by_the_dry_run_too(base: list[str], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    assert command([*base[:4], "--out", "first.json", *base[6:]], capsys) == (0, [])  # same samples, another record
    line = refused_alike(base, tmp_path, capsys)
    assert line == ("error: --save-adversarial: a.pt holds adversarial inputs this run's record does not "
                    "(fgsm|linf|0.1: no result of the record); use a new path or --no-resume")


def test_a_store_the_run_resumes_is_planned_and_left_as_it_was(base: list[str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert command(base, capsys) == (0, [])
    before = files(tmp_path)
    assert main([*base, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "adversarial store a.pt" in out.replace("\n  ", " ")
    assert files(tmp_path) == before
    assert command(base, capsys) == (0, [])
