"""A top-k written without torch's selection operations next to gates the layer probe found
(kwta_robust/detect_selections.py): the constant-count watch ran only where the probe found no gate, so a model
with our layer in one place and an ``argmax``-loop top-k in another got BPDA on the found gate and no word about the
other one. The watch now runs in every model and leaves out only the found gates' outputs and their views, copies,
scalings and permutations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.detect import detect_layers
from kwta_robust.evaluate import evaluate
from kwta_robust.layers import KWTA
from test_gates_fuzz import Block, N, X, argmax_loop_mask, bisect_mask, numpy_mask, seeded

FOUND_K = 8  # KWTA(ratio=0.25) over N = 32 units


class Scale(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return 3.0 * x


class FlipHalf(nn.Module):
    """A permutation and a scaling of its input."""

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * x.flip(1)


def mixed(fn, after: nn.Module | None = None) -> nn.Module:
    """Our kWTA layer (found by the probe), then ``after``, then a hidden top-k inside a block."""
    return seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, N), KWTA(ratio=0.25), after or nn.Identity(),
                                        Block(fn, N), nn.Linear(N, 3)))


def sparsity(model: nn.Module, x: Tensor = X) -> list[dict]:
    return [s for s in detect_layers(model, x).selections if s["kind"] == "sparsity"]


def test_a_hidden_gate_next_to_a_found_one_is_listed() -> None:
    for fn in (argmax_loop_mask, bisect_mask, numpy_mask):
        found = detect_layers(mixed(fn), X)
        assert found.names("gate") == ["2"], fn.__name__
        assert found.selections == [
            {"op": "constant-count", "kind": "sparsity", "modules": ["", "4"], "calls": 1, "probed": False,
             "k": 5, "size": N, "tensor": "output of 4"}], fn.__name__


def test_a_hidden_gate_with_the_found_gates_count_is_still_listed() -> None:
    (entry,) = sparsity(mixed(lambda h: argmax_loop_mask(h, FOUND_K)))
    assert (entry["k"], entry["size"], entry["tensor"]) == (FOUND_K, N, "output of 4")


def test_views_copies_scalings_and_permutations_of_a_found_gates_output_are_not_listed() -> None:
    for after in (Scale(), FlipHalf(), nn.Flatten()):
        model = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, N), KWTA(ratio=0.25), after,
                                             nn.Linear(N, 3)))
        found = detect_layers(model, X)
        assert found.names("gate") == ["2"] and found.selections == [], type(after).__name__
    # channels-last: the flatten after the gate copies its output into another storage
    conv = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), KWTA(ratio=0.25), nn.Flatten(),
                                        nn.Linear(64, 3))).to(memory_format=torch.channels_last)
    x = X.contiguous(memory_format=torch.channels_last)
    assert conv[2](conv[1](conv[0](x))).untyped_storage().data_ptr() != conv[1](conv[0](x)).untyped_storage().data_ptr()
    assert sparsity(conv, x) == []
    # a scaled permutation of the found gate's output followed by the hidden gate: only the hidden one
    (entry,) = sparsity(mixed(argmax_loop_mask, FlipHalf()))
    assert entry["tensor"] == "output of 4"


def test_an_evaluation_flags_the_hidden_gate_that_bpda_did_not_relax() -> None:
    model = mixed(numpy_mask)
    with torch.no_grad():
        y = model(X).argmax(1)
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 12, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 3}},
                    {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 3}}}],
        "noise": [], "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}})
    record = evaluate(model, TensorData(X.clone(), y, "toy", 3, torch.arange(len(y))), cfg, {}, progress=False)
    flags = {f.code: f for f in record.diagnostics}
    assert [layer["name"] for layer in record.detection["layers"] if "gate" in layer["kinds"]] == ["2"]
    assert "bpda-no-layer" not in flags  # BPDA acted on the found gate
    hidden = flags["selections-outside-layers"]
    assert hidden.severity == "critical" and "\n" not in hidden.message
    assert ("a top-k without torch's selection operations (5 of 32 values non-zero in every sample: the output of 4) "
            "in the forward of 4 (1 call(s) a forward)") in hidden.message
    assert [s["tensor"] for s in hidden.evidence["selections"]] == ["output of 4"]


class Cast(nn.Module):
    """A copy of its input in another dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return x.to(self.dtype)


def test_a_copy_of_a_found_gates_output_in_another_dtype_is_not_listed() -> None:
    model = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, N), KWTA(ratio=0.25), Cast(torch.half),
                                         FlipHalf(), Cast(torch.float), nn.Linear(N, 3)))
    assert sparsity(model) == []
    double = seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, N), KWTA(ratio=0.25), Scale(),
                                          nn.Linear(N, 3))).double()
    assert detect_layers(double, X.double()).selections == []
