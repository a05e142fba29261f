"""Persona walk 51: an evaluation record (JSON) given where a checkpoint goes (``kwta-robust evaluate RECORD.json``,
or as a MODEL of ``compare``) was called "corrupt or not a checkpoint (not a readable PyTorch file); re-create or
re-download it" — a sound file, and a fix that does not apply. It is now one line saying it is JSON, not a checkpoint,
and where a record goes (``--config``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.errors import CheckpointError


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("payload", [{"schema_version": 3, "config_hash": "ab", "results": []}, {}])
def test_a_json_file_given_as_checkpoint_is_named_json_with_where_a_record_goes(tmp_path: Path, payload) -> None:
    path = tmp_path / "cnn-kwta.json"
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    message = _error(path)
    assert message.startswith(f"checkpoint {path}: a JSON file, not a PyTorch checkpoint")
    assert "--config" in message and "--weights FILE" in message
    assert "corrupt" not in message and "re-download" not in message


def test_a_damaged_binary_file_is_still_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    path.write_bytes(b"\x80\x02 not a zip")
    assert "corrupt or not a checkpoint" in _error(path)
