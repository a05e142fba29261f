"""A safetensors file's ``__metadata__`` header (a string-to-string map) is recorded beside ``weights_format``
(``model.training.weights_metadata``; a shard's in its ``weights_shards`` entry), capped at 50 entries of at most
200 characters each, saying what was cut; before, it was read and dropped. A sharded checkpoint's index is read and
parsed once, and each shard read through once for its digest and memory-mapped once for its tensors (before: the
index parsed twice and read three times)."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import pytest
import safetensors
import torch
from safetensors.torch import save_file

from kwta_robust.checkpoint import load_byo_model
from kwta_robust.cli import main
from kwta_robust.results import load_record
from test_cli_eval import make_mlp, write_config

FACTORY = "test_cli_eval:make_mlp"


@pytest.fixture()
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    return make_mlp().state_dict()


def test_the_metadata_header_is_in_the_record_beside_the_format(tmp_path: Path, state, capsys) -> None:
    save_file(state, tmp_path / "w.safetensors", metadata={"format": "pt", "source": "timm/resnet"})
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4, attacks=["fgsm"], noise=[])
    assert main(["evaluate", "--model-factory", FACTORY, "--weights", str(tmp_path / "w.safetensors"), "--config",
                 str(cfg), "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0, capsys.readouterr().err
    training = load_record(tmp_path / "r.json").model["training"]
    assert training["weights_format"] == "safetensors"
    assert training["weights_metadata"] == {"format": "pt", "source": "timm/resnet"}
    assert "weights_metadata_left_out" not in training


def test_a_file_without_metadata_or_a_torch_file_records_no_metadata_field(tmp_path: Path, state) -> None:
    save_file(state, tmp_path / "w.safetensors")  # no __metadata__ in its header
    torch.save(state, tmp_path / "w.pt")
    save_file(state, tmp_path / "empty.safetensors", metadata={})
    for name in ("w.safetensors", "w.pt"):
        assert not any(k.startswith("weights_metadata") for k in load_byo_model(FACTORY, tmp_path / name).metadata)
    assert load_byo_model(FACTORY, tmp_path / "empty.safetensors").metadata["weights_metadata"] == {}


def test_large_metadata_is_capped_and_says_so(tmp_path: Path, state) -> None:
    metadata = {f"key{i:02d}": f"value {i}" for i in range(60)}
    metadata["key00"] = "v" * 500
    metadata["a" * 300] = "long key"
    save_file(state, tmp_path / "w.safetensors", metadata=metadata)
    loaded = load_byo_model(FACTORY, tmp_path / "w.safetensors").metadata
    kept = loaded["weights_metadata"]
    assert len(kept) == 50 and loaded["weights_metadata_left_out"] == 11
    assert kept["a" * 200 + "... (300 characters)"] == "long key"  # sorted first
    assert kept["key00"] == "v" * 200 + "... (500 characters)"
    assert kept["key48"] == "value 48" and "key49" not in kept
    json.dumps(loaded)  # plain data for the record


def _shard(state: dict[str, torch.Tensor], folder: Path) -> Path:
    folder.mkdir()
    keys = sorted(state)
    weight_map = {}
    for number, part in enumerate((keys[:2], keys[2:]), start=1):
        name = f"model-0000{number}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, folder / name, metadata={"format": "pt", "shard": str(number)})
        weight_map.update({k: name for k in part})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def test_each_shard_records_its_metadata(tmp_path: Path, state) -> None:
    index = _shard(state, tmp_path / "hf")
    shards = load_byo_model(FACTORY, index).metadata["weights_shards"]
    assert [s["metadata"] for s in shards] == [{"format": "pt", "shard": "1"}, {"format": "pt", "shard": "2"}]
    assert [s["file"] for s in shards] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


class _Counted(io.BufferedReader):
    """A binary handle adding the bytes each read returns to ``counts[name]``."""

    counts: dict[str, int]

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.counts[Path(self.name).name] = self.counts.get(Path(self.name).name, 0) + len(data)
        return data


def test_an_index_and_each_shard_are_opened_read_and_parsed_once(tmp_path: Path, state, monkeypatch) -> None:
    index = _shard(state, tmp_path / "hf")
    files = {p.name: p.stat().st_size for p in index.parent.iterdir()}
    opens: dict[str, int] = {}
    read: dict[str, int] = {}
    parses: list[str] = []
    mapped: dict[str, int] = {}
    real_open, real_safe_open, real_loads = builtins.open, safetensors.safe_open, json.loads

    def counting_open(file, mode="r", *args, **kwargs):
        name = Path(str(file)).name
        if name not in files or mode != "rb":
            return real_open(file, mode, *args, **kwargs)
        opens[name] = opens.get(name, 0) + 1
        handle = _Counted(io.FileIO(file, "rb"))
        handle.counts = read
        return handle

    def counting_safe_open(filename, *args, **kwargs):  # safetensors opens the file itself (memory map)
        name = Path(str(filename)).name
        opens[name] = opens.get(name, 0) + 1
        mapped[name] = mapped.get(name, 0) + 1
        return real_safe_open(filename, *args, **kwargs)

    def counting_loads(text, *args, **kwargs):
        if (b"weight_map" if isinstance(text, bytes) else "weight_map") in text:
            parses.append("index")
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(safetensors, "safe_open", counting_safe_open)
    monkeypatch.setattr(json, "loads", counting_loads)
    loaded = load_byo_model(FACTORY, index)
    assert loaded.metadata["weights_format"] == "safetensors index"
    index_name = index.name
    assert opens[index_name] == 1 and read[index_name] <= files[index_name] + 9, (opens, read)  # + the kind's 9 bytes
    for name, size in files.items():  # a shard: opened to digest it, memory-mapped once by safe_open (not held)
        if name != index_name:
            assert opens[name] == 2 and mapped[name] == 1, (opens, mapped)
    assert parses == ["index"]
