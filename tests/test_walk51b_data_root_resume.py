"""Persona walk 51b: a run resumed with ``--data-root data`` (relative) on the record a run with the same folder's
absolute path wrote was logged as reading the data elsewhere and listed in ``provenance.resumed_data``, though both
read one folder (``provenance.data_root``, resolved, was equal); and one relative ``data_root`` read from two
working folders (two different folders) was no move. Where both records hold the resolved folder, it decides."""

from __future__ import annotations

import logging

import pytest

from eval_helpers import make_record
from kwta_robust.resume import note_data_moved


def _pair(before: str, first: str, now: str, this: str) -> tuple:
    old, fresh = make_record(), make_record()
    old.config, fresh.config = {"seed": 0, "data_root": before}, {"seed": 0, "data_root": now}
    old.provenance["data_root"], fresh.provenance["data_root"] = first, this
    fresh.provenance["started_at"] = "2026-12-07T19:45:20+00:00"
    return old, fresh


def test_one_folder_named_relative_and_absolute_is_no_move(caplog: pytest.LogCaptureFixture) -> None:
    old, fresh = _pair("/work/data", "/work/data", "data", "/work/data")
    with caplog.at_level(logging.INFO, logger="kwta_robust.resume"):
        note_data_moved(old, fresh, None)
    assert "resumed_data" not in old.provenance
    assert "reads the same data" not in caplog.text


def test_one_relative_name_of_two_folders_is_a_move(caplog: pytest.LogCaptureFixture) -> None:
    old, fresh = _pair("data", "/work/a/data", "data", "/work/b/data")
    with caplog.at_level(logging.INFO, logger="kwta_robust.resume"):
        note_data_moved(old, fresh, None)
    assert old.provenance["resumed_data"] == [{"resumed_at": "2026-12-07T19:45:20+00:00", "location": "data"}]
    assert "its config names the data at data, this run reads the same data (checked by samples_sha256) at data" \
        in caplog.text
