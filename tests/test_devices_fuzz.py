"""Fuzzing round on devices and threads (:mod:`kwta_robust.runtime`, ``device`` of a config, ``threads=`` of the
Python API): a CPU device with an index (``cpu:0``, ``cpu:1``) is the one CPU, never refused with advice that cannot
help; a default device the caller set (``torch.set_default_device('meta')``) does not reach the harness's own
tensors and is the caller's again afterwards; the record states the thread count that ran and the caller's is put
back."""

from __future__ import annotations

import re

import pytest
import torch

from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.config import resolve_device
from kwta_robust.errors import ConfigError
from kwta_robust.training.config import TrainConfig
from test_api_fuzz import FAST, data4
from test_python_api import make_net


def numbers(record) -> list[dict]:
    """The record's results but their wall times."""
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in record.to_dict()["results"]]


@pytest.mark.parametrize("spec", ["cpu:0", "cpu:1"])
def test_a_cpu_with_an_index_is_the_cpu(spec):
    """``device: cpu:0`` with a model on the CPU was refused: 'the config says cpu:0 but model 'model' is on cpu;
    move the model (model.to('cpu:0'))' — advice that changes nothing, a CPU tensor reports plain ``cpu``."""
    assert resolve_device(spec) == torch.device("cpu")
    assert TrainConfig.from_dict({"device": spec}).resolved_device() == torch.device("cpu")
    x, y = data4()
    record = evaluate_model(make_net().eval(), dict(FAST, device=spec), x, y)
    reference = evaluate_model(make_net().eval(), dict(FAST, device="cpu"), x, y)
    assert record.provenance["device"] == "cpu"
    assert numbers(record) == numbers(reference)


@pytest.mark.parametrize("spec, words", [
    ("cuda:7", "device: 'cuda:7' requested but CUDA is not available; set device: cpu or auto in the config"),
    ("mps", "device: 'mps' is not supported (the harness runs and is tested on CPU and CUDA)"),
    ("CPU", "device: cannot parse 'CPU'; use auto, cpu, cuda or cuda:N"),
])
def test_a_device_this_machine_lacks_is_one_line(spec, words):
    if torch.cuda.is_available() and spec.startswith("cuda"):
        words = "device: 'cuda:7' does not exist"
    x, y = data4()
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        evaluate_model(make_net().eval(), dict(FAST, device=spec), x, y)
    assert "\n" not in str(caught.value)


@pytest.fixture
def meta_default_device():
    """The caller's default device is ``meta`` for the test (put back to torch's own afterwards)."""
    torch.set_default_device("meta")
    yield
    torch.set_default_device(None)


def test_a_default_device_the_caller_set_stays_out_of_the_harness(meta_default_device):
    """``torch.set_default_device('meta')`` before the call: NotImplementedError 'Cannot copy out of meta tensor'
    from the sample selection (an index tensor made on the caller's default device)."""
    with torch.device("cpu"):
        model, (x, y) = make_net().eval(), data4()
        other = make_net().eval()
    record = evaluate_model(model, FAST, x, y)
    records = compare_models_in_memory({"a": model, "b": other}, FAST, x, y, transfer=False)
    assert torch.get_default_device() == torch.device("meta")
    assert torch.empty(1).device.type == "meta"
    torch.set_default_device(None)
    reference = evaluate_model(make_net().eval(), FAST, *data4())
    assert record.provenance["device"] == "cpu"
    assert numbers(record) == numbers(reference)
    assert numbers(records[0])[0]["flags"] == numbers(reference)[0]["flags"]


@pytest.mark.parametrize("threads, ran", [(1, 1), (2, 2), (0, 3), (None, 3)])
def test_the_record_states_the_threads_that_ran_and_the_callers_come_back(threads, ran):
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        x, y = data4()
        record = evaluate_model(make_net().eval(), FAST, x, y, threads=threads)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    assert record.provenance["torch_threads"] == ran
    assert after == 3
