"""Fixed seeds of the second wild-model fuzzer (models: tests/fuzz47_wild.py — token-wise top-k in transformer-style
MLP blocks on ``[B, T, D]``, Conv1d kWTA, channel-wise and per-channel spatial kWTA, gates by ``argsort`` ranks,
quantiles, ``scatter_``, ``kthvalue`` + ``where``, ``msort``, in-place index writes, max-pool1d winner-take-all; as
leaf modules, inline in a block or in the model's own ``forward``; behind an input-normalization wrapper, in float64,
in ``nn.DataParallel``), each run the way a user runs the library (``evaluate_model``: PGD and BPDA smooth and
identity, 2 steps, L∞ 0.1, 4–8 samples) and held to the invariants of tests/test_fuzz46_fixed_seeds.py: no raw
traceback, BPDA acting on every gate site or a warning/critical flag naming it, the worst case at most every
attack's robust accuracy, the model unchanged. Each seed broke before its fix (of 1373 seeds run on the code before,
these and five more): behind a wrapper (``Normalized``, ``DataParallel``) the model's own inline gate made its
module one BPDA acted on, and a gate its child made that BPDA could not relax went unflagged
(test_fuzz47_wrapped_inline): 593 (a sparse autoencoder's ``relu`` top-k, its count varying, in a ResNet-style
block's branch), 716 (a max-pool1d winner-take-all in the model's ``forward`` of a Conv1d net), 1097 (an
``out[h < t] = 0`` top-k over tokens of a float64 token MLP); and 277 (a sparse autoencoder's ``relu`` top-k in a
token MLP, read by the layer probe only on tie-broken inputs: BPDA refused the evaluation at a call whose count
varied, until a top-k then ReLU read as the top-k gate of ``relu(h)``, tests/test_topk_relu_gates.py)."""

from __future__ import annotations

import pytest
import torch

import fuzz47_wild as wild
from kwta_robust.api import evaluate_model
from test_fuzz46_fixed_seeds import CONFIG, check_invariants, state


@pytest.mark.parametrize("seed", [593, 716, 1097, 277])
def test_a_fuzzed_model_keeps_the_invariants(seed: int) -> None:
    model, x, sites, description = wild.build(seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    before = state(model)
    check_invariants(model, evaluate_model(model, CONFIG, x, y, threads=1), before, sites, description)
