"""A safetensors file's ``__metadata__`` is recorded with each key and value cut to 200 characters (``... (N
characters)`` after them): two keys alike in length and in their first 200 characters were one key once cut, and
the second entry was lost (counted as ``metadata_left_out`` though within the 50 kept). Each after the first is now
told apart by `` [2]``, `` [3]``, ... in key order (``safetensors_read.recorded_metadata``)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.safetensors_read import recorded_metadata
from test_cli_eval import make_mlp

FACTORY = "test_cli_eval:make_mlp"
STEM = "k" * 200


def test_keys_alike_once_cut_are_each_recorded() -> None:
    metadata = {STEM + "c" * 100: "third", STEM + "a" * 100: "first", STEM + "b" * 100: "second", "format": "pt",
                STEM + "a" * 101: "longer"}
    cut = STEM + "... (300 characters)"
    assert recorded_metadata(metadata, "weights w.safetensors") == {"metadata": {
        cut: "first", f"{cut} [2]": "second", f"{cut} [3]": "third", STEM + "... (301 characters)": "longer",
        "format": "pt"}}  # session 49: {cut: "first", ...} and metadata_left_out 2


def test_a_file_whose_keys_are_alike_once_cut_records_each(tmp_path: Path) -> None:
    torch.manual_seed(4)
    save_file(make_mlp().state_dict(), tmp_path / "w.safetensors",
              metadata={STEM + "x" * 50: "one", STEM + "y" * 50: "two"})
    loaded = load_byo_model(FACTORY, tmp_path / "w.safetensors").metadata
    cut = STEM + "... (250 characters)"
    assert loaded["weights_metadata"] == {cut: "one", f"{cut} [2]": "two"}
    assert "weights_metadata_left_out" not in loaded
