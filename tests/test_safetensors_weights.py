"""``--weights FILE.safetensors``: a state_dict in the safetensors format (no pickle) evaluates as its
``torch.save`` twin does — the same record numbers through ``evaluate``, ``compare`` and the Python API — and is
normalized the same way (prefixes, tied tensors, dtypes, the strict key check's lines); the format is told by the
file's content, not its name; a damaged file, a sharded checkpoint's index and its shards are read or refused in
one line."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from kwta_robust.api import evaluate_model
from kwta_robust.checkpoint import load_byo_model, load_checkpoint
from kwta_robust.cli import main
from kwta_robust.errors import CheckpointError
from kwta_robust.record_diff import record_differences
from kwta_robust.results import load_record
from test_cli_eval import make_mlp, run_error, write_checkpoint, write_config

FACTORY = "test_cli_eval:make_mlp"


@pytest.fixture()
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(4)  # 4 of the 12 samples right, 1 robust to FGSM: numbers, not all-zero rows
    return make_mlp().state_dict()


@pytest.fixture()
def files(tmp_path: Path, state) -> tuple[Path, Path]:
    """The same weights as ``pt/w.pt`` (torch.save) and ``st/w.safetensors`` (safetensors.torch.save_file)."""
    (tmp_path / "pt").mkdir()
    (tmp_path / "st").mkdir()
    torch.save(state, tmp_path / "pt" / "w.pt")
    save_file(state, tmp_path / "st" / "w.safetensors")
    return tmp_path / "pt" / "w.pt", tmp_path / "st" / "w.safetensors"


def _config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.yaml", n_examples=12, batch_size=12,
                        threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _timeless(results: list) -> list:
    """Result entries without their wall times."""
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in results]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_and_compare_give_the_torch_files_numbers(tmp_path: Path, files, capsys) -> None:
    pt, st = files
    cfg = _config(tmp_path)
    for weights, out in ((pt, "a.json"), (st, "b.json")):
        assert main(["evaluate", "--model-factory", FACTORY, "--weights", str(weights), "--config", str(cfg),
                     "--out", str(tmp_path / out), "--no-progress"]) == 0, capsys.readouterr().err
    a, b = _json(tmp_path / "a.json"), _json(tmp_path / "b.json")
    assert record_differences(a, b) == ["model.training.weights_format: 'torch' != 'safetensors'"]
    assert _timeless(a["results"]) == _timeless(b["results"]) and a["results"][0]["robust"]["correct"] == 1
    assert a["model"]["state_sha256"] == b["model"]["state_sha256"]
    assert b["model"]["checkpoint_sha256"] == _sha(st) and a["model"]["checkpoint_sha256"] == _sha(pt)
    assert b["model"]["training"]["weights_normalization"] == []
    assert main(["compare", f"{FACTORY}={pt}", f"{FACTORY}={st}", "--labels", "pt,st", "--config", str(cfg),
                 "--out-dir", str(tmp_path / "cmp"), "--no-progress"]) == 0, capsys.readouterr().err
    pair = {p.stem: _json(p) for p in (tmp_path / "cmp").glob("*.json")}
    assert pair["st"]["model"]["training"]["weights_format"] == "safetensors"
    assert _timeless(r for r in pair["pt"]["results"] if r["attack"] == "fgsm") == \
        _timeless(r for r in pair["st"]["results"] if r["attack"] == "fgsm") == _timeless(a["results"])


def test_the_python_api_loads_it_into_the_same_model_and_record(tmp_path: Path, files) -> None:
    pt, st = files
    loaded = [load_byo_model(FACTORY, path) for path in files]
    assert [m.metadata["weights_format"] for m in loaded] == ["torch", "safetensors"]
    assert loaded[1].sha256 == _sha(st) and loaded[0].sha256 == _sha(pt)
    first, second = (m.model.state_dict() for m in loaded)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    for i, m in enumerate(loaded):
        evaluate_model(m.model, _config(tmp_path), label="w", out_path=tmp_path / f"{i}.json")
    records = [_json(tmp_path / f"{i}.json") for i in range(2)]
    assert record_differences(*records) == [] and records[1]["results"][0]["robust"]["correct"] == 1
    assert _timeless(records[0]["results"]) == _timeless(records[1]["results"])


def test_prefixes_dtypes_and_the_strict_checks_lines_are_the_torch_files(tmp_path: Path, state) -> None:
    save_file({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.safetensors")
    loaded = load_byo_model(FACTORY, tmp_path / "dp.safetensors")
    assert loaded.metadata["weights_normalization"] == ["stripped the 'module.' prefix from 4 keys"]
    assert torch.equal(loaded.model.state_dict()["1.weight"], state["1.weight"])
    save_file({f"model.{k}": v.half() for k, v in state.items()}, tmp_path / "lit.safetensors")
    assert load_byo_model(FACTORY, tmp_path / "lit.safetensors").metadata["weights_normalization"] == [
        "stripped the 'model.' prefix from 4 keys (every key carries it; without it they are the model's)",
        "converted 4 tensors from float16 to the model's float32"]
    for suffix, save in ((".pt", torch.save), (".safetensors", save_file)):
        save({**state, "head.weight": torch.zeros(2)}, tmp_path / f"extra{suffix}")
        save({k: v for k, v in state.items() if k != "3.bias"}, tmp_path / f"lacks{suffix}")
        save({**state, "1.weight": torch.zeros(3, 3)}, tmp_path / f"shape{suffix}")
    for name in ("extra", "lacks", "shape"):
        lines = []
        for suffix in (".pt", ".safetensors"):
            with pytest.raises(CheckpointError) as info:
                load_byo_model(FACTORY, tmp_path / f"{name}{suffix}")
            lines.append(str(info.value).replace(suffix, ""))
        assert lines[0] == lines[1] and "\n" not in lines[0], lines


class Tied(nn.Module):
    """A decoder sharing its encoder's weight (``decoder.weight is encoder.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(10, 10), nn.Linear(10, 10)
        self.decoder.weight = self.encoder.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.encoder(x.flatten(1)[:, :10])))


