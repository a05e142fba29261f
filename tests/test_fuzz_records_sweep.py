"""A sweep cell's record edited or damaged on disk so that it contradicts itself (an accuracy its counts do not
give, a quoted count): before, ``finished_record`` reused it as the cell's finished evaluation (checking only that
it loads), so the sweep's matrices showed the edited number; now it is evaluated again, with the reason logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import kwta_robust.sweep.cells as cells
from test_sweep_mutants import _finished


@pytest.mark.parametrize(("field", "value", "why"), [
    ("accuracy", 0.5, "clean: accuracy 0.5 contradicts its counts 10/10 (1)"),
    ("correct", "10", "clean.correct must be an integer, got '10'"),
])
def test_a_cell_record_that_contradicts_itself_is_evaluated_again(tmp_path: Path, caplog, field: str, value: Any,
                                                                  why: str) -> None:
    plan, _ = _finished(tmp_path)
    assert cells.finished_record(plan) is not None  # as saved: the finished cell
    data = json.loads(Path(plan.record_path).read_text())
    data["clean"][field] = value
    Path(plan.record_path).write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="kwta_robust.sweep.cells"):
        assert cells.finished_record(plan) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{plan.label}: unreadable record, the cell is evaluated again ({plan.record_path}: {why})"]
