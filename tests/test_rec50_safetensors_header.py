"""A safetensors file's header — the JSON after its 8-byte length, naming every tensor and holding its
``__metadata__`` — is read and parsed once, a single ``--weights`` file and each shard of an index alike: one
``safetensors.safe_open`` gives the tensors and the metadata (``safetensors_read.read_safetensors``). Session 49
memory-mapped the file with ``load_file``, which parses the header, and then read the header again from the handle
and parsed it with ``json.loads`` for its ``__metadata__``: twice per file. The tensors and the recorded metadata
are as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from safetensors.torch import save_file

from kwta_robust.checkpoint import load_byo_model
from test_cli_eval import make_mlp

FACTORY = "test_cli_eval:make_mlp"


def _count_header_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Per header parse, the file's name (the library's opens, the module's own ``json.loads`` of a header)."""
    parses: list[str] = []
    real_safe_open, real_load_file, real_loads = safetensors.safe_open, safetensors.torch.load_file, json.loads

    def safe_open(filename: Any, *args: Any, **kwargs: Any) -> Any:
        parses.append(Path(str(filename)).name)
        return real_safe_open(filename, *args, **kwargs)

    def load_file(filename: Any, *args: Any, **kwargs: Any) -> Any:  # its own open is not the one patched above
        parses.append(Path(str(filename)).name)
        return real_load_file(filename, *args, **kwargs)

    def loads(text: Any, *args: Any, **kwargs: Any) -> Any:
        if (b"data_offsets" if isinstance(text, bytes) else "data_offsets") in text:  # a safetensors header
            parses.append("json.loads")
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", safe_open)
    monkeypatch.setattr(safetensors.torch, "load_file", load_file)
    monkeypatch.setattr(json, "loads", loads)
    return parses


def test_each_safetensors_header_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    state = make_mlp().state_dict()
    save_file(state, tmp_path / "w.safetensors", metadata={"format": "pt", "source": "timm/resnet"})
    folder = tmp_path / "hf"
    folder.mkdir()
    keys = sorted(state)
    weight_map = {}
    for number, part in enumerate((keys[:2], keys[2:]), start=1):
        name = f"model-0000{number}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, folder / name, metadata={"shard": str(number)})
        weight_map.update({k: name for k in part})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    parses = _count_header_parses(monkeypatch)

    single = load_byo_model(FACTORY, tmp_path / "w.safetensors")
    assert parses == ["w.safetensors"]  # session 49: and "json.loads"
    assert single.metadata["weights_metadata"] == {"format": "pt", "source": "timm/resnet"}
    assert all(torch.equal(single.model.state_dict()[k], v) for k, v in state.items())

    parses.clear()
    sharded = load_byo_model(FACTORY, index)
    assert parses == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert [s["metadata"] for s in sharded.metadata["weights_shards"]] == [{"shard": "1"}, {"shard": "2"}]
    assert all(torch.equal(sharded.model.state_dict()[k], v) for k, v in state.items())
