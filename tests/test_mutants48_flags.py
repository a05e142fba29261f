"""Mutation review of session 47's flag code (kwta_robust.record_flags, kwta_robust.plugin_repeat): each test kills
a mutant the existing tests let live (when a record's flags are recomputed; the plug-in repeat's batch, entry and
flag on hand-made tensors)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import kwta_robust.git_revision as git_revision
import kwta_robust.record_flags as record_flags
from attacks.base import REGISTRY, register_attack
from eval_helpers import make_record
from test_record_flags import REVISION, written  # noqa: F401  (the fixture)
from kwta_robust.diagnostics import CHECKS, register_check
from kwta_robust.diagnostics_base import Thresholds
from kwta_robust.plugin_repeat import (PROVENANCE_KEY, check_plugin_repeats, first_batch, repeat_entry,
                                       repeat_first_batch, repeat_plugin_unit)
from kwta_robust.record_flags import check_flags, comparable_thresholds
from kwta_robust.results import EvalRecord, Flag, RecordError

Written = tuple[Path, dict[str, Any]]


def _record(data: dict[str, Any]) -> EvalRecord:
    return EvalRecord.from_dict(json.loads(json.dumps(data)))


def test_records_the_runner_did_not_finish_are_not_compared(written: Written) -> None:
    """A partial record and a shard's part ran no diagnostics; a config's thresholds lacking a field are not the
    ones the checks ran with."""
    _, data = written
    assert comparable_thresholds(_record(data)) == Thresholds(**data["config"]["diagnostics"]["thresholds"])
    assert comparable_thresholds(_record({**data, "status": "partial"})) is None
    assert comparable_thresholds(_record({**data, "dataset": {**data["dataset"], "part": [0, 2]}})) is None
    config = json.loads(json.dumps(data["config"]))
    config["diagnostics"]["thresholds"].pop("wide_margin")
    assert record_flags.config_thresholds(config) is None


def test_a_dirty_record_is_not_compared_from_a_clean_checkout(written: Written,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit matches, but the record was written with changes (``+dirty``) this clean checkout lacks."""
    _, data = written
    monkeypatch.setattr(git_revision, "tracked_changes", lambda root: False)  # git status: no changes
    assert comparable_thresholds(_record(data)) is None


def test_a_plugin_check_of_the_reader_is_not_recomputed(written: Written) -> None:
    """A check a script registered after the record was written (it flags every record) is not expected of it."""
    _, data = written
    with CHECKS.preserved():
        register_check("mutant48-always", "flags every record")(
            lambda record, thresholds: [Flag("mutant48-always", "warning", "always", {})])
        check_flags(_record(data))


def test_fewer_flags_than_due_name_no_other_severity_the_record_holds(written: Written,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two equal flags due (a check raising one twice) and one stored: counted, with no "(the record holds it
    as critical)" for the severity it is missing at."""
    _, data = written
    record = _record(data)
    stored = list(record.diagnostics)
    monkeypatch.setattr(record_flags, "run_checks", lambda rec, thr, codes: stored + stored[:1])
    with pytest.raises(RecordError) as raised:
        check_flags(record, "r.json")
    assert str(raised.value) == (
        "r.json: diagnostics: 1 critical 'adaptive-beats-pgd' flag(s) where 2 are due: this version's checks raise "
        "it from the record's own contents, so the record was edited; restore the diagnostics the evaluation wrote "
        "or re-run it")


def test_the_first_batch_is_the_attacked_part_of_a_whole_batch() -> None:
    """Batches are ``batch_size`` consecutive positions (``attacks.cascade.run_verified``): the first one holding an
    active sample, and of it only the active samples."""
    active = torch.tensor([False, False, False, True, True, False, True, True])
    assert first_batch(active, 2).tolist() == [False, False, False, True, False, False, False, False]
    assert first_batch(active, 4).tolist() == [False, False, False, True, False, False, False, False]
    active = torch.tensor([True, False, True, True])
    assert first_batch(active, 2).tolist() == [True, False, False, False]
    assert first_batch(torch.zeros(3, dtype=torch.bool), 2).tolist() == [False] * 3


def test_an_entry_counts_differing_rows_ignores_nans_in_both_and_keeps_the_largest_finite_difference() -> None:
    first = torch.tensor([[math.nan, 1.0, 2.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    assert repeat_entry("mine", "linf", 0.1, "0.1", first, first.clone())["reproducible"] is True
    second = torch.tensor([[math.nan, 1.5, 3.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.25]])
    entry = repeat_entry("mine", "linf", 0.1, "0.1", first, second)
    assert entry == {"attack": "mine", "norm": "linf", "eps": 0.1, "eps_text": "0.1", "n": 3, "differing": 2,
                     "max_abs_diff": 1.0, "reproducible": False}


def test_nothing_attacked_is_not_attacked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """No active sample: no rerun, no entry, and the runner is told the attack did not run again."""
    called: list[Tensor] = []

    def rerun(mask: Tensor) -> Tensor:
        called.append(mask)
        return torch.zeros(4, 2)

    outcome = type("Outcome", (), {"x_adv": torch.zeros(4, 2), "active": torch.zeros(4, dtype=torch.bool)})()
    assert repeat_first_batch(rerun, outcome.x_adv, outcome.active, 2, "mine", "linf", 0.1, "0.1") is None
    record = make_record(n=4)
    with REGISTRY.preserved():
        @register_attack("mutant48-plugin", norms=("linf",), kind="white-box")
        def make(seed: int = 0):
            """returns its input"""
            def attack(model: nn.Module, x: Tensor, y: Tensor, threat: Any) -> Tensor:
                return x
            return attack
        assert repeat_plugin_unit(record, True, "mutant48-plugin", rerun, outcome, 2, "mine", "linf", 0.1,
                                  "0.1") is False
    assert called == [] and PROVENANCE_KEY not in record.provenance


def test_only_an_entry_found_not_reproducible_is_flagged() -> None:
    """An entry without the finding (a hand edit) says nothing either way."""
    record = make_record(n=4)
    record.provenance[PROVENANCE_KEY] = [{"attack": "mine", "norm": "linf", "eps": 0.1, "eps_text": "0.1"}]
    assert check_plugin_repeats(record, Thresholds()) == []
    record.provenance[PROVENANCE_KEY].append({"attack": "theirs", "norm": "linf", "eps": 0.1, "eps_text": "0.1",
                                              "reproducible": False})
    assert [f.code for f in check_plugin_repeats(record, Thresholds())] == ["plugin-not-reproducible"]