def test_tied_weights_saved_once_by_save_model_load_into_every_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Tied()
    with pytest.raises(RuntimeError, match="share memory"):  # save_file refuses a tensor stored under two names
        save_file(net.state_dict(), tmp_path / "t.safetensors")
    save_model(net, tmp_path / "t.safetensors")  # what its message advises: one name of each tied group
    assert len(load_file(tmp_path / "t.safetensors")) == 3
    loaded = load_byo_model("test_safetensors_weights:Tied", tmp_path / "t.safetensors")
    kept = "encoder.weight" if "encoder.weight" in load_file(tmp_path / "t.safetensors") else "decoder.weight"
    assert loaded.metadata["weights_normalization"] == [
        "took 1 tied tensors from the name the file holds them under (the model ties them; safetensors stores a "
        f"tied tensor once): {({'encoder.weight', 'decoder.weight'} - {kept}).pop()}"]
    x = torch.rand(4, 10)
    assert torch.equal(loaded.model(x), net(x)) and loaded.model.decoder.weight is loaded.model.encoder.weight


def test_the_format_is_told_by_the_content_not_the_name(tmp_path: Path, files, caplog) -> None:
    pt, st = files
    shutil.copy(st, tmp_path / "really_safetensors.pt")
    shutil.copy(pt, tmp_path / "really_torch.safetensors")
    assert load_byo_model(FACTORY, tmp_path / "really_safetensors.pt").metadata["weights_format"] == "safetensors"
    with caplog.at_level(logging.WARNING):
        loaded = load_byo_model(FACTORY, tmp_path / "really_torch.safetensors")
    assert loaded.metadata["weights_format"] == "torch"
    assert "a PyTorch file despite its .safetensors name" in caplog.text
    (tmp_path / "text.safetensors").write_text("not weights at all\n")
    with pytest.raises(CheckpointError, match=r"^weights .*text\.safetensors: not a safetensors file \(it does not "
                                              r"start with an 8-byte header length and a JSON header\) nor a PyTorch"):
        load_byo_model(FACTORY, tmp_path / "text.safetensors")
    with pytest.raises(CheckpointError, match=r"^checkpoint .*w\.safetensors: a safetensors file, not a kwta-robust "
                                              r"checkpoint .*--model-factory package\.module:function --weights "):
        load_checkpoint(st)
    assert load_checkpoint(write_checkpoint(tmp_path / "ours.pt")).spec is not None  # ours: still torch files


