"""What ``evaluate --dry-run`` says a resume keeps is what the resumed run says it keeps (the fuzz round of the
dry-run plan against the real run): a record whose unit carries another seed (written by a version that derived it
otherwise) has that unit and, in cascade mode, every later unit at its threat point run again, and a noise probe of
another seed too. The plan counted them as run again; the run's ``resuming PATH: N finished units kept`` counted
every unit of the record as kept (4 where it kept 2)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from kwta_robust.cli import main
from kwta_robust.results import load_record
from test_dry_run import files, write_checkpoint, write_config

CASCADE = {"n_examples": 6, "batch_size": 6, "threats": [{"norm": "linf", "epsilons": [0.05, 0.1]}],
           "attacks": [{"attack": "fgsm"}, {"attack": "pgd", "params": {"steps": 2}}],
           "noise": [{"kind": "gaussian", "levels": [0.0, 0.2], "draws": 1}]}


@pytest.fixture()
def argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    ckpt = write_checkpoint(tmp_path / "kwta.pt")
    config = write_config(tmp_path / "c.yaml", **CASCADE)
    return ["evaluate", str(ckpt), "--config", str(config), "--out", "r.json", "--no-progress"]


def edit(path: Path, noise: bool) -> None:
    """Give the record's first unit at Linf 0.05 (fgsm) another seed; ``noise``: its noise probe too."""
    data = json.loads(path.read_text())
    first = next(r for r in data["results"] if (r["label"], r["eps"]) == ("fgsm", 0.05))
    first["seed"] += 1
    if noise:
        data["noise"][0]["seed"] += 1
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("mode,noise,kept", [("cascade", False, 3), ("cascade", True, 2), ("independent", True, 3)])
def test_units_of_another_seed_are_not_counted_as_kept_by_the_plan_or_the_run(
        mode: str, noise: bool, kept: int, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture) -> None:
    if mode != "cascade":
        write_config(tmp_path / "c.yaml", **CASCADE, mode=mode)
    assert main(argv) == 0
    edit(tmp_path / "r.json", noise)
    capsys.readouterr()
    before = files(tmp_path)
    assert main([*argv, "--dry-run", "--format", "json"]) == 0
    note = next(n for n in json.loads(capsys.readouterr().out)["notes"] if n.startswith("record r.json: "))
    assert files(tmp_path) == before
    # hand-worked: 4 units; fgsm at 0.05 runs again, in cascade mode pgd at 0.05 after it too; the noise probe
    again = 2 if mode == "cascade" else 1
    planned = re.search(r"(\d+) of 4 attack units finished and resumed, (\d+) to run \((\d+) finished with another "
                        r"seed run again\); (\d+) of 1 noise probes kept", note)
    assert planned is not None, note
    assert [int(g) for g in planned.groups()] == [4 - again, again, again, 0 if noise else 1]
    assert 4 - again + (0 if noise else 1) == kept
    with caplog.at_level(logging.INFO, logger="kwta_robust.evaluate"):
        assert main(argv) == 0
    assert f"resuming r.json: {kept} finished units kept" in caplog.messages
    record = load_record(tmp_path / "r.json")
    assert record.status == "complete" and len(record.results) == 4 and len(record.noise) == 1 + noise
