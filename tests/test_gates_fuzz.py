"""Fuzzing round on BPDA for kWTA gates not built here (kwta_robust/detect_selections.py): a top-k written without
torch's selection operations (an argmax loop, a threshold bisection, numpy's argpartition) where the layer probe
cannot classify it (inside a module with children, inline in ``forward``, or a gate that scales its winners) left
no gate, no selection and only the ``bpda-no-layer`` warning that any ReLU network gets, while BPDA ran its inner
attack unchanged. Such a tensor between modules — the same number of non-zero values in every sample, at positions
that differ between samples — is now listed with the selections (``kind: sparsity``) and flagged
``selections-outside-layers``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.detect import detect_layers
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.selection_entries import where_called
from bpda_models import kwta_mlp, relu_mlp

K, N = 5, 32


def argmax_loop_mask(h: Tensor, k: int = K) -> Tensor:
    """A top-k by repeated argmax with masked_fill(-inf): no topk/sort/kthvalue call anywhere."""
    work, keep = h.detach().clone(), torch.zeros_like(h, dtype=torch.bool)
    for _ in range(k):
        keep.scatter_(1, work.argmax(dim=1, keepdim=True), True)
        work = work.masked_fill(keep, float("-inf"))
    return keep


def bisect_mask(h: Tensor, k: int = K) -> Tensor:
    """A top-k by a threshold search loop (bisection on the count)."""
    lo, hi = h.min(1, keepdim=True).values, h.max(1, keepdim=True).values
    for _ in range(40):
        mid = (lo + hi) / 2
        enough = (h >= mid).sum(1, keepdim=True) >= k
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    return h >= lo


def numpy_mask(h: Tensor, k: int = K) -> Tensor:
    """A top-k through numpy's argpartition."""
    a = h.detach().cpu().numpy()
    mask = np.zeros_like(a)
    np.put_along_axis(mask, np.argpartition(-a, k - 1, axis=1)[:, :k], 1.0, axis=1)
    return torch.from_numpy(mask).to(h)


class Block(nn.Module):
    """A Linear and its gate in one module with children."""

    def __init__(self, fn, d_in: int) -> None:
        super().__init__()
        self.fc, self.fn = nn.Linear(d_in, N), fn

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        return h * self.fn(h)


class ScaledGate(nn.Module):
    """A leaf gate that scales its winners (``2 · x · mask``): not ``x · mask``, so the probe sees no gate."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return 2.0 * x * self.fn(x)


class Inline(nn.Module):
    """The gate written inline in the model's forward."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.l1, self.l2, self.fn = nn.Linear(16, N), nn.Linear(N, 3), fn

    def forward(self, x: Tensor) -> Tensor:
        h = self.l1(x.flatten(1))
        return self.l2(h * self.fn(h))


def seeded(build) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def blocks(fn) -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Flatten(), Block(fn, 16), Block(fn, N), nn.Linear(N, 3)))


def scaled(fn) -> nn.Module:
    return seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, N), ScaledGate(fn), nn.Linear(N, 3)))


X = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(3))


def sparsity(model: nn.Module, x: Tensor = X) -> list[dict]:
    return [s for s in detect_layers(model, x).selections if s["kind"] == "sparsity"]


def test_a_gate_without_selection_operations_inside_a_block_is_listed() -> None:
    for fn in (argmax_loop_mask, bisect_mask, numpy_mask):
        found = detect_layers(blocks(fn), X)
        assert found.layers == []
        assert found.selections == [
            {"op": "constant-count", "kind": "sparsity", "modules": ["", "1"], "calls": 1, "probed": False,
             "k": K, "size": N, "tensor": "output of 1"},
            {"op": "constant-count", "kind": "sparsity", "modules": ["", "2"], "calls": 1, "probed": False,
             "k": K, "size": N, "tensor": "output of 2"}], fn.__name__


