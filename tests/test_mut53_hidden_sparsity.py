"""Mutation review of kwta_robust/hidden_sparsity.py (the constant-count watch): what ``constant_count`` takes for a
top-k's mark (at least 4 samples, 0 < k < size in every sample, winners not all at the same positions, ``[B, C]``
maps too), which tensors ``SparsityWatch`` takes for a found gate's output (a scaled and permuted copy, a copy in half
precision, one with the same winners) and which it notes (the same count with other values), what it carries along
(moving and joining operations only; not a join with a hidden gate's output) and that the model's output is left
out. Samples ``[4, 8]`` with 2 non-zero values each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kwta_robust.hidden_sparsity import MIN_SPARSITY_BATCH, SparsityWatch, constant_count

#: Per sample, the positions of its two winners (they differ between samples) and their values.
WINNERS = [(0, 3), (1, 5), (2, 6), (4, 7)]


def sparse(values: tuple[float, ...] = (1.0, 0.5), positions: list[tuple[int, ...]] = WINNERS) -> Tensor:
    t = torch.zeros(len(positions), 8)
    for i, where in enumerate(positions):
        t[i, list(where)] = torch.tensor(values)
    return t


def test_what_constant_count_takes_for_a_top_k() -> None:
    assert MIN_SPARSITY_BATCH == 4
    assert constant_count(sparse(), 4) == (2, 8)
    assert constant_count(sparse().reshape(4, 2, 4), 4) == (2, 8)  # [B, C, L]
    assert constant_count(sparse(positions=WINNERS[:3]), 3) is None  # too few samples
    assert constant_count(sparse(positions=[(0, 3)] * 4), 4) is None  # the same positions: a fixed mask
    assert constant_count(torch.ones(4, 8), 4) is None and constant_count(torch.zeros(4, 8), 4) is None
    uneven = sparse()
    uneven[0, 7] = 2.0
    assert constant_count(uneven, 4) is None  # 3 non-zero values in one sample, 2 in the others
    assert constant_count(sparse().long(), 4) is None and constant_count(sparse(), 5) is None


def _watch(gate: Tensor | None = None) -> tuple[SparsityWatch, Tensor]:
    watch, gate = SparsityWatch(4, skip=(), gates=["gate"]), sparse() if gate is None else gate
    watch.note(gate, "output", "gate", ["", "gate"])
    return watch, gate


def _noted(watch: SparsityWatch, t: Tensor) -> bool:
    watch.note(t, "output", "other", ["", "other"])
    return t.untyped_storage().data_ptr() in watch.found


def test_copies_of_a_found_gates_output_are_not_noted_and_other_values_are() -> None:
    watch, gate = _watch()
    assert watch.entries(None) == []  # the gate's own output
    perm = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0])
    assert not _noted(watch, 3 * gate[:, perm])  # scaled and permuted: the same values up to a factor
    assert not _noted(watch, (gate * 1.001)[:, perm])  # within 1% (a copy in half precision)
    assert not _noted(watch, gate.sign())  # the same winners, other values
    watch, gate = _watch()
    assert _noted(watch, sparse((1.0, 0.9))[:, perm])  # the same count, other winners and values: noted
    three = [(0, 3, 4), (1, 5, 6), (2, 6, 7), (0, 4, 7)]
    watch, gate = _watch(sparse((1.0, 0.5, 0.5), three))
    assert _noted(watch, sparse((1.0, 0.75, 0.25), three)[:, perm])  # the same sum of ratios, not of their squares


def test_what_is_carried_and_the_models_output() -> None:
    watch, gate = _watch()
    watch.gate_output(gate)
    padded = F.pad(gate, (1, 1))
    watch.carry("pad", (gate, (1, 1)), padded)
    assert padded.untyped_storage().data_ptr() in watch.carried
    shuffled = gate.reshape(4, 8, 1, 1).clone()
    watch.carry("pixel_shuffle", (gate,), shuffled)
    assert shuffled.untyped_storage().data_ptr() in watch.carried
    exp = gate.exp()
    watch.carry("exp", (gate,), exp)  # no moving operation: not carried
    assert exp.untyped_storage().data_ptr() not in watch.carried
    dense = torch.rand(4, 8) + 0.1
    joined = torch.cat([gate, dense], dim=1)
    watch.carry("cat", ([gate, dense], 1), joined)  # joined with a dense tensor: carried
    assert joined.untyped_storage().data_ptr() in watch.carried
    hidden = sparse((1.0, 0.9), positions=[(5, 6), (0, 7), (1, 2), (3, 4)])
    with_hidden = torch.cat([gate, hidden], dim=1)
    watch.carry("cat", ([gate, hidden], 1), with_hidden)  # joined with a hidden gate's output: noted, not carried
    assert with_hidden.untyped_storage().data_ptr() not in watch.carried
    assert _noted(watch, with_hidden)
    assert not _noted(watch, padded)  # carried: not noted (4 of 10 non-zero, no found gate of that count)
    out = sparse((2.0, 0.3), positions=[(1, 4), (0, 2), (3, 6), (5, 7)])
    watch.note(out, "output", "head", ["", "head"])
    assert [e["tensor"] for e in watch.entries(out)] == ["output of other"]  # the model's output left out
    assert len(watch.entries(None)) == 2 and watch.found[with_hidden.untyped_storage().data_ptr()]["k"] == 4
