"""A ReLU model of one's own whose activations are ``F.relu`` calls in ``forward`` (Xiao et al.'s ReLU twin, a
kuangliu-style ResNet) was recorded and printed as activation ``none`` — "no activation" to a paper's reader. The
layer probe now counts the ReLUs one forward applies (``relu_calls``, :mod:`kwta_robust.relu_calls`) and such a model
is ``relu (detected)`` in the record, every table and the matrix (its ReLU twin row); ``num_relu_layers`` still
counts the ``nn.ReLU`` modules held, called or not, beside ``relu_calls``, what ran (the kWTA twin keeps an unused
``nn.ReLU`` per block). A model with neither ReLUs nor gates is named from the activations it ran (session 53:
``tanh (detected)``, :mod:`tests.test_act53`); ``diff`` against a record written before says only the description
changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval_helpers import evaluate_factories
from wild_kwta_models import seeded as _seeded
from kwta_robust.cli import main
from kwta_robust.formats import render_stdout
from kwta_robust.matrix import build_matrices
from kwta_robust.relu_calls import relu_calls
from kwta_robust.results import load_record


class Block(nn.Module):
    """A residual block as kuangliu's ``BasicBlock`` writes it: ``F.relu`` calls, or (``gate``) Xiao's kWTA twin,
    whose ``nn.ReLU`` is held always and called only with ``use_relu``."""

    def __init__(self, gate: nn.Module | None = None, use_relu: bool = False) -> None:
        super().__init__()
        self.fc, self.gate, self.use_relu = nn.Linear(16, 16), gate, use_relu
        if gate is not None:
            self.relu = nn.ReLU()  # Xiao's kWTA block always builds it

    def forward(self, h: Tensor) -> Tensor:
        out = self.fc(h)
        if self.gate is None:
            return F.relu(out + h)
        if self.use_relu:
            out = self.relu(out)
        return self.gate(out) + h


class TopK(nn.Module):
    """Keeps each sample's 4 largest of 16 features (Xiao's ``Sparsify1D`` in spirit)."""

    def forward(self, h: Tensor) -> Tensor:
        return h * (h >= h.topk(4, dim=1).values[:, -1:])


class Net(nn.Module):
    """``[N, 1, 8, 8] -> [N, 10]`` (digits): a stem, two blocks, a head; ``act`` the stem's activation."""

    def __init__(self, blocks: list[nn.Module], act=F.relu) -> None:
        super().__init__()
        self.stem, self.blocks, self.head, self.act = nn.Linear(64, 16), nn.Sequential(*blocks), nn.Linear(16, 10), act

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.act(self.stem(x.flatten(1)))))



def relu_twin() -> nn.Module:
    """Activations only as ``F.relu`` calls: 3 per forward (stem and two blocks), no ``nn.ReLU`` module."""
    return _seeded(lambda: Net([Block(), Block()]))


def kwta_twin() -> nn.Module:
    """Xiao's kWTA twin: top-k gates, an ``nn.ReLU`` held in every block and none called (the stem's is ``F.relu``)."""
    return _seeded(lambda: Net([Block(TopK()), Block(TopK())]))


def tanh_net() -> nn.Module:
    """No ReLU and no gate anywhere."""
    return _seeded(lambda: Net([nn.Linear(16, 16)], act=torch.tanh))


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return evaluate_factories(tmp_path_factory.mktemp("relu52"), "test_relu52_detected_relu",
                              ("relu_twin", "kwta_twin", "tanh_net"), steps=2,
                              extra={"kwta_twin": ["--grid-cell", "kwta_ratio=0.25,weight_sparsity=0"]})  # its row


