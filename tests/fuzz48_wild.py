"""Seeded random models with top-k forms beyond kWTA activations (test support of tests/test_fuzz48_*.py; the
styles of tests/fuzz46_wild.py and tests/fuzz47_wild.py are not repeated). ``build(seed)`` → ``(model, x, sites,
description)`` on MNIST-shaped inputs ``[N, 1, 28, 28]`` (flattened to ``[N, 784]``; for attention ``[N, 1, S, S]``,
``S`` 8 or 12) → ``[N, 3]``, one of

* ``attn``: top-k attention (Zhao et al. 2019, "Explicit Sparse Transformer") over the image rows as tokens
  ``[B, T, D]``: scores ``[B, T, T]`` of a query/key map, the losers set to ``-inf`` before the softmax, by a
  ``masked_fill(scores < kth, -inf)`` (the kth by ``topk`` or ``kthvalue``) or a ``topk`` + ``scatter`` into a
  ``-inf`` tensor;
* ``moe``: noisy top-k gating of a mixture of experts (Shazeer et al. 2017, the noise off in eval): a softmax over
  the top-k expert logits scattered back into ``-inf`` (or ``-1e9``) weighting every expert's output (computed
  before or after the gate's weights), or the
  chosen experts' outputs ``gather``-ed by the top-k indices and weighted by a softmax of the top-k logits;
* ``sort``: a top-k of units by ``torch.sort`` / ``argsort``, then ``gather`` of the first k indices scattered back
  into zeros, or a mask from the sorted values' k-th column;
* ``detached``: a threshold from ``torch.quantile`` / ``kthvalue`` of a detached score, ``h · (h ≥ t)``;
* ``ste``: a user's straight-through estimator around a top-k mask, ``h + (h · mask − h).detach()``;

each as a leaf module (site ``a1.gate`` or ``a1.1``), inline in its block's ``forward`` (site ``a1``) or in the
model's own (site ``""``; the mixture of experts is always the block ``a1``). ``sites``: where the top-k is; the
description's last word: the form. Untrained, seeded; the global RNG is left as it was."""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor, nn

FORMS = ["attn", "moe", "sort", "detached", "ste"]


def topk_attention(scores: Tensor, k: int, method: str) -> Tensor:
    """Softmax over each row's k largest ``scores`` ``[..., T]`` (the rest ``-inf``)."""
    if method == "fill_topk":
        return scores.masked_fill(scores < scores.topk(k, dim=-1).values[..., -1:], float("-inf")).softmax(-1)
    if method == "fill_kth":
        kth = scores.kthvalue(scores.shape[-1] - k + 1, dim=-1, keepdim=True).values
        return scores.masked_fill(scores < kth, float("-inf")).softmax(-1)
    if method == "where_min":  # the dtype's lowest finite value, by torch.where
        kth = scores.topk(k, dim=-1).values[..., -1:]
        return torch.where(scores >= kth, scores, torch.finfo(scores.dtype).min).softmax(-1)
    v, i = scores.topk(k, dim=-1)
    return torch.full_like(scores, float("-inf")).scatter(-1, i, v).softmax(-1)