def test_a_scaled_leaf_gate_and_an_inline_gate_name_where_the_sparse_tensor_is_made() -> None:
    (leaf,) = sparsity(scaled(argmax_loop_mask))
    assert (leaf["modules"], leaf["probed"], leaf["keeps_shape"], leaf["k"]) == (["", "2"], True, True, K)
    assert where_called(leaf) == (f"a top-k without torch's selection operations ({K} of {N} values non-zero in "
                                  "every sample: the output of 2) in the forward of 2")
    (inline,) = sparsity(seeded(lambda: Inline(bisect_mask)))
    assert (inline["modules"], inline["tensor"], inline["probed"]) == ([""], "input of l2", False)
    assert where_called(inline).endswith("the input of l2) in the forward of the model itself")


class OneHot(nn.Module):
    def forward(self, z: Tensor) -> Tensor:
        return nn.functional.one_hot(z.argmax(1), z.shape[1]).to(z.dtype)


class FixedMask(nn.Module):
    """Zeroes the same units in every sample (pruning): a constant count, but no selection."""

    def forward(self, x: Tensor) -> Tensor:
        return x * (torch.arange(x.shape[1]) % 4 == 0).to(x.dtype)


def test_no_false_alarm_on_relu_fixed_masks_one_hot_outputs_our_layers_or_small_batches() -> None:
    flat = X.flatten(1)
    assert sparsity(relu_mlp(), flat) == []
    assert sparsity(seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, N), FixedMask(), nn.Linear(N, 3)))) == []
    assert sparsity(seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 3), OneHot()))) == []
    assert sparsity(kwta_mlp(), flat) == []  # our own layers are accounted for
    assert sparsity(blocks(argmax_loop_mask), X[:3]) == []  # too few samples to tell a count from chance


def test_an_evaluation_flags_the_hidden_gate_instead_of_only_bpda_no_layer() -> None:
    model = blocks(numpy_mask)
    with torch.no_grad():
        y = model(X).argmax(1)
    data = TensorData(X.clone(), y, "toy", 3, torch.arange(len(y)))
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 12, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 3}},
                    {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 3}}}],
        "noise": [], "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}})
    record = evaluate(model, data, cfg, {}, progress=False)
    flags = {f.code: f for f in record.diagnostics}
    assert flags["selections-outside-layers"].severity == "critical" and "bpda-no-layer" in flags
    message = flags["selections-outside-layers"].message
    assert f"a top-k without torch's selection operations ({K} of {N} values non-zero in every sample: the output " \
           "of 1) in the forward of 1 (1 call(s) a forward)" in message and "\n" not in message
    adaptive = flags.get("adaptive-beats-pgd")
    assert adaptive is None or "selections-outside-layers" in adaptive.message


class PairGate(nn.Module):
    """A gate returning ``(values, mask)`` for its parent to unpack."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = argmax_loop_mask(x).to(x.dtype)
        return x * mask, mask


class Unpacks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.gate, self.l2 = nn.Linear(16, N), PairGate(), nn.Linear(N, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.l2(self.gate(self.l1(x.flatten(1)))[0])


def refusal(model: nn.Module, attack_layers: list[str]) -> str:
    """The one-line ConfigError of an evaluation whose BPDA attack (label ``b``) names ``attack_layers`` itself
    (the top-level ``bpda_layers`` stays ``auto``)."""
    with torch.no_grad():
        y = model(X).argmax(1)
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 12, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "bpda", "label": "b", "bpda_layers": attack_layers,
                     "params": {"surrogate": "smooth", "inner_params": {"steps": 1}}}],
        "noise": [], "diagnostics": {"enabled": False}})
    with pytest.raises(ConfigError) as caught:
        evaluate(model, TensorData(X.clone(), y, "toy", 3, torch.arange(len(y))), cfg, {}, progress=False)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_module_bpda_cannot_act_through_is_refused_under_the_field_that_named_it() -> None:
    """An attack's own ``bpda_layers`` naming a Linear (or a gate returning a tuple) was refused as
    ``bpda_layers: ...``, the top-level key, which said ``auto`` and named nothing."""
    resized = refusal(blocks(argmax_loop_mask), ["1"])
    assert resized.startswith("attacks[b].bpda_layers: module '1' (Block) changes the number of elements")
    pair = refusal(seeded(Unpacks), ["gate"])
    assert pair.startswith("attacks[b].bpda_layers: module 'gate' (PairGate) returns a tuple")
