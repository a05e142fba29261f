"""Persona walk 51b: a text file or an empty file given as a checkpoint or ``--weights`` read "corrupt or not a
checkpoint (KeyError: 101)" / "(EOFError: EOFError)", which names neither what the file is nor what to give; a
truncated legacy (pre-zip) checkpoint read "(EOFError: EOFError)". They now say what the file is (empty, or its
first bytes) and what torch.save writes, in one line; a damaged PyTorch file stays "corrupt"."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.errors import CheckpointError
from kwta_robust.weights_read import read_file


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_text_file_says_it_is_no_pytorch_file(tmp_path: Path, allow_pickle: bool) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, these are my weights\n")
    with pytest.raises(CheckpointError) as info:
        read_file(path, allow_pickle, "weights", safetensors=True)
    assert str(info.value) == (f"weights {path}: corrupt or not a checkpoint (not a PyTorch file: it starts with "
                               "b'hello, these', where torch.save writes a zip archive); give the file torch.save or "
                               "kwta-robust train wrote")


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_an_empty_file_says_it_is_empty(tmp_path: Path, allow_pickle: bool) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, allow_pickle=allow_pickle)
    assert str(info.value) == (f"checkpoint {path}: corrupt or not a checkpoint (not a PyTorch file: the file is "
                               "empty, where torch.save writes a zip archive); give the file torch.save or kwta-robust "
                               "train wrote")


def test_a_truncated_legacy_checkpoint_says_it_ends_early(tmp_path: Path) -> None:
    whole, cut = tmp_path / "legacy.pt", tmp_path / "cut.pt"
    torch.save({"a": torch.zeros(2)}, whole, _use_new_zipfile_serialization=False)
    cut.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(cut)
    assert str(info.value) == (f"checkpoint {cut}: corrupt or not a checkpoint (EOFError: the file ends early "
                               "(truncated?)); re-create or re-download it")