def moe_weights(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Shazeer et al.'s gate: ``(weights [B, E], top values [B, k], top indices [B, k])``."""
    v, i = logits.topk(k, dim=-1)
    return torch.full_like(logits, -1e9 if k % 2 == 0 else float("-inf")).scatter(-1, i, v).softmax(-1), v, i


def unit_topk(h: Tensor, k: int, method: str) -> Tensor:
    """k winners of ``h`` ``[B, D]`` along its last dim by ``method`` (sort, detached or ste forms)."""
    if method == "sort_gather":
        idx = h.sort(dim=-1, descending=True).indices[..., :k]
        return torch.zeros_like(h).scatter(-1, idx, h.gather(-1, idx))
    if method == "argsort_gather":
        idx = h.argsort(dim=-1)[..., -k:]
        return torch.zeros_like(h).scatter(-1, idx, h.gather(-1, idx))
    if method == "sort_column":
        return h * (h >= h.sort(dim=-1, descending=True).values[..., k - 1:k])
    if method == "quantile_detached":
        return h * (h >= torch.quantile(h.detach(), 1 - k / h.shape[-1], dim=-1, keepdim=True))
    if method == "kth_detached":
        return h * (h >= h.detach().kthvalue(h.shape[-1] - k + 1, dim=-1, keepdim=True).values).to(h.dtype)
    if method == "sort_slice":  # k-max pooling: the k largest values, sorted (``[B, k]``)
        return h.sort(dim=-1, descending=True).values[..., :k]
    mask = (h >= h.topk(k, dim=-1).values[..., -1:]).to(h.dtype)
    if method == "ste_sigmoid":  # a hard mask forward, a sigmoid's gradient backward
        soft = torch.sigmoid(h)
        return h * (mask + soft - soft.detach())
    return h + (h * mask - h).detach()  # ste


UNIT_METHODS = {"sort": ["sort_gather", "argsort_gather", "sort_column", "sort_slice"],
                "detached": ["quantile_detached", "kth_detached"], "ste": ["ste", "ste_sigmoid"]}


class Attention(nn.Module):
    """Top-k attention of ``heads`` heads over tokens ``[B, T, D]`` → ``[B, T, D]`` (residual)."""

    def __init__(self, d: int, heads: int, k: int, method: str, inline: bool) -> None:
        super().__init__()
        self.q, self.kp, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.heads, self.k, self.method = heads, k, method
        if not inline:
            self.gate = AttnGate(k, method)

    def split(self, t: Tensor) -> Tensor:
        """``[B, T, D]`` → ``[B, heads, T, D / heads]``."""
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def scores(self, t: Tensor) -> Tensor:
        """``[B, heads, T, T]``."""
        return self.split(self.q(t)) @ self.split(self.kp(t)).transpose(-1, -2) / math.sqrt(t.shape[-1] / self.heads)

    def mix(self, attn: Tensor, t: Tensor) -> Tensor:
        return t + (attn @ self.split(self.v(t))).transpose(1, 2).flatten(2)

    def forward(self, t: Tensor) -> Tensor:
        scores = self.scores(t)
        attn = self.gate(scores) if hasattr(self, "gate") else topk_attention(scores, self.k, self.method)
        return self.mix(attn, t)


class AttnGate(nn.Module):
    """A leaf module: the masked softmax of :func:`topk_attention`."""

    def __init__(self, k: int, method: str) -> None:
        super().__init__()
        self.k, self.method = k, method

    def forward(self, scores: Tensor) -> Tensor:
        return topk_attention(scores, self.k, self.method)


class MoE(nn.Module):
    """``[B, D]`` → ``[B, H]``: top-k of E experts (linear + ReLU) weighted by :func:`moe_weights`."""

    def __init__(self, d: int, hidden: int, experts: int, k: int, route: str) -> None:
        super().__init__()
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(nn.Linear(d, hidden) for _ in range(experts))
        self.k, self.route = k, route

    def forward(self, x: Tensor) -> Tensor:
        if self.route == "router_first":  # the gate's weights, then the experts' ReLU outputs
            w = moe_weights(self.router(x), self.k)[0]
            return (w.unsqueeze(-1) * torch.stack([torch.relu(e(x)) for e in self.experts], 1)).sum(1)
        outs = torch.stack([torch.relu(e(x)) for e in self.experts], 1)  # [B, E, H]
        if self.route == "dense":
            return (moe_weights(self.router(x), self.k)[0].unsqueeze(-1) * outs).sum(1)
        v, i = self.router(x).topk(self.k, dim=-1)  # the chosen experts' outputs picked, weighted by a softmax
        if self.route == "index":
            chosen = outs[torch.arange(len(x)).unsqueeze(1), i]  # [B, k, H]
        else:
            chosen = outs.gather(1, i.unsqueeze(-1).expand(-1, -1, outs.shape[-1]))
        return (v.softmax(-1).unsqueeze(-1) * chosen).sum(1)


class UnitGate(nn.Module):
    """A leaf module: :func:`unit_topk`."""

    def __init__(self, k: int, method: str) -> None:
        super().__init__()
        self.k, self.method = k, method

    def forward(self, h: Tensor) -> Tensor:
        return unit_topk(h, self.k, self.method)


class UnitBlock(nn.Module):
    """``fc`` then a top-k inline in this ``forward`` (site ``<block>``)."""

    def __init__(self, d: int, hidden: int, k: int, method: str) -> None:
        super().__init__()
        self.fc, self.k, self.method = nn.Linear(d, hidden), k, method

    def forward(self, x: Tensor) -> Tensor:
        return unit_topk(self.fc(x), self.k, self.method)


class TokenNet(nn.Module):
    """``[B, 1, S, S]`` → rows as tokens ``[B, S, S]`` → embed → top-k attention ``a1`` → head; ``where ==
    "root"``: the attention's scores made and masked in this ``forward`` (``a1`` its query/key/value maps)."""

    def __init__(self, size: int, d: int, heads: int, k: int, method: str, where: str) -> None:
        super().__init__()
        self.embed, self.head = nn.Linear(size, d), nn.Linear(size * d, 3)
        self.a1 = Attention(d, heads, k, method, inline=where != "module")
        self.root = where == "root"

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(x.flatten(0, 1))
        a = self.a1
        t = a.mix(topk_attention(a.scores(t), a.k, a.method), t) if self.root else a(t)
        return self.head(t.flatten(1))


class DenseNet(nn.Module):
    """``[B, 784]`` → ``a1`` (a gated stage) → head (on ``width`` features); ``spec``: the gate in this
    ``forward``."""

    def __init__(self, a1: nn.Module, width: int, spec: tuple[int, str] | None) -> None:
        super().__init__()
        self.a1, self.head, self.spec = a1, nn.Linear(width, 3), spec

    def forward(self, x: Tensor) -> Tensor:
        h = self.a1(x.flatten(1))
        return self.head(unit_topk(h, *self.spec) if self.spec else h)


def build(seed: int) -> tuple[nn.Module, Tensor, list[str], str]:
    rng = random.Random(seed)
    form = rng.choice(FORMS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if form == "attn":
            d, k, size, heads = rng.choice([8, 16]), rng.choice([1, 2, 3, 4]), rng.choice([8, 12]), rng.choice([1, 2])
            method = rng.choice(["fill_topk", "fill_kth", "scatter", "where_min"])
            where = rng.choice(["module", "inline", "root"])
            net: nn.Module = TokenNet(size, d, heads, k, method, where)
            x = torch.rand(rng.choice([4, 6]), 1, size, size, generator=torch.Generator().manual_seed(seed))
            sites = [{"module": "a1.gate", "inline": "a1", "root": ""}[where]]
            desc = f"{method}/{where}/k={k}/d={d}/T={size}/heads={heads}"
        else:
            hidden = rng.choice([16, 32])
            if form == "moe":
                experts = rng.choice([4, 6])
                k, route = rng.choice([1, 2, 3]), rng.choice(["dense", "router_first", "gather", "index"])
                net, sites, desc = DenseNet(MoE(784, hidden, experts, k, route), hidden, None), ["a1"], \
                    f"{route}/E={experts}/k={k}/h={hidden}"
            else:
                method, where = rng.choice(UNIT_METHODS[form]), rng.choice(["module", "inline", "root"])
                k = max(1, int(rng.choice([0.1, 0.25, 0.5]) * hidden))
                width = k if method == "sort_slice" else hidden  # the head's input
                if where == "module":
                    a1: nn.Module = nn.Sequential(nn.Linear(784, hidden), UnitGate(k, method))
                    net, sites = DenseNet(a1, width, None), ["a1.1"]
                elif where == "inline":
                    net, sites = DenseNet(UnitBlock(784, hidden, k, method), width, None), ["a1"]
                else:
                    net, sites = DenseNet(nn.Linear(784, hidden), width, (k, method)), [""]
                desc = f"{method}/{where}/k={k}/h={hidden}"
            x = torch.rand(rng.choice([4, 6]), 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return net.eval(), x, sites, f"seed={seed} {desc} {form}"
