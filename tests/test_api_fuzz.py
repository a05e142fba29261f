"""Fuzzing round on the Python API (:mod:`kwta_robust.api`): odd arguments a notebook passes are one
:class:`~kwta_robust.errors.KwtaRobustError` line naming the argument and the fix, never a raw torch or pathlib error
nor a silent default; a resumed ``out_path`` never mixes results of other data; a refused call leaves the caller's
model, tensors, RNGs, grad mode and threads as they were."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from kwta_robust.api import compare_models_in_memory, evaluate_model, in_memory_data
from kwta_robust.errors import ConfigError, DataError, KwtaRobustError
from kwta_robust.paired import paired_table
from kwta_robust.results import load_record
from test_evaluate import register  # noqa: F401  (a fixture: registers a test attack for one test)
from test_python_api import caller_state, make_net, toy_data

FAST = {"n_examples": 4, "batch_size": 4, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "fgsm"}], "noise": []}


def data4() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = toy_data()
    return x[:4].clone(), y[:4].clone()


def refused(error: type, words: str, call) -> str:
    """The one line ``call()`` raised (``error``, containing ``words``)."""
    with pytest.raises(error, match=re.escape(words)) as caught:
        call()
    assert isinstance(caught.value, KwtaRobustError) and "\n" not in str(caught.value)
    return str(caught.value)


def test_tensors_on_the_meta_device_are_one_line():
    """``x.to('meta')`` (shapes only) stopped in the data check with NotImplementedError 'Cannot copy out of meta'."""
    x, y = data4()
    refused(DataError, "data 'in-memory': x is on the meta device (a shape without values); give the tensor that "
            "holds the images", lambda: evaluate_model(make_net().eval(), FAST, x.to("meta"), y))
    refused(DataError, "data 'in-memory': y is on the meta device", lambda: evaluate_model(make_net().eval(), FAST,
                                                                                          x.numpy(), y.to("meta")))


def test_images_without_pixels_are_one_line():
    """``x`` of shape [4, 1, 0, 8] stopped with torch's 'min(): Expected reduction dim' RuntimeError."""
    x, y = data4()
    refused(DataError, "data 'in-memory': x of shape (4, 1, 0, 8) holds no pixels (an axis of size 0); give images "
            "[N, C, H, W] with C, H and W >= 1",
            lambda: evaluate_model(make_net().eval(), FAST, torch.rand(4, 1, 0, 8), y))


def test_a_model_on_the_meta_device_is_refused_before_any_work():
    """A model built on the meta device (no weights loaded) stopped deep in a probe with 'Tensor.item() cannot be
    called on meta tensors'."""
    x, y = data4()
    words = "model 'ghost': its parameters are on the meta device (shapes without values); load its weights first"
    refused(ConfigError, words, lambda: evaluate_model(make_net().to("meta"), FAST, x, y, label="ghost"))
    refused(ConfigError, words, lambda: compare_models_in_memory({"real": make_net().eval(),
                                                                  "ghost": make_net().to("meta")}, FAST, x, y))


@pytest.mark.parametrize("out_path, words", [
    (3, "out_path: expected a file path (str or pathlib.Path), got int"),
    (b"rec.json", "out_path: expected a file path (str or pathlib.Path), got bytes"),
    ("", "out_path: empty path; give a file name or leave the option out"),
])
def test_out_path_that_is_no_path_is_one_line(out_path, words, tmp_path, monkeypatch):
    """An int or bytes ``out_path`` raised pathlib's TypeError after the probes; ``""`` silently wrote no file."""
    monkeypatch.chdir(tmp_path)
    x, y = data4()
    refused(ConfigError, words, lambda: evaluate_model(make_net().eval(), FAST, x, y, out_path=out_path))
    assert list(tmp_path.iterdir()) == []