def test_a_relu_twin_written_with_f_relu_is_recorded_and_printed_as_relu_detected(records) -> None:
    record = load_record(records["relu_twin"])
    model = record.model
    assert model["activation"] == "relu (detected)" and model["activation_layers"] == "none"  # said "none"
    assert model["training"]["activation"] == "relu (detected)"  # the loader's copy of the describer's reading
    assert model["relu_calls"] == 3 and model["num_relu_layers"] == 0 and record.detection["relu_calls"] == 3
    md, latex = render_stdout([record], "md"), render_stdout([record], "latex")
    assert re.search(r"\| relu_twin +\| relu \(detected\) +\|", md)
    assert r"relu\_twin & relu (detected) & 4 &" in latex
    assert "| none " not in md and " & none & " not in latex


def test_relu_calls_count_what_runs_and_a_tanh_model_is_named_tanh_detected(records) -> None:
    kwta = load_record(records["kwta_twin"]).model
    assert kwta["activation"] == "top-k (detected)" and kwta["activation_layers"] == "relu"
    assert kwta["num_relu_layers"] == 2 and kwta["relu_calls"] == 1  # two nn.ReLU held, only the stem's F.relu ran
    tanh = load_record(records["tanh_net"])
    assert tanh.model["relu_calls"] == 0  # counted: none ran (session 53)
    assert tanh.model["activation"] == "tanh (detected)" and tanh.model["activation_layers"] == "none"  # session 53
    assert tanh.detection["relu_calls"] == 0 and tanh.detection["other_activations"] == {"tanh": 1}
    assert re.search(r"\| tanh_net +\| tanh \(detected\) +\|", render_stdout([tanh], "md"))


def test_what_counts_as_a_relu_call() -> None:
    class Calls(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module, self.gate = nn.ReLU(inplace=True), nn.ReLU()

        def forward(self, x: Tensor) -> Tensor:
            y = torch.relu(x) + x.relu() + x.clamp(min=0) + torch.clamp_min(x, 0) + F.relu(x.clone(), inplace=True)
            y = y + self.module(x.clone()) + self.gate(x)  # counted: 6, the gate's own call left out
            z = x.clamp(min=0, max=6) + F.relu6(x) + F.leaky_relu(x) + x.clamp(min=-1) + torch.relu(x[0])
            return y + z  # none counted: bounded, leaky, another threshold, not on the batch

    assert relu_calls(Calls(), torch.randn(4, 3), accounted=["gate"]) == 6
    assert relu_calls(Calls(), torch.randn(4, 3)) == 7


def test_diff_against_a_record_written_before_is_a_description_change(records, tmp_path: Path, capsys) -> None:
    new = json.loads(records["relu_twin"].read_text())
    old = json.loads(json.dumps(new))
    for section in (old["model"], old["model"]["training"]):
        section.pop("activation_layers")
        section.pop("relu_calls", None)
        section["activation"] = "none"  # as the describer's reading was recorded
    del old["detection"]["relu_calls"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "old.json"), str(records["relu_twin"])]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("  model.activation: 'none' != 'relu (detected)' and 5 more field(s)")
    assert "a description change, not a result change" in lines[1] and "names the ReLUs the layer probe" in lines[1]
    assert lines[2].startswith("the results are the same: only what a newer version records about the model")


def test_the_matrix_takes_the_relu_detected_record_for_the_relu_twin_row(records, tmp_path: Path, capsys) -> None:
    relu = load_record(records["relu_twin"])
    rows = {m.metric: sorted({r for r, _ in m.cells}) for m in build_matrices([relu])}
    assert rows["clean"] == [1.0]  # was refused: activation 'none' states no row
    capsys.readouterr()
    assert main(["table", "--matrix", str(records["relu_twin"]), str(records["kwta_twin"])]) == 0
    text = capsys.readouterr().out
    assert re.search(r"\| 1\.0 \(ReLU twin\) +\| +25\.0", text) and re.search(r"\| 0\.25 +\| 25\.0", text)
    assert main(["table", str(records["relu_twin"]), str(records["kwta_twin"])]) == 0
    text = capsys.readouterr().out
    assert re.search(r"\| relu_twin +\| relu \(detected\) +\|", text)
    assert re.search(r"\| kwta_twin +\| relu \+ top-k 0.25 dense \(2 found by the probe\) +\|", text)
