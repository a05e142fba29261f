"""Persona walk 51: a checkpoint or weights file given where a record goes (``kwta-robust table net.pt``, ``diff``,
``report``) was ``is not valid JSON ('utf-8' codec can't decode byte 0x80 in position 64: invalid start byte)``: a
decoder's words, not what the file is. A PyTorch file is now named as one, with the record to give instead; other
binary text keeps the decoder's words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.cli import main


@pytest.mark.parametrize("command", ["table", "diff"])
def test_a_pytorch_file_given_as_a_record_is_named_as_one(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          command: str) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "net.pt"
    torch.save(nn.Linear(4, 2).state_dict(), weights)
    argv = [command, str(weights)] + ([str(weights)] if command == "diff" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: record: {weights} is not valid JSON (a PyTorch file: a checkpoint or weights, not a "
                   "record); give the JSON record evaluate or compare wrote (--out, --out-dir)")
    other = tmp_path / "rec.json"  # bytes that are no PyTorch file keep the decoder's words
    other.write_bytes(b'{"a": "\xff"}')
    assert main([command, str(other)] + ([str(other)] if command == "diff" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: record: {other} is not valid JSON ('utf-8' codec can't decode byte 0xff")