def test_out_dir_that_is_a_file_or_no_path_is_one_line(tmp_path):
    """``out_dir`` naming a file raised FileExistsError from mkdir; an int raised pathlib's TypeError."""
    x, y = data4()
    models = {"a": make_net().eval(), "b": make_net().eval()}
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    refused(ConfigError, f"out_dir: {taken} is a file, not a folder; give a folder path",
            lambda: compare_models_in_memory(models, FAST, x, y, out_dir=taken))
    refused(ConfigError, "out_dir: expected a folder path (str or pathlib.Path), got int",
            lambda: compare_models_in_memory(models, FAST, x, y, out_dir=5))
    assert taken.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("flag, value", [("resume", "no"), ("progress", "yes"), ("resume", None), ("progress", 1)])
def test_evaluate_flags_must_be_true_or_false(flag, value):
    """``resume='no'`` was read as true (it resumed); now every flag is a bool or one line."""
    x, y = data4()
    refused(ConfigError, f"{flag}: expected True or False, got {value!r}",
            lambda: evaluate_model(make_net().eval(), FAST, x, y, **{flag: value}))


def test_transfer_no_is_refused_not_read_as_true():
    """``transfer='no'`` ran every transfer attack (a non-empty string is true): the opposite of what was asked."""
    x, y = data4()
    refused(ConfigError, "transfer: expected True or False, got 'no'", lambda: compare_models_in_memory(
        {"a": make_net().eval(), "b": make_net().eval()}, FAST, x, y, transfer="no"))


@pytest.mark.parametrize("models, words", [
    ({}, "models: expected a dict of label -> nn.Module, got an empty dict"),
    ([nn.Identity()], "models: expected a dict of label -> nn.Module, got list"),
    ({"a": 3}, "model 'a': expected a torch.nn.Module, got int"),
])
def test_in_memory_data_checks_its_models(models, words):
    """Empty models raised StopIteration, a list AttributeError ('items'), a non-module AttributeError."""
    x, y = data4()
    refused(ConfigError, words, lambda: in_memory_data(x, y, models))


def test_in_memory_data_name_must_be_a_name():
    x, y = data4()
    refused(ConfigError, "data_name: expected a non-empty name for x and y, got 3",
            lambda: in_memory_data(x, y, {"a": make_net().eval()}, name=3))


@pytest.mark.parametrize("kwargs, words", [
    ({"x": None}, "x: give both x and y, or neither (the config's data set)"),
    ({"data_name": None}, "data_name: expected a non-empty name for x and y, got None"),
    ({"data_name": ""}, "data_name: expected a non-empty name for x and y, got ''"),
])
def test_a_dict_config_without_dataset_names_the_argument_at_fault(kwargs, words):
    """With a dict config that leaves out ``dataset`` (allowed with x and y), a missing ``x`` or an odd ``data_name``
    was reported as ``config: missing key 'dataset'`` (or ``dataset: ... got ''``): the wrong field."""
    x, y = data4()
    config = {k: v for k, v in FAST.items() if k != "dataset"}
    args = {"x": x, "y": y, "data_name": "in-memory", **kwargs}
    refused(ConfigError, words, lambda: evaluate_model(make_net().eval(), config, args["x"], args["y"],
                                                       data_name=args["data_name"]))


def test_a_record_of_other_images_at_out_path_is_not_resumed(tmp_path):
    """Same model, one pixel of ``x`` changed, one ``out_path``: the clean predictions agree, so the old record (its
    attacks run on the old images) was resumed and returned as this call's result; in-memory data had no digest."""
    model, (x, y) = make_net().eval(), data4()
    out = tmp_path / "rec.json"
    first = evaluate_model(model, FAST, x, y, out_path=out)
    on_disk = out.read_text()
    changed = x.clone()
    changed[0, 0, 0, 0] = 1.0 - changed[0, 0, 0, 0]
    refused(ConfigError, f"out_path: {out} holds a record of other data (x or y changed); use a new out_path or "
            "resume=False", lambda: evaluate_model(model, FAST, changed, y, out_path=out))
    assert out.read_text() == on_disk  # the earlier record is kept as it was
    again = evaluate_model(model, FAST, x.clone(), y.clone(), out_path=out)  # the same values resume
    assert again.to_dict()["clean"] == first.to_dict()["clean"]
    assert load_record(out).provenance.get("resumed_at")
    relabelled = (y + 1) % 10
    fresh = evaluate_model(model, FAST, x, relabelled, out_path=out, resume=False)
    assert fresh.clean.correct == int((model(x).argmax(1) == relabelled).sum())
    assert json.loads(out.read_text())["dataset"]["sha256"] != json.loads(on_disk)["dataset"]["sha256"]


