"""Fuzz round on ``kwta-robust compare``'s model arguments: the same checkpoint given twice (directly or through a
symbolic link) ran silently as two models, ``x`` and ``x-2``, with a "transfer" attack crafted on the model itself.
It still runs (comparing a model with itself is a determinism check), but with one warning naming both positions;
two different files are not warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kwta_robust.cli import main
from test_cli_eval import write_checkpoint
from test_compare_fuzz import small_config

WARNING = "is MODEL 1 again: one model compared with itself"


def _compare_dry_run(tmp_path: Path, models: list[Path], caplog: pytest.LogCaptureFixture) -> list[str]:
    with caplog.at_level(logging.WARNING):
        rc = main(["compare", *map(str, models), "--config", str(small_config(tmp_path)), "--out-dir",
                   str(tmp_path / "cmp"), "--no-progress", "--dry-run"])
    assert rc == 0
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "MODEL" in r.getMessage()]


@pytest.mark.parametrize("linked", [False, True])
def test_the_same_checkpoint_twice_is_warned_about_naming_both_positions(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, linked: bool) -> None:
    model = write_checkpoint(tmp_path / "relu.pt")
    again = model
    if linked:
        again = tmp_path / "link.pt"
        again.symlink_to(model)
    assert _compare_dry_run(tmp_path, [model, again], caplog) == [
        f"MODEL 2: {again} {WARNING} (the same numbers, and its transfer attack crafted on the model itself); give "
        "another model to compare two"]


def test_two_different_checkpoints_are_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    relu, kwta = write_checkpoint(tmp_path / "relu.pt"), write_checkpoint(tmp_path / "kwta.pt", seed=1)
    assert _compare_dry_run(tmp_path, [relu, kwta], caplog) == []
