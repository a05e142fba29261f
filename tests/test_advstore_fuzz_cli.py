"""``evaluate --save-adversarial`` through the CLI: a store another run wrote, a store edited on disk and a parts
path that is a file each end in one ``error:`` line, exit status 2, the file left as it was (before: the other
run's units joined into this run's file, the edit kept, and a NotADirectoryError traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kwta_robust.adversarial_store import parts_folder
from kwta_robust.cli import main
from kwta_robust.results import load_record
from test_cli_eval import run_error, write_checkpoint, write_config


def _cfg(path: Path, epsilons: list[float]) -> str:
    return str(write_config(path, n_examples=6, batch_size=6, threats=[{"norm": "linf", "epsilons": epsilons}],
                            attacks=[{"attack": "pgd", "params": {"steps": 2}}], noise=[]))


def test_cli_refuses_a_store_it_cannot_extend(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = str(write_checkpoint(tmp_path / "m.pt"))
    two, one = _cfg(tmp_path / "two.yaml", [0.1, 0.3]), _cfg(tmp_path / "one.yaml", [0.1])
    adv = tmp_path / "adv.pt"
    base = ["evaluate", ckpt, "--no-progress", "--save-adversarial", str(adv)]
    assert main([*base, "--config", two, "--out", str(tmp_path / "a.json")]) == 0
    record = load_record(tmp_path / "a.json")
    saved = torch.load(adv, weights_only=True)
    assert {name for name in saved if name.startswith("flags/")} == {"flags/pgd|linf|0.1", "flags/pgd|linf|0.3"}
    assert [saved[f"flags/pgd|linf|{e}"].tolist() for e in ("0.1", "0.3")] == [r.flags for r in record.results]
    before = adv.read_bytes()
    assert run_error(capsys, [*base, "--config", one, "--out", str(tmp_path / "b.json")]) == (
        f"error: --save-adversarial: {adv} holds adversarial inputs this run's record does not (pgd|linf|0.1: no "
        "result of the record); use a new path or --no-resume")
    torch.save({**saved, "adv/pgd|linf|0.1": (saved["adv/pgd|linf|0.1"] + 0.5).clamp(0, 1)}, adv)
    edited = adv.read_bytes()
    assert run_error(capsys, [*base, "--config", two, "--out", str(tmp_path / "a.json")]) == (
        f"error: --save-adversarial: {adv} holds adversarial inputs this run's record does not (pgd|linf|0.1: "
        "an input outside its eps ball or [0, 1]); use a new path or --no-resume")
    assert adv.read_bytes() == edited != before
    parts_folder(tmp_path / "new.pt").write_text("notes")
    line = run_error(capsys, [*base[:-1], str(tmp_path / "new.pt"), "--config", one, "--out", str(tmp_path / "c.json")])
    assert line == (f"error: --save-adversarial: {tmp_path}/new.pt.parts is a file, where the run keeps its units "
                    "until it completes; move that file or choose another path")
    assert parts_folder(tmp_path / "new.pt").read_text() == "notes" and not (tmp_path / "new.pt").exists()
