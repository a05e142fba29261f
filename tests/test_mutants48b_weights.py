"""Session 48's second mutation review of kwta_robust.safetensors_read: how a file's first bytes decide its kind —
an 8-byte length is a safetensors header only with ``{`` after it and a length of 2 or more, an index's JSON may
start with white space, a ``weight_map`` that is no mapping is no index, and a ``.SAFETENSORS`` name in capitals is
held to the suffix check too; an empty shard name, a file without tensors and an unreadable file are each their own
line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import safetensors
import torch
from safetensors.torch import save_file

from kwta_robust.checkpoint import load_byo_model, load_checkpoint
from kwta_robust.errors import CheckpointError
from kwta_robust.foreign_weights import fill_tied
from test_safetensors_weights import FACTORY, _shard, state  # noqa: F401 - state: the fixture _shard's test needs

NOT_SAFETENSORS = r"not a safetensors file \(it does not start with an 8-byte header length and a JSON header\)"


@pytest.mark.parametrize("head", [(16).to_bytes(8, "little") + b"x", (1).to_bytes(8, "little") + b"{",
                                  (200_000_000).to_bytes(8, "little") + b"{"])
def test_a_small_length_without_a_json_header_after_it_is_no_safetensors_file(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(head + b"}" * 16)  # no "{" after the length; too short for "{}"; too long
    with pytest.raises(CheckpointError, match=NOT_SAFETENSORS):
        load_byo_model(FACTORY, path)


def test_a_text_file_named_in_capitals_is_held_to_the_suffix_check(tmp_path: Path) -> None:
    path = tmp_path / "W.SAFETENSORS"
    path.write_text("not weights at all\n")
    with pytest.raises(CheckpointError, match=NOT_SAFETENSORS):
        load_byo_model(FACTORY, path)


def test_an_index_starting_with_white_space_loads_and_a_weight_map_list_is_no_index(tmp_path: Path, state) -> None:
    index = _shard(state, tmp_path / "hf")
    index.write_text("\n  " + index.read_text())
    assert load_byo_model(FACTORY, index).metadata["weights_format"] == "safetensors index"
    index.write_text(json.dumps({"weight_map": sorted(state)}))
    with pytest.raises(CheckpointError, match="a JSON file without a 'weight_map'"):
        load_byo_model(FACTORY, index)


def test_an_empty_shard_name_an_empty_file_and_an_unreadable_one_are_each_their_own_line(tmp_path: Path, state,
                                                                                          monkeypatch) -> None:
    index = _shard(state, tmp_path / "hf")
    index.write_text(json.dumps({"weight_map": dict.fromkeys(state, "")}))
    with pytest.raises(CheckpointError, match=r"weight_map\['[\w.]+'\] is '', not a shard file name"):
        load_byo_model(FACTORY, index)
    empty = tmp_path / "empty.safetensors"
    save_file({}, empty)
    with pytest.raises(CheckpointError, match=r"empty\.safetensors: the safetensors file holds no tensors; save the "):
        load_byo_model(FACTORY, empty)
    single = tmp_path / "w.safetensors"
    save_file(state, single)

    def refused(path: str, *args: object, **kwargs: object) -> dict:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(safetensors, "safe_open", refused)
    with pytest.raises(CheckpointError, match=r"w\.safetensors: cannot be read \(.*Permission denied.*\); check its "
                                              r"permissions$"):
        load_byo_model(FACTORY, single)


def test_a_shard_holding_a_tensor_the_index_maps_to_another_shard_is_refused(tmp_path: Path, state) -> None:
    index = _shard(state, tmp_path / "hf")
    weight_map = json.loads(index.read_text())["weight_map"]
    moved = sorted(weight_map)[1]  # in shard 1, but the index says shard 2
    weight_map[moved] = "model-00002-of-00002.safetensors"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=rf"shard model-00001-of-00002\.safetensors holds '{moved}', but the "
                                              r"index maps it to model-00002-of-00002\.safetensors"):
        load_byo_model(FACTORY, index)


def test_shard_names_with_a_drive_or_windows_parent_are_refused_and_an_index_is_no_checkpoint(tmp_path: Path,
                                                                                             state) -> None:
    index = _shard(state, tmp_path / "hf")
    weight_map = json.loads(index.read_text())["weight_map"]
    for name in ("C:model-00001-of-00002.safetensors", "..\\model-00001-of-00002.safetensors"):
        index.write_text(json.dumps({"weight_map": dict.fromkeys(weight_map, name)}))
        with pytest.raises(CheckpointError, match=r"is not a file name in the index's folder; shards are read from "
                                                  r"beside the index only"):
            load_byo_model(FACTORY, index)
    index = _shard(state, tmp_path / "again")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: a safetensors index file, not a "
                                              r"kwta-robust checkpoint"):
        load_checkpoint(index)


def test_fill_tied_copies_the_callers_dict_and_ties_no_empty_tensors() -> None:
    shared = torch.randn(3, 2)
    expected = {"enc.weight": shared, "dec.weight": shared, "a.scale": torch.empty(0), "b.scale": torch.empty(0)}
    given = {"enc.weight": shared.clone(), "a.scale": torch.empty(0)}
    filled, notes = fill_tied(given, expected)
    assert set(given) == {"enc.weight", "a.scale"}  # the file's dict as read
    assert set(filled) == {"enc.weight", "dec.weight", "a.scale"} and filled["dec.weight"] is given["enc.weight"]
    assert notes and notes[0].startswith("took 1 tied tensors")  # two empty tensors share no storage: b stays missing


def test_fill_tied_ties_only_the_same_view_of_a_storage() -> None:
    base, stacked = torch.arange(4.0).reshape(2, 2), torch.arange(8.0).reshape(2, 2, 2)
    for views in ({"a": base, "b": base.t()}, {"a": stacked[0], "b": stacked[1]}):  # another stride, offset
        filled, notes = fill_tied({"a": torch.zeros(2, 2)}, views)
        assert set(filled) == {"a"} and notes == []


def test_a_safetensors_file_under_another_name_is_logged_as_read_by_its_content(tmp_path: Path, state,
                                                                                caplog) -> None:
    path = tmp_path / "w.bin"
    save_file(state, path)
    with caplog.at_level(logging.INFO, logger="kwta_robust.weights_read"):
        assert load_byo_model(FACTORY, path).metadata["weights_format"] == "safetensors"
    assert "w.bin: a safetensors file (by its content), read as one" in caplog.text
