"""Tests that kill hand-made mutants of last session's record-side code which its tests let survive: a legacy cache
whose first file is damaged and second holds code (``check_legacy_cache`` checks every file), entries of
``warn_repeated_models`` with no key (never a repeat, and the entries after them still read) and a model given three
times (each repeat names the first), the ``bool`` that ``matches_hash`` returns for a config JSON cannot encode, a
lower bound that is NaN (``lower_bound_percent_text``) and :class:`~kwta_robust.record_index.RecordIndex`'s
``label``. Every expected value is derived in the test."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from eval_helpers import make_record, make_result
from kwta_robust.compare import warn_repeated_models
from kwta_robust.config_digest import config_digest, matches_hash
from kwta_robust.errors import DataError
from kwta_robust.legacy_cache import check_legacy_cache
from kwta_robust.numbers import lower_bound_percent_text, percent_text
from kwta_robust.record_index import RecordIndex
from kwta_robust.safe_paths import shown_path


class _Touches:
    """Unpickled, it creates the file named (``pathlib.Path.touch``): a stand-in for a payload that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return Path.touch, (self.path,)


def test_a_damaged_legacy_file_does_not_stop_the_check_of_the_next_one(tmp_path: Path) -> None:
    damaged, holds_code = tmp_path / "training.pt", tmp_path / "test.pt"
    torch.save(torch.arange(10), damaged)
    damaged.write_bytes(damaged.read_bytes()[:40])  # cut short: torch.load raises RuntimeError (left to torchvision)
    torch.save(_Touches(tmp_path / "ran"), holds_code)
    check_legacy_cache("mnist", [damaged])  # damaged alone: left to torchvision's read
    with pytest.raises(DataError) as info:
        check_legacy_cache("mnist", [damaged, holds_code])
    assert str(info.value).startswith(f"mnist: {shown_path(holds_code)} (torchvision's legacy cache")
    assert not (tmp_path / "ran").exists()


def test_models_with_no_key_are_never_a_repeat_and_the_entries_after_them_are_read(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        warn_repeated_models([("MODEL 1", "a", None), ("MODEL 2", "b", None)])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        warn_repeated_models([("MODEL 1", "a", None), ("MODEL 2", "b", "same"), ("MODEL 3", "c", "same")])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("MODEL 3: c is MODEL 2 again: one model compared with itself")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        warn_repeated_models([("MODEL 1", "a", 7), ("MODEL 2", "b", 7), ("MODEL 3", "c", 7)])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w.split(" again")[0] for w in warnings] == ["MODEL 2: b is MODEL 1", "MODEL 3: c is MODEL 1"]  # the first


def test_a_config_json_cannot_encode_matches_no_hash_as_false() -> None:
    plain = {"seed": 0}
    assert matches_hash(plain, config_digest(plain)) is True
    assert matches_hash({(1, 2): 0}, config_digest(plain)) is False  # a bool, as annotated (not a falsy None)


def test_the_index_label_is_the_record_label() -> None:
    record = make_record([make_result("pgd", [1, 0])], label="kwta-0.2")
    assert RecordIndex(record).label == record.label == "kwta-0.2"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_lower_bound_that_is_no_finite_number_reads_as_percent_text_does(value: float) -> None:
    assert lower_bound_percent_text(value) == percent_text(value) == f"{100.0 * value:.1f}"
