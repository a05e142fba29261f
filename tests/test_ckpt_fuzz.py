"""Checkpoint fuzzing (kwta_robust.checkpoint.load_checkpoint): files a researcher has lying around that loaded
silently into other weights or another model, or stopped with a raw traceback, now stop with one line naming the
file, the field and the fix."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.checkpoint import load_byo_model, load_checkpoint, save_checkpoint
from kwta_robust.errors import CheckpointError, ConfigError
from kwta_robust.loading import load_model
from kwta_robust.models import ModelSpec
from test_checkpoint import _one_line, _payload, byo_module, model, spec  # noqa: F401 - fixtures
from test_dry_run import run, write_config


def _flip_in_member(path: Path, member_suffix: str) -> str:
    """Flip one byte inside the stored values of the zip member ending in ``member_suffix``; its name."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(member_suffix))
        stored = archive.read(name)
    data = bytearray(path.read_bytes())
    at = data.find(stored) + len(stored) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return name


def test_a_flipped_bit_in_the_stored_weights_is_refused(tmp_path: Path, spec: ModelSpec, model: nn.Module) -> None:
    """torch.load does not check a zip member's CRC: one flipped bit in a weight loaded as another weight."""
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {})
    name = _flip_in_member(path, "data/1")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert _one_line(info) == (f"checkpoint {path}: member {name!r} fails its CRC check (the file is damaged); "
                               "re-create or re-download it")


def test_a_flipped_bit_in_a_weights_file_is_refused(tmp_path: Path, byo_module: str) -> None:  # noqa: F811
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    name = _flip_in_member(tmp_path / "w.pt", "data/0")
    with pytest.raises(CheckpointError, match=rf"^weights {tmp_path / 'w.pt'}: member '{name}' fails its CRC check"):
        load_byo_model(f"{byo_module}:small_net", tmp_path / "w.pt")


