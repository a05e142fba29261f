"""A model of one's own is named from what its forward runs (session 53).

A GELU / SiLU / Tanh model that also applies one ``F.relu`` (a stem) was recorded as ``relu (detected)`` and placed
on a matrix's ReLU twin row; a tanh model holding an ``nn.ReLU`` it never calls was ``relu``. The layer probe now
counts the other activations in the same forward (``other_activations``, :mod:`kwta_robust.relu_calls`) and
:func:`kwta_robust.fresh_record.probed_model` names the model from everything that ran: ``relu (detected)`` only
where ReLUs alone ran, ``tanh (detected)``, ``mixed (detected: gelu 2, relu 1)``. A record written before keeps its
name, and ``diff`` against one says only the description changed."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wild_kwta_models import seeded as _seeded
from kwta_robust.cli import main
from kwta_robust.detect import detect_layers
from kwta_robust.errors import ConfigError
from kwta_robust.formats import render_stdout
from kwta_robust.fresh_record import probed_model
from kwta_robust.matrix import build_matrices
from kwta_robust.layers import KWTA
from kwta_robust.models import describe_model
from kwta_robust.report import activation_text
from kwta_robust.results import load_record
from eval_helpers import evaluate_factories, make_record


class Net(nn.Module):
    """``[N, 1, 8, 8] -> [N, 10]`` (digits): a stem with ``stem_act``, two hidden layers with ``act`` (a module or a
    function), a head; ``idle`` holds an ``nn.ReLU`` never called."""

    def __init__(self, stem_act, act, idle: bool = False) -> None:
        super().__init__()
        self.stem, self.hidden, self.head = nn.Linear(64, 16), nn.ModuleList(nn.Linear(16, 16) for _ in range(2)), \
            nn.Linear(16, 10)
        self.stem_act, self.act = stem_act, act
        if idle:
            self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem_act(self.stem(x.flatten(1)))
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.head(h)



def gelu_relu_stem() -> nn.Module:
    """GELU modules in the hidden layers, one ``F.relu`` in the stem."""
    return _seeded(lambda: Net(F.relu, nn.GELU()))


def silu_only() -> nn.Module:
    """``F.silu`` everywhere, no ReLU."""
    return _seeded(lambda: Net(F.silu, F.silu))


def tanh_idle_relu() -> nn.Module:
    """``nn.Tanh`` everywhere and an ``nn.ReLU`` held, never called."""
    return _seeded(lambda: Net(nn.Tanh(), torch.tanh, idle=True))


def linear_idle_relu() -> nn.Module:
    """No activation runs; an ``nn.ReLU`` held, never called."""
    return _seeded(lambda: Net(nn.Identity(), nn.Identity(), idle=True))


NAMES = ("gelu_relu_stem", "silu_only", "tanh_idle_relu", "linear_idle_relu")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return evaluate_factories(tmp_path_factory.mktemp("act53"), "test_act53", NAMES, steps=1)


def test_the_other_activations_are_counted_once_each_in_every_form() -> None:
    from kwta_robust.relu_calls import activation_calls

    class Calls(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mods = nn.ModuleList([nn.GELU(), nn.SiLU(), nn.Tanh(), nn.ELU(), nn.LeakyReLU(), nn.Sigmoid(),
                                       nn.Hardswish(), nn.Softplus(), nn.Mish(), nn.ReLU()])

        def forward(self, x: Tensor) -> Tensor:
            y = F.gelu(x) + F.silu(x) + torch.tanh(x) + x.tanh() + F.elu(x) + F.leaky_relu(x) + torch.sigmoid(x)
            y = y + x.sigmoid() + F.hardswish(x) + F.softplus(x) + F.mish(x) + F.relu(x) + torch.tanh(x[0])
            return y + sum(m(x) for m in self.mods)  # x[0]: not the batch, not counted

    relus, others = activation_calls(Calls(), torch.randn(4, 3))
    assert relus == 2
    assert others == {"elu": 2, "gelu": 2, "hardswish": 2, "leaky_relu": 2, "mish": 2, "sigmoid": 3, "silu": 2,
                      "softplus": 2, "tanh": 3}  # only the kinds that ran, a module's F call counted once


def test_a_gelu_model_with_a_relu_stem_is_mixed_not_relu_detected(records) -> None:
    record = load_record(records["gelu_relu_stem"])
    model = record.model
    assert model["activation"] == "mixed (detected: gelu 2, relu 1)" and model["activation_layers"] == "none"
    assert record.detection["relu_calls"] == 1 and record.detection["other_activations"] == {"gelu": 2}
    assert model["other_activations"] == {"gelu": 2} and model["relu_calls"] == 1
    assert model["training"]["activation"] == model["activation"]  # the loader's copy named alike
    assert re.search(r"\| gelu_relu_stem +\| mixed \(detected: gelu 2, relu 1\) +\|", render_stdout([record], "md"))
    with pytest.raises(ConfigError, match=r"activation 'mixed \(detected: gelu 2, relu 1\)'.*a matrix row needs"):
        build_matrices([record])  # was placed on the ReLU twin's row


def test_one_other_kind_alone_is_named_by_it(records) -> None:
    silu = load_record(records["silu_only"]).model
    assert silu["activation"] == "silu (detected)" and silu["other_activations"] == {"silu": 3}  # was "none"
    tanh = load_record(records["tanh_idle_relu"])
    assert tanh.model["activation"] == "tanh (detected)" and tanh.model["activation_layers"] == "relu"  # was "relu"
    assert tanh.model["relu_calls"] == 0 and tanh.model["num_relu_layers"] == 1
    assert re.search(r"\| tanh_idle_relu +\| tanh \(detected\) +\|", render_stdout([tanh], "md"))
    with pytest.raises(ConfigError, match="tanh"):
        build_matrices([tanh])  # an nn.ReLU held and never called: not the ReLU twin


def test_an_idle_relu_and_no_activation_is_not_called_relu(records) -> None:
    record = load_record(records["linear_idle_relu"])
    assert record.model["activation"] == "none (detected)" and record.model["activation_layers"] == "relu"
    assert record.detection["other_activations"] == {} and record.model["other_activations"] == {}
    assert "| relu " not in render_stdout([record], "md")
    with pytest.raises(ConfigError, match="none"):
        build_matrices([record])


def _as_written_before(path: Path) -> dict:
    """The record at ``path`` as the version before this session's activation counts wrote it: no
    ``other_activations`` (model, its training copy, detection), the model named ``relu (detected)``."""
    old = json.loads(path.read_text())
    for section in (old["model"], old["model"]["training"]):
        section.pop("other_activations", None)
        section["activation"] = "relu (detected)"  # as the version before named it
    old["detection"].pop("other_activations", None)
    return old


def test_diff_against_a_record_written_before_is_a_description_change_and_the_old_one_reads_as_before(
        records, tmp_path: Path, capsys) -> None:
    old = _as_written_before(records["gelu_relu_stem"])
    (tmp_path / "old.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "old.json"), str(records["gelu_relu_stem"])]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("  model.activation: 'relu (detected)' != 'mixed (detected: gelu 2, relu 1)'"), lines
    assert "a description change, not a result change" in lines[1] and "activations that ran" in lines[1]
    assert lines[2].startswith("the results are the same: only what a newer version records about the model")
    before = load_record(tmp_path / "old.json")  # no other_activations: named and printed as it was
    assert probed_model(before)["activation"] == "relu (detected)"
    assert re.search(r"\| gelu_relu_stem +\| relu \(detected\) +\|", render_stdout([before], "md"))


class KwtaIdleRelu(nn.Module):
    """The package's kWTA layer and an ``nn.ReLU`` held, never called (the describer's ``mixed``); ``act`` after."""

    def __init__(self, act=None) -> None:
        super().__init__()
        self.fc, self.kwta, self.relu, self.head, self.act = nn.Linear(16, 16), KWTA(0.25), nn.ReLU(), \
            nn.Linear(16, 10), act

    def forward(self, x: Tensor) -> Tensor:
        h = self.kwta(self.fc(x))
        return self.head(self.act(h) if self.act is not None else h)


@pytest.mark.parametrize("act, text", [(None, "kwta 0.25 dense"), (F.gelu, "kwta 0.25 dense + gelu (detected)")])
def test_a_describers_mixed_whose_relu_never_ran_is_printed_as_what_ran(act, text: str) -> None:
    model = _seeded(lambda: KwtaIdleRelu(act))
    record = make_record(detection=detect_layers(model, torch.randn(8, 16)).to_dict())
    record = dataclasses.replace(record, model={**record.model, **describe_model(model)})
    record = dataclasses.replace(record, model=probed_model(record))
    assert record.model["activation"] == "mixed" and record.model["relu_calls"] == 0  # the describer's, kept
    assert activation_text(record) == text  # was "mixed": kWTA and a ReLU that never ran
    older = {k: v for k, v in record.model.items() if k != "other_activations"}  # written before: as it was
    assert activation_text(dataclasses.replace(record, model=older)) == "mixed"


def test_a_record_written_before_resumed_counts_the_other_activations_and_is_named_from_them(
        records, tmp_path: Path) -> None:
    done = json.loads(records["gelu_relu_stem"].read_text())
    old = _as_written_before(records["gelu_relu_stem"])
    old.update(status="partial", results=old["results"][:1], worst_case=[])  # one unit kept
    path = tmp_path / "resumed.json"
    path.write_text(json.dumps(old))
    assert main(["evaluate", "--model-factory", "test_act53:gelu_relu_stem", "--config", str(records["config"]),
                 "--out", str(path), "--no-progress"]) == 0
    resumed = load_record(path)
    assert resumed.status == "complete" and resumed.provenance.get("resumed_at")
    assert resumed.model["activation"] == "mixed (detected: gelu 2, relu 1)"
    assert resumed.detection["other_activations"] == {"gelu": 2} and resumed.detection["relu_calls"] == 1
    assert [r.robust.correct for r in resumed.results] == [r["robust"]["correct"] for r in done["results"]]
