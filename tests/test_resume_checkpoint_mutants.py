"""Mutation round on kwta_robust.resume and .checkpoint (part 2: :mod:`test_foreign_loading_mutants`): each test pins a
hand-made mutant changed without any other test noticing. Expected values are written out by hand (file bytes
hashed with hashlib, counts of tensors made here, messages spelled in full), never read back from the code."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from eval_helpers import make_record, make_result
from kwta_robust.checkpoint import FORMAT, file_sha256, load_byo_model, load_checkpoint, save_checkpoint
from kwta_robust.errors import CheckpointError
from kwta_robust.layers import ActivationSpec
from kwta_robust.models import ModelSpec
from kwta_robust.resume import (
    drop_unmerged_parts,
    first_difference,
    note_resume,
    StalePolicy,
    parts_folder,
    resumable_record,
    set_aside,
    settings_change,
    stale_reason,
)

# ---------------------------------------------------------------------------------------------------- resume


def _identified_record():
    record = make_record(n=4)
    record.model.update(state_sha256="w", model_source_sha256="code-1",
                        training={"model_factory": "pkg.nets:make", "factory_kwargs": {"width": 8}})
    record.provenance["plugins"] = {"attacks": {"myatk": "dist-a 1.0"}}
    return record


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: m["training"].update(model_factory="pkg.nets:other"), "another model factory"),
    (lambda m: m["training"].update(factory_kwargs={"width": 16}), "other factory arguments"),
    (lambda m: m.update(model_source_sha256="code-2"), "other model code (a source file of its modules changed)"),
])
def test_each_part_of_a_byo_models_identity_is_compared(change, reason) -> None:
    fresh = _identified_record()
    old = copy.deepcopy(fresh)
    assert stale_reason(old, fresh) is None
    change(old.model)
    assert stale_reason(old, fresh) == f"holds a record of {reason}"


def test_three_differences_are_joined_with_commas_and_a_final_and() -> None:
    fresh = _identified_record()
    old = copy.deepcopy(fresh)
    old.config_hash = "other"
    old.model["training"]["model_factory"] = "pkg.nets:other"
    old.model["model_source_sha256"] = "code-2"
    assert stale_reason(old, fresh) == ("holds a record of another config, another model factory and other model code "
                                        "(a source file of its modules changed)")


def test_a_plugin_of_another_version_is_stale_and_a_newly_installed_one_is_not() -> None:
    fresh = _identified_record()
    old = copy.deepcopy(fresh)
    old.provenance["plugins"] = {"attacks": {"myatk": "dist-a 0.9"}}
    assert stale_reason(old, fresh) == "holds a record of another version of a plug-in"
    old.provenance["plugins"] = {}  # installed since the record was written: its units could not have used it
    assert stale_reason(old, fresh) is None
    fresh.provenance["plugins"] = {"attacks": {"myatk": "dist-a 1.0", "newatk": "dist-b 2.0"}}
    old.provenance["plugins"] = {"attacks": {"myatk": "dist-a 1.0"}}
    assert stale_reason(old, fresh) is None


PGD = {"steps": 10, "step_size": 0.025}


def test_settings_change_names_the_first_unit_of_a_label_and_counts_the_other_attacks() -> None:
    record = make_record(n=4)
    record.results = [make_result("pgd", [1, 1, 1, 1], eps=0.1), make_result("pgd", [1, 1, 1, 1], eps=0.2),
                      make_result("fgsm", [1, 1, 1, 1], eps=0.1), make_result("cw", [1, 1, 1, 1], eps=0.1)]
    record.results[0].settings = {**PGD, "steps": 20}  # the first pgd unit: steps differ
    record.results[1].settings = {**PGD, "step_size": 0.5}  # the second: another setting
    record.results[2].settings = {"loss": "ce"}
    record.results[3].settings = {"c": 1}
    assert settings_change(record, {"pgd": PGD}) == (
        "other attack settings (pgd: steps 20 → 10; this version's attack defaults changed)")
    assert settings_change(record, {"pgd": PGD, "fgsm": {"loss": "margin"}}) == (
        "other attack settings (pgd: steps 20 → 10, and 1 other attack; this version's attack defaults changed)")
    assert settings_change(record, {"pgd": PGD, "fgsm": {"loss": "margin"}, "cw": {"c": 2}}) == (
        "other attack settings (pgd: steps 20 → 10, and 2 other attacks; this version's attack defaults changed)")


def test_first_difference_of_two_plain_values_is_named_settings() -> None:
    assert first_difference(3, 4) == ("settings", 3, 4)
    assert first_difference("ce", "ce") is None


def test_note_resume_appends_to_the_lists_and_warns_about_another_thread_count(
        caplog: pytest.LogCaptureFixture) -> None:
    old, fresh = make_record(n=2), make_record(n=2)
    old.provenance.update(resumed_at=["t1"], resumed_on=["cpu"], resumed_threads=[2], torch_threads=2,
                          device="cpu", command="kwta-robust evaluate a")
    fresh.provenance.update(started_at="t2", command="kwta-robust evaluate b")
    with caplog.at_level(logging.WARNING, logger="kwta_robust.resume"):
        note_resume(old, fresh, Path("rec.json"), "cuda:0", 4)
    assert old.provenance == {"resumed_at": ["t1", "t2"], "resumed_on": ["cpu", "cuda:0"], "resumed_threads": [2, 4],
                              "torch_threads": 2, "device": "cpu", "command": "kwta-robust evaluate b"}
    assert "rec.json: its finished units ran with 2 torch threads, this run uses 4" in caplog.text
    assert "re-run with --threads 2 to match" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kwta_robust.resume"):
        note_resume(old, fresh, Path("rec.json"), "cpu", 2)  # the same count: nothing to warn about
    assert caplog.text == "" and old.provenance["resumed_threads"] == [2, 4, 2]


def test_drop_unmerged_parts_removes_the_parts_folder_only(tmp_path: Path) -> None:
    record = tmp_path / "rec.json"
    assert parts_folder(record) == tmp_path / "rec.json.parts"
    (tmp_path / "rec.json.parts").mkdir()
    (tmp_path / "rec.json.parts" / "0.json").write_text("{}")
    record.write_text("{}")
    drop_unmerged_parts(record)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json"]
    drop_unmerged_parts(record)  # nothing left to remove: no error
    assert record.read_text() == "{}"


def test_set_aside_names_the_copy_by_the_first_twelve_characters_of_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    for n, text in enumerate(["first", "second", "third"]):
        path.write_text(text)
        target = set_aside(path, "0123456789abcdefXYZ")
        assert target.name == ("run.0123456789ab.json", "run.0123456789ab.2.json", "run.0123456789ab.3.json")[n]
        assert target.read_text() == text and not path.exists()
    path.write_text("x")
    assert set_aside(path, None).name == "run.unreadable.json"
    assert sorted(p.name for p in (tmp_path / "superseded").iterdir()) == [
        "run.0123456789ab.2.json", "run.0123456789ab.3.json", "run.0123456789ab.json", "run.unreadable.json"]


def test_a_record_whose_config_hash_is_not_a_file_name_is_still_set_aside(tmp_path: Path) -> None:
    """Bug: a damaged record whose ``config_hash`` held a ``/`` (``"ab/cd"``) stopped a run that sets stale records
    aside (``--no-resume`` in the quickstart) with a FileNotFoundError traceback: the hash named a folder."""
    path = tmp_path / "rec.json"
    text = json.dumps({"schema_version": 1, "config_hash": "ab/cd\\ef.."})
    path.write_text(text)
    assert resumable_record(path, make_record(n=2), StalePolicy(set_aside=True), resume=False) is None
    assert not path.exists()
    assert [p.name for p in (tmp_path / "superseded").iterdir()] == ["rec.ab_cd_ef...json"]
    assert (tmp_path / "superseded" / "rec.ab_cd_ef...json").read_text() == text


# ---------------------------------------------------------------------------------------------------- checkpoint


@pytest.fixture()
def spec() -> ModelSpec:
    return ModelSpec.from_args("cnn", ActivationSpec("relu"), in_channels=1, input_size=8, mean=[0.3], std=[0.4],
                               channels=[4, 8], hidden=16)


def test_file_sha256_is_the_sha256_of_every_block(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 7)  # 5.0 MiB and a bit: several 1 MiB blocks and a short last one
    (tmp_path / "f.bin").write_bytes(data)
    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_metadata_is_stored_as_plain_data(tmp_path: Path, spec: ModelSpec) -> None:
    model = spec.build().eval()
    meta = {"where": Path("runs") / "a", 3: "an int key", "pair": (1, 2), "t": torch.tensor(2.5),
            "np": np.float32(0.5), "nested": [{"k": (True, None)}]}
    path = save_checkpoint(tmp_path / "m.pt", model, spec, meta)
    stored = torch.load(path, weights_only=True)["metadata"]
    assert stored["where"] == os.path.join("runs", "a") and stored["3"] == "an int key"
    assert stored["pair"] == [1, 2] and stored["t"] == 2.5 and stored["np"] == 0.5
    assert stored["nested"] == [{"k": [True, None]}]
    assert type(stored["np"]) is float and type(stored["t"]) is float
    with pytest.raises(CheckpointError, match=r"^checkpoint metadata metadata\.t: Tensor is not plain data"):
        save_checkpoint(tmp_path / "bad.pt", model, spec, {"t": torch.zeros(2)})


def test_a_numpy_array_in_metadata_is_one_line(tmp_path: Path, spec: ModelSpec) -> None:
    """Bug: ``{"classes": np.array([3, 5])}`` stopped ``save_checkpoint`` with NumPy's "ValueError: can only convert
    an array of size 1 to a Python scalar" instead of the one-line error a tensor of two values gets."""
    model = spec.build()
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path / "m.pt", model, spec, {"classes": np.array([3, 5])})
    assert str(info.value) == ("checkpoint metadata metadata.classes: ndarray is not plain data; use numbers, "
                               "strings, lists or dicts")
    assert not (tmp_path / "m.pt").exists()
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {"one": np.array([7])})
    assert torch.load(path, weights_only=True)["metadata"]["one"] == 7