def test_a_damaged_member_name_alone_still_loads_the_same_weights(tmp_path: Path, spec: ModelSpec,
                                                                   model: nn.Module) -> None:
    """A flipped byte in a local header's file name (torch reads the central directory): the values are intact."""
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {})
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first local header's name
    path.write_bytes(bytes(data))
    loaded = load_checkpoint(path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_state_dict_key_that_is_not_a_string_is_one_line(tmp_path: Path, spec: ModelSpec,
                                                           model: nn.Module) -> None:
    torch.save(_payload(spec, model, state_dict={**model.state_dict(), 3: torch.zeros(1)}), tmp_path / "k.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "k.pt")
    assert _one_line(info).startswith(f"checkpoint {tmp_path / 'k.pt'}: state_dict key 3 (int) is not a parameter "
                                      "name; save the weights with torch.save(model.state_dict(), FILE)")


@pytest.mark.parametrize(("dtype", "kind"), [(torch.int64, "int64 (not floating-point)"),
                                             (torch.bool, "bool (not floating-point)"),
                                             (torch.complex64, "complex64 (complex)")])
def test_integer_boolean_or_complex_weights_in_a_checkpoint_are_refused(tmp_path: Path, spec: ModelSpec,
                                                                         model: nn.Module, dtype, kind: str) -> None:
    """They loaded silently (complex with only a warning): the imaginary part or the fractions were gone."""
    state = dict(model.state_dict())
    state["features.0.weight"] = (state["features.0.weight"] * 100).to(dtype)
    torch.save(_payload(spec, model, state_dict=state), tmp_path / "d.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "d.pt")
    assert f"'features.0.weight' is {kind} but the model's tensor is float32; these are not the trained weights" \
        in _one_line(info)


def _edited(path: Path, edit) -> Path:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p["model_spec"]["kwargs"]["activation"].update(ratio=0.5),
     "kwta layer 'features.2' ratio 0.2 but the model its model_spec builds has 0.5"),
    (lambda p: p["model_spec"]["kwargs"]["activation"].update(k_inference_factor=3.0),
     "kwta layer 'features.2' k_inference_factor 1.5 but the model its model_spec builds has 3.0"),
    (lambda p: p["metadata"]["kwta_layers"]["features.5"].update(ratio=0.9),
     "kwta layer 'features.5' ratio 0.9 but the model its model_spec builds has 0.2"),
    (lambda p: p["metadata"].update(activation="relu"),
     "activation 'relu' but the model its model_spec builds has 'kwta'"),
])
def test_metadata_that_disagrees_with_the_model_the_spec_builds_is_refused(tmp_path: Path, spec: ModelSpec,
                                                                          model: nn.Module, edit, message) -> None:
    """The model was built from the spec and its weights loaded (a kWTA ratio is no tensor), while the metadata
    measured when it was saved said otherwise: another model was evaluated than the one trained."""
    path = _edited(save_checkpoint(tmp_path / "m.pt", model, spec, {}), edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert _one_line(info) == (f"checkpoint {path}: its metadata says {message}; the file was edited or damaged: "
                               "save it again with save_checkpoint (`kwta-robust train`)")


@pytest.mark.parametrize("seed", ["abc", 1.5, [3], True])
def test_a_split_seed_that_is_not_a_whole_number_is_refused(tmp_path: Path, spec: ModelSpec, model: nn.Module,
                                                            seed) -> None:
    """It was read as the canonical split 0, whose test samples are training samples of a model trained on another
    split: an evaluation on them, silently."""
    path = _edited(save_checkpoint(tmp_path / "m.pt", model, spec, {"data_split_seed": 7}),
                   lambda p: p["metadata"].update(data_split_seed=seed))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert _one_line(info) == (f"checkpoint {path}: metadata data_split_seed is {seed!r}, not a whole number (the "
                               "seed of the train/test split it was trained on); the file was edited or damaged: save "
                               "it again with save_checkpoint (`kwta-robust train`)")
    _edited(path, lambda p: p["metadata"].update(data_split_seed=7))
    assert load_checkpoint(path).metadata["data_split_seed"] == 7


def test_weights_normalization_that_is_not_a_list_is_one_line(tmp_path: Path, spec: ModelSpec,
                                                              model: nn.Module) -> None:
    """A float16 checkpoint whose metadata held weights_normalization 5 stopped with a TypeError traceback."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {})
    _edited(path, lambda p: (p.update(state_dict=state), p["metadata"].update(weights_normalization=5)))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert _one_line(info) == (f"checkpoint {path}: metadata weights_normalization is int, not a list of notes; "
                               "the file is damaged")


def test_the_cli_refuses_a_damaged_checkpoint_in_one_line_and_writes_nothing(tmp_path: Path, spec: ModelSpec,
                                                                            model: nn.Module, capsys,
                                                                            monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ckpt"
    path = save_checkpoint(folder / "m.pt", model, spec, {})
    _flip_in_member(path, "data/1")
    cfg = write_config(tmp_path / "c.yaml", dataset="digits")
    before = sorted(p.name for p in folder.iterdir())
    rc, _, errors = run(["evaluate", str(path), "--config", str(cfg), "--dry-run"], capsys)
    assert rc == 2 and len(errors) == 1 and "fails its CRC check" in errors[0]
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("flag", ["no", "False", 1, None])
def test_allow_pickle_that_is_not_a_bool_runs_no_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag) -> None:
    """allow_pickle='no' from the Python API was true: the file's pickled code ran (it writes a marker here)."""
    marker = tmp_path / "ran"
    (tmp_path / "evil_payload.py").write_text(f"class Evil:\n    def __reduce__(self):\n        return (open, "
                                              f"({str(marker)!r}, 'w'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import evil_payload  # noqa: PLC0415 - written above

    torch.save({"x": evil_payload.Evil()}, tmp_path / "evil.pt")
    assert not marker.exists()
    for load in (lambda: load_checkpoint(tmp_path / "evil.pt", allow_pickle=flag),
                 lambda: load_model(str(tmp_path / "evil.pt"), "cpu", allow_pickle=flag)):
        with pytest.raises(ConfigError) as info:
            load()
        assert _one_line(info) == f"allow_pickle: expected True or False, got {flag!r}"
    assert not marker.exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"checkpoint": 5}, "checkpoint: expected a file path (str or pathlib.Path), got int 5"),
    ({"checkpoint": b"m.pt"}, "checkpoint: expected a file path (str or pathlib.Path), got bytes b'm.pt'"),
    ({"model_factory": "my_byo_models:small_net", "weights": 5},
     "weights: expected a file path (str or pathlib.Path), got int 5"),
    ({"model_factory": 5}, "model_factory: expected 'package.module:function' (a str), got int"),
])
def test_arguments_of_the_wrong_type_are_one_line(byo_module: str, kwargs, message: str) -> None:  # noqa: F811
    """They stopped with TypeError / AttributeError from pathlib or str.partition."""
    with pytest.raises(ConfigError) as info:
        load_model(kwargs.pop("checkpoint", None), "cpu", **kwargs)
    assert _one_line(info) == message