def test_an_interrupted_call_resumes_on_the_same_values_only(tmp_path, register):  # noqa: F811
    """The partial record an interrupted call leaves holds the data's digest: the same values resume it (the
    finished unit is not recomputed), other values are refused and the partial record is kept."""
    calls: list[float] = []
    stop = {"at": 0.2}

    class Stopping:
        """Leaves every input as it is (an adversarial search that finds nothing); interrupted at one eps."""

        name = "stopping"

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

        def __call__(self, model, x, y, threat):
            calls.append(threat.eps)
            if threat.eps == stop["at"]:
                raise KeyboardInterrupt
            return x.clone()

    register("test-stopping", Stopping)
    config = {**FAST, "threats": [{"norm": "linf", "epsilons": [0.1, 0.2]}], "attacks": [{"attack": "test-stopping"}]}
    model, (x, _) = make_net().eval(), data4()
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample clean-correct: every unit attacks all four
    out = tmp_path / "rec.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model, config, x, y, out_path=out)
    partial = load_record(out)
    assert partial.status == "partial" and [r.eps for r in partial.results] == [0.1]
    changed = x.clone()
    changed[1, 0, 2, 2] = 0.5 * changed[1, 0, 2, 2]
    refused(ConfigError, "holds a record of other data (x or y changed)",
            lambda: evaluate_model(model, config, changed, y, out_path=out))
    assert load_record(out).to_dict() == partial.to_dict()
    stop["at"], calls[:] = None, []
    done = evaluate_model(model, config, x.clone(), y.clone(), out_path=out)
    assert done.status == "complete" and calls == [0.2] and len(done.provenance["resumed_at"]) == 1
    assert done.dataset["sha256"] == partial.dataset["sha256"]


def test_changed_images_at_one_out_path_are_refused_in_compare(tmp_path):
    x, y = data4()
    models = {"a": make_net().eval(), "b": make_net().eval()}
    compare_models_in_memory(models, FAST, x, y, out_dir=tmp_path)
    x2 = x.clone()
    x2[0, 0, 0, 0] = 1.0 - x2[0, 0, 0, 0]
    refused(ConfigError, "holds a record of other data (x or y changed); use a new out_dir or resume=False",
            lambda: compare_models_in_memory(models, FAST, x2, y, out_dir=tmp_path))


def test_a_refused_call_leaves_the_caller_state_alone():
    model, (x, y) = make_net().train(), data4()
    x.requires_grad_(True)
    before, x_before = caller_state(model), x.detach().clone()
    torch.set_grad_enabled(False)
    try:
        refused(ConfigError, "out_path: expected a file path", lambda: evaluate_model(model, FAST, x, y, out_path=3))
        refused(DataError, "holds no pixels", lambda: evaluate_model(model, FAST, torch.rand(4, 1, 8, 0), y))
        grad_mode = torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)
    assert grad_mode is False and caller_state(model) == {**before, "grad": True}
    assert torch.equal(x.detach(), x_before) and x.requires_grad and x.grad is None


def test_two_calls_on_other_arrays_under_one_name_are_not_paired() -> None:
    """Two ``evaluate_model`` calls on different ``x`` (both named "in-memory", same indices) were paired as the same
    samples; their ``dataset.sha256`` now tells them apart, and the same arrays still pair."""
    x, y = data4()
    net = make_net().eval()
    first = evaluate_model(net, FAST, x, y, label="a", threads=1)
    same = evaluate_model(net, FAST, x.clone(), y.clone(), label="b", threads=1)
    other = evaluate_model(net, FAST, x.flip(0).contiguous(), y.flip(0).contiguous(), label="c", threads=1)
    assert first.dataset["indices"] == other.dataset["indices"] and first.dataset["name"] == other.dataset["name"]
    assert paired_table([first, same]) is not None
    assert paired_table([first, other]) is None