def _write_payload(path: Path, spec: ModelSpec, model: nn.Module, **changes) -> Path:
    payload = {"format": FORMAT, "format_version": 1, "model_spec": spec.to_dict(), "state_dict": model.state_dict(),
               "metadata": {}}
    payload.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del payload[key]
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "someone-elses-format"}, "its format is 'someone-elses-format', not 'kwta-robust-checkpoint'"),
    ({"format_version": 0}, "invalid format_version 0; the file is damaged"),
    ({"format_version": "1"}, "invalid format_version '1'; the file is damaged"),
    ({"format_version": True}, "invalid format_version True; the file is damaged"),
    ({"metadata": None}, "missing entry 'metadata'; the file is damaged"),
    ({"metadata": [1, 2]}, "its metadata is not a mapping; the file is damaged"),
])
def test_a_damaged_checkpoint_is_one_line(tmp_path: Path, spec: ModelSpec, changes, message) -> None:
    path = _write_payload(tmp_path / "c.pt", spec, spec.build(), **changes)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"checkpoint {path}: ") and message in str(info.value)


def test_a_folder_given_as_the_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert str(info.value) == f"checkpoint {tmp_path}: is a folder; give the checkpoint file (e.g. {tmp_path}/model.pt)"


def test_a_pickle_the_safe_loader_cannot_parse_is_not_sent_to_allow_pickle(tmp_path: Path) -> None:
    """A well-formed PyTorch zip whose pickle uses an opcode the weights-only unpickler lacks (protocol 0's ``I``)
    names no Python class: it is damaged, not a file that needs ``--allow-pickle``."""
    buffer = io.BytesIO()
    torch.save({"a": 1}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(tmp_path / "op.pt", "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            target.writestr(name, b"(I1\nI2\nl." if name.endswith("data.pkl") else source.read(name))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "op.pt")
    assert str(info.value) == (f"checkpoint {tmp_path / 'op.pt'}: corrupt or not a checkpoint (not a readable PyTorch "
                               "file); re-create or re-download it")


def test_a_wrapped_plain_state_dict_points_to_bring_your_own(tmp_path: Path, spec: ModelSpec) -> None:
    torch.save({"state_dict": spec.build().state_dict(), "epoch": 3}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="not a kwta-robust checkpoint but a plain state_dict"):
        load_checkpoint(tmp_path / "w.pt")


def test_a_spec_too_large_is_refused_before_its_weights_are_compared(tmp_path: Path, spec: ModelSpec) -> None:
    huge = ModelSpec(spec.arch, {**spec.kwargs, "hidden": 300_000_000})
    path = _write_payload(tmp_path / "h.pt", huge, spec.build())
    with pytest.raises(CheckpointError, match=r"cannot rebuild the model: model_spec: .* parameters"):
        load_checkpoint(path)


def test_loaded_checkpoints_are_in_eval_mode_with_the_files_digest(tmp_path: Path, spec: ModelSpec) -> None:
    model = spec.build().train()
    path = save_checkpoint(tmp_path / "m.pt", model, spec, {})
    loaded = load_checkpoint(path)
    assert not loaded.model.training and loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.save(model.train(), tmp_path / "whole.pt")  # a pickled module saved in training mode
    whole = load_checkpoint(tmp_path / "whole.pt", allow_pickle=True)
    assert whole.metadata == {"pickled_module": type(model).__name__}
    assert not any(m.training for m in whole.model.modules())


def test_a_float16_checkpoint_adds_its_conversion_to_the_callers_notes(tmp_path: Path, spec: ModelSpec) -> None:
    model = spec.build()
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    floats = sum(1 for v in model.state_dict().values() if v.is_floating_point())
    path = _write_payload(tmp_path / "h.pt", spec, model, state_dict=half,
                          metadata={"weights_normalization": ["an earlier note"]})
    assert load_checkpoint(path).metadata["weights_normalization"] == [
        "an earlier note", f"converted {floats} tensors from float16 to the model's float32"]


@pytest.fixture()
def nets_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "mut_nets.py").write_text(textwrap.dedent("""
        import sys
        from torch import nn

        def small(hidden=4):
            return nn.Sequential(nn.Flatten(), nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 3))

        class Zoo:
            @staticmethod
            def small():
                return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))

        def exits():
            sys.exit(2)

        three = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "mut_nets"


def test_factory_names_are_validated_and_dotted_attributes_followed(nets_module: str) -> None:
    for bad in (f"{nets_module}:", ":small"):
        with pytest.raises(CheckpointError, match=r"write it as package\.module:function$"):
            load_byo_model(bad)
    assert load_byo_model(f"{nets_module}:Zoo.small").model[1].out_features == 4
    with pytest.raises(CheckpointError) as info:  # not "bad arguments (... 'int' object is not callable)"
        load_byo_model(f"{nets_module}:three")
    assert str(info.value) == "model factory 'mut_nets:three': 'three' is not callable"
    with pytest.raises(CheckpointError, match=r"^model factory 'mut_nets:exits' raised SystemExit: 2; fix the factory"):
        load_byo_model(f"{nets_module}:exits")


def test_the_import_hint_for_a_path_and_a_package_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nets.py").write_text("")
    with pytest.raises(CheckpointError) as info:
        load_byo_model("sub/nets:make")
    assert str(info.value).endswith("write the module's import name, not a file: "
                                    "PYTHONPATH=sub:$PYTHONPATH kwta-robust ... --model-factory nets:make")
    (tmp_path / "pkgdir_xyz" / "inner").mkdir(parents=True)  # a package folder, not a .py file
    with pytest.raises(CheckpointError) as info:
        load_byo_model("pkgdir_xyz.inner:make")
    assert str(info.value).endswith("it is in the working folder, which the kwta-robust command does not import "
                                    "from: run PYTHONPATH=.:$PYTHONPATH kwta-robust ... (or install its package)")


def test_byo_metadata_source_and_digest(tmp_path: Path, nets_module: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = load_byo_model(f"{nets_module}:small", tmp_path / "w.pt", factory_kwargs={"hidden": 5})
    assert loaded.sha256 == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    assert loaded.source == f"mut_nets:small + {tmp_path / 'w.pt'}"
    assert loaded.metadata["factory_kwargs"] == {"hidden": 5} and loaded.metadata["weights"] == str(tmp_path / "w.pt")
    assert loaded.metadata["weights_normalization"] == []
    bare = load_byo_model(f"{nets_module}:small")
    assert bare.source == "mut_nets:small" and bare.metadata["weights"] is None and bare.sha256 is None
    # a kwta-robust checkpoint's state_dict is taken as it is: no "unwrapped" note
    torch.save({"format": FORMAT, "format_version": 1, "model_spec": {"arch": "x", "kwargs": {}},
                "state_dict": net.state_dict(), "metadata": {}}, tmp_path / "c.pt")
    again = load_byo_model(f"{nets_module}:small", tmp_path / "c.pt", factory_kwargs={"hidden": 5})
    assert again.metadata["weights_normalization"] == []
    assert torch.equal(again.model[1].weight, net[1].weight)


def test_an_extra_key_in_the_file_is_named(tmp_path: Path, nets_module: str) -> None:
    state = {**nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).state_dict(),
             "9.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"state_dict has '9\.weight' that the model lacks"):
        load_byo_model(f"{nets_module}:small", tmp_path / "w.pt")


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_a_top_level_parametrization_is_named_with_its_first_key() -> None:
    from kwta_robust.checkpoint import _load_state  # noqa: PLC0415 - the strict check itself

    model = nn.Linear(2, 2)
    parametrize.register_parametrization(model, "weight", _Scale())
    keys = list(model.state_dict())
    assert keys == ["bias", "parametrizations.weight.original", "parametrizations.weight.0.factor"]
    with pytest.raises(CheckpointError) as info:
        _load_state(model, nn.Linear(2, 2).state_dict(), "src")
    assert str(info.value).startswith("src: the model's 'weight' is parametrized (torch.nn.utils.parametrize, key "
                                      "'parametrizations.weight.original') and the other side's is not")