def test_a_damaged_or_truncated_file_is_one_line(tmp_path: Path, files, capsys) -> None:
    raw = files[1].read_bytes()
    header = int.from_bytes(raw[:8], "little")
    cfg = _config(tmp_path)
    damaged = {"values_cut": raw[:-5], "header_cut": raw[:8 + header // 2], "length_only": raw[:9],
               "bad_json": raw[:9] + b"x" + raw[10:]}
    for name, data in damaged.items():
        (tmp_path / f"{name}.safetensors").write_bytes(data)
        with pytest.raises(CheckpointError, match=r"a damaged or truncated safetensors file \(.+\); re-create or "
                                                  r"re-download it$") as info:
            load_byo_model(FACTORY, tmp_path / f"{name}.safetensors")
        assert "\n" not in str(info.value), name
    line = run_error(capsys, ["evaluate", "--model-factory", FACTORY, "--weights",
                              str(tmp_path / "values_cut.safetensors"), "--config", str(cfg)])
    assert "values_cut.safetensors: a damaged or truncated safetensors file" in line


def _shard(state: dict[str, torch.Tensor], folder: Path) -> Path:
    """``state`` saved as two shards and a Hugging Face index (``model.safetensors.index.json``) in ``folder``."""
    folder.mkdir(exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for number, part in enumerate((keys[:2], keys[2:]), start=1):
        name = f"model-0000{number}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, folder / name)
        weight_map.update({k: name for k in part})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def test_a_sharded_checkpoints_index_loads_every_shard(tmp_path: Path, state, files, capsys) -> None:
    index = _shard(state, tmp_path / "hf")
    loaded = load_byo_model(FACTORY, index)
    assert loaded.metadata["weights_format"] == "safetensors index" and loaded.sha256 == _sha(index)
    assert loaded.metadata["weights_shards"] == [
        {"file": f"model-0000{n}-of-00002.safetensors",
         "sha256": _sha(tmp_path / "hf" / f"model-0000{n}-of-00002.safetensors")} for n in (1, 2)]
    single = load_byo_model(FACTORY, files[1]).model.state_dict()
    assert all(torch.equal(v, single[k]) for k, v in loaded.model.state_dict().items())
    cfg = _config(tmp_path)
    assert main(["evaluate", "--model-factory", FACTORY, "--weights", str(index), "--config", str(cfg), "--out",
                 str(tmp_path / "hf.json"), "--no-progress"]) == 0, capsys.readouterr().err
    assert load_record(tmp_path / "hf.json").model["training"]["weights_shards"][1]["file"].startswith("model-00002")


def test_an_index_whose_shards_are_missing_or_not_its_own_is_one_line(tmp_path: Path, state) -> None:
    index = _shard(state, tmp_path / "hf")
    (tmp_path / "hf" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shard model-00002-of-00002\.safetensors listed in its weight_map is "
                                              r"missing .*; download every shard next to the index$"):
        load_byo_model(FACTORY, index)
    index = _shard(state, tmp_path / "moved")
    text = json.loads(index.read_text())
    for broken, words in ((dict(text["weight_map"], **{"3.bias": "model-00001-of-00002.safetensors"}),
                           r"the index lists '3\.bias' in shard model-00001-of-00002\.safetensors, which lacks it"),
                          ({k: v for k, v in text["weight_map"].items() if k != "3.bias"},
                           r"holds '3\.bias', but the index does not list it"),
                          (dict(text["weight_map"], **{"1.bias": "../w.safetensors"}),
                           r"shard '\.\./w\.safetensors' is not a file name in the index's folder"),
                          ({}, "the index's weight_map is empty")):
        index.write_text(json.dumps({"weight_map": broken}))
        with pytest.raises(CheckpointError, match=words):
            load_byo_model(FACTORY, index)
    torch.save(state, tmp_path / "moved" / "pytorch_model-00001.bin")  # a sharded torch checkpoint's shard
    index.write_text(json.dumps({"weight_map": {k: "pytorch_model-00001.bin" for k in state}}))
    with pytest.raises(CheckpointError, match=r"shard pytorch_model-00001\.bin is not a safetensors file; only "
                                              r"safetensors shards are read \(for a pytorch_model\.bin\.index\.json, "
                                              r"merge the shards"):
        load_byo_model(FACTORY, index)
    (tmp_path / "other.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="a JSON file without a 'weight_map'"):
        load_byo_model(FACTORY, tmp_path / "other.json")


def test_without_the_safetensors_package_the_line_says_how_to_install_it(files, monkeypatch) -> None:
    for module in ("safetensors", "safetensors.torch"):  # importing either raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CheckpointError, match=r"w\.safetensors: reading a safetensors file needs the safetensors "
                                              r"package \(a dependency of kwta-robust\): pip install safetensors"):
        load_byo_model(FACTORY, files[1])
    assert load_byo_model(FACTORY, files[0]).metadata["weights_format"] == "torch"  # torch files need none
