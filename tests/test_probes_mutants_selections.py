"""Mutation round on :mod:`kwta_robust.detect_selections`: the selection and step-function calls of one forward,
with their module stacks, counts and probe fields, for a model whose calls are listed here by hand."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside
from kwta_robust.selection_entries import step_calls, where_called

X = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))


class Inner(nn.Module):
    """A leaf that keeps the top two of six units (its output of another size)."""

    def forward(self, h: Tensor) -> Tensor:
        return h.topk(2, dim=1).values


class Block(nn.Module):
    """A parent: its child's top-k, then a step function on the batch; step functions on a size, on integers and
    on a 0-dim tensor, which are no input quantization."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()

    def forward(self, h: Tensor) -> Tensor:
        h = torch.heaviside(self.inner(h) - 0.5, torch.tensor(0.5))
        sizes = torch.round(torch.tensor([1.5, 2.5])) + torch.floor(torch.arange(4)).sum()
        sizes = sizes + torch.sign(torch.tensor(1.0))
        return h + 0 * sizes.sum()


class Net(nn.Module):
    """Two sorts (method form) and an msort in its own forward, then the block; under training an argsort, and
    ``draws`` kthvalue calls decided by the global RNG."""

    def __init__(self, draws: int = 0) -> None:
        super().__init__()
        self.block, self.draws = Block(), draws
        self.saw: list[tuple[bool, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.saw.append((self.training, torch.is_grad_enabled()))
        h = x.sort(dim=1).values
        h = h.sort(dim=1, descending=True).values
        h = torch.msort(h)
        if self.training:
            h = h + h.argsort(dim=1) * 0
        for _ in range(int((torch.rand(self.draws) < 0.5).sum())):
            h = h + h.kthvalue(2, dim=1).values[:, None] * 0
        return self.block(h)


ROOT_SORTS = [{"op": "msort", "kind": "selection", "modules": [""], "calls": 1, "probed": False},
              {"op": "sort", "kind": "selection", "modules": [""], "calls": 2, "probed": False}]


def test_every_call_with_its_module_stack_sorted_by_kind_op_and_modules() -> None:
    model = Net().train()
    found = selections_outside(model, X, accounted=[], probed={"block.inner": False, "block.other": True})
    assert found == ROOT_SORTS + [
        {"op": "topk", "kind": "selection", "modules": ["", "block", "block.inner"], "calls": 1, "probed": True,
         "keeps_shape": False},
        {"op": "heaviside", "kind": "step", "modules": ["", "block"], "calls": 1, "probed": False},
    ]
    assert model.saw == [(False, False)]  # in eval mode, without gradients
    assert model.training and model.block.training and model.block.inner.training
    for module in model.modules():  # every hook removed: the model runs as before
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert model(X).shape == (4, 2)
    keeps = selections_outside(model, X, accounted=[], probed={"block.inner": 1})
    assert keeps[2]["probed"] is True and keeps[2]["keeps_shape"] is True


def test_calls_inside_an_accounted_module_are_left_out_at_any_depth() -> None:
    assert selections_outside(Net(), X, accounted=["block"]) == ROOT_SORTS
    inner_only = selections_outside(Net(), X, accounted=["block.inner"])
    assert inner_only == ROOT_SORTS + [
        {"op": "heaviside", "kind": "step", "modules": ["", "block"], "calls": 1, "probed": False}]


def test_a_randomized_forward_is_seeded_and_the_callers_rng_restored() -> None:
    with torch.random.fork_rng(devices=[]):
        expected = {}
        for seed in (0, 3):
            torch.manual_seed(seed)
            expected[seed] = int((torch.rand(16) < 0.5).sum())
        counts = {}
        for seed, global_seed in ((0, 11), (3, 12), (3, 13)):
            torch.manual_seed(global_seed)
            before = torch.get_rng_state()
            found = selections_outside(Net(draws=16), X, accounted=[], seed=seed)
            assert torch.equal(torch.get_rng_state(), before)
            counts[seed] = {s["op"]: s["calls"] for s in found}.get("kthvalue", 0)
            assert counts[seed] == expected[seed]


def test_step_calls_and_where_called() -> None:
    selections = [{"op": "topk", "modules": [""], "calls": 1},  # a record from before the kind was written
                  {"op": "sort", "kind": "selection", "modules": [""], "calls": 1},
                  {"op": "round", "kind": "step", "modules": ["", "quant"], "calls": 2}]
    assert step_calls(selections) == [selections[2]]
    assert step_calls([]) == []
    assert where_called({"op": "topk", "modules": ["", "block", "block.inner"]}) == \
        "topk in the forward of block.inner"
    assert where_called({"op": "round", "modules": [""]}) == "round in the forward of the model itself"
    assert where_called({"op": "round", "modules": []}) == "round in the forward of the model itself"


def test_a_selection_in_the_users_own_pre_hook_runs_outside_every_module() -> None:
    """A forward pre-hook the user registered before the probe's runs before the model's name is on the stack: its
    call has no module, and no module of it was probed."""
    model = nn.Sequential(nn.Linear(6, 3))
    handle = model.register_forward_pre_hook(lambda _module, args: (args[0].topk(6, dim=1).values,))
    found = selections_outside(model, X, accounted=[], probed={"": True, "0": True})
    handle.remove()
    assert found == [{"op": "topk", "kind": "selection", "modules": [], "calls": 1, "probed": False}]
    assert where_called(found[0]) == "topk in the forward of the model itself"
