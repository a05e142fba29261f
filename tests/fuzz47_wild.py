"""Seeded random kWTA models in more styles users write (test support of tests/test_fuzz47_*.py; the styles of
tests/fuzz46_wild.py are not repeated). ``build(seed)`` → ``(model, x, sites, description)`` on inputs
``[N, 1 or 3, 8, 8]`` → ``[N, 3]``: a body drawn from

* ``token``: a transformer-style MLP block on ``[B, T, D]`` (image rows as the ``T = 8`` tokens), ``x + fc2(g(fc1(x)))``
  with a top-k over the hidden width per token (``token``) or over the tokens per feature (``tokens``);
* ``conv1d``: ``Conv1d`` on ``[B, C·8, 8]`` (rows as channels) with a top-k over ``C·L`` or over channels per position;
* ``conv``: conv → gate → (optional BatchNorm after the gate) → conv, the gate over channels at each pixel
  (``channel``), over H·W per channel (``spatial``) or over C·H·W (``sample``), optionally in a residual block's
  branch (``x + gate(conv(x))``, the skip added after);

each gate (a leaf module ``<stage>.gate``, inline in the stage's ``forward``, or for ``a2`` in the model's own)
computing its mask by a ``topk`` threshold, the rank of a double ``argsort`` (``ranks < k``), ``torch.quantile`` /
``nanquantile``, ``scatter_`` of ``topk`` (or ``argsort``) indices into zeros, ``torch.where(h >= kthvalue(N - k + 1),
h, 0)``, ``-(-h).kthvalue(k)``, the minimum of an unsorted ``topk``, a strict ``>`` the (k+1)-th, ``msort``, an
in-place ``out[h < t] = 0`` on a copy, a float64 ranking in a float32 model, magnitude (``|h|``), a mask made under
``torch.no_grad``, a sparse autoencoder's ``zeros.scatter(idx, relu(values))``, a shrink ``relu(h - t)``, or (Conv1d)
a max-pool1d winner-take-all. Wrappers drawn on top: an input-normalization module in front, float64 (the input cast
first in ``forward``), ``nn.DataParallel`` (CPU). ``sites`` the module names holding a gate (``""``: the model's own
``forward``). Untrained, seeded; the global RNG is left as it was."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor, nn

METHODS = ["topk", "ranks", "quantile", "scatter_", "where_kth", "argsort_scatter", "neg_kth", "unsorted_min",
           "strict_gt", "nanquantile", "msort", "index_put", "double", "abs",
           "nograd_mask", "sae", "shrink"]


def kwta_last(h: Tensor, method: str, ratio: float) -> Tensor:
    """k winners of ``h`` along its last dim (any leading shape), by ``method``."""
    n = h.shape[-1]
    k = max(1, int(ratio * n))
    if method == "topk":
        return h * (h >= h.topk(k, dim=-1).values[..., -1:]).to(h.dtype)
    if method == "ranks":
        ranks = h.argsort(dim=-1, descending=True).argsort(dim=-1)
        return h * (ranks < k).to(h.dtype)
    if method == "quantile":
        return h * (h >= torch.quantile(h, 1 - ratio, dim=-1, keepdim=True)).to(h.dtype)
    if method == "scatter_":
        mask = torch.zeros_like(h)
        mask.scatter_(-1, h.topk(k, dim=-1).indices, 1.0)
        return h * mask
    if method == "argsort_scatter":
        mask = torch.zeros_like(h, dtype=torch.bool)
        return h * mask.scatter_(-1, h.argsort(dim=-1, descending=True)[..., :k], True)
    if method == "neg_kth":
        return h * (h >= -(-h).kthvalue(k, dim=-1, keepdim=True).values)
    if method == "unsorted_min":
        return h * (h >= h.topk(k, dim=-1, sorted=False).values.min(dim=-1, keepdim=True).values).float()
    if method == "strict_gt":
        return h * (h > h.topk(k + 1, dim=-1).values[..., -1:]) if k < n else h
    if method == "nanquantile":
        return h.masked_fill(h < torch.nanquantile(h, 1 - ratio, dim=-1, keepdim=True), 0.0)
    if method == "msort":
        return torch.where(h >= torch.msort(h.movedim(-1, 0))[n - k].unsqueeze(-1), h, torch.zeros_like(h))
    if method == "index_put":
        out = h.clone()
        out[h < h.topk(k, dim=-1).values[..., -1:]] = 0.0
        return out
    if method == "abs":  # winners by magnitude
        a = h.abs()
        return h * (a >= a.topk(k, dim=-1).values[..., -1:])
    if method == "nograd_mask":
        with torch.no_grad():
            mask = (h >= h.topk(k, dim=-1).values[..., -1:]).to(h.dtype)
        return h * mask
    if method == "sae":  # a sparse autoencoder's TopK: the ReLU'd winners scattered into zeros
        v, i = h.topk(k, dim=-1)
        return torch.zeros_like(h).scatter(-1, i, torch.relu(v))
    if method == "shrink":  # winners shrunk by the (k+1)-th value
        return torch.relu(h - h.topk(k + 1, dim=-1).values[..., -1:]) if k < n else h
    if method == "pool1d":  # [B, C, L]: a max-pool winner-take-all along L
        return h * (h == F.max_pool1d(h, 3, 1, 1)).to(h.dtype)
    if method == "double":  # ranked in float64 inside a float32 model
        d = h.double()
        return (d * (d >= d.topk(k, dim=-1).values[..., -1:])).to(h.dtype)
    return torch.where(h >= h.kthvalue(n - k + 1, dim=-1, keepdim=True).values, h, 0.0)


def kwta_grouped(h: Tensor, method: str, grouping: str, ratio: float) -> Tensor:
    """``h`` ``[B, C, H, W]`` or ``[B, C, L]``: k winners per sample (``sample``), per channel (``spatial``) or over
    channels at each position (``channel``)."""
    if grouping == "sample":
        return kwta_last(h.flatten(1), method, ratio).view_as(h)
    if grouping == "spatial":
        return kwta_last(h.flatten(2), method, ratio).view_as(h)
    return kwta_last(h.movedim(1, -1), method, ratio).movedim(-1, 1)


class KGate(nn.Module):
    """A leaf gate module."""

    def __init__(self, method: str, grouping: str, ratio: float) -> None:
        super().__init__()
        self.method, self.grouping, self.ratio = method, grouping, ratio

    def forward(self, h: Tensor) -> Tensor:
        return kwta(h, self.method, self.grouping, self.ratio)


def kwta(h: Tensor, method: str, grouping: str, ratio: float) -> Tensor:
    if grouping == "tokens":  # over the tokens for each feature of [B, T, D]
        return kwta_last(h.transpose(1, 2), method, ratio).transpose(1, 2)
    return kwta_last(h, method, ratio) if grouping == "token" else kwta_grouped(h, method, grouping, ratio)


class Stage(nn.Module):
    """``layer`` then a gate: a child :class:`KGate` (site ``<stage>.gate``) or inline in this ``forward``
    (site ``<stage>``), or none here (``"root"``: the model's own ``forward`` gates, site ``""``)."""

    def __init__(self, layer: nn.Module, gate: KGate, where: str) -> None:
        super().__init__()
        self.layer, self.where = layer, where
        if where == "module":
            self.gate = gate
        else:
            self.spec = (gate.method, gate.grouping, gate.ratio)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer(x)
        if self.where == "module":
            return self.gate(h)
        return kwta(h, *self.spec) if self.where == "inline" else h

    def site(self, name: str) -> str:
        return {"module": f"{name}.gate", "inline": name, "root": ""}[self.where]


def gated(stage: Stage, h: Tensor) -> Tensor:
    """The model's own gate after a ``root`` stage."""
    return kwta(h, *stage.spec) if stage.where == "root" else h


class TokenMLP(nn.Module):
    """Rows as tokens ``[B, 8, cin·8]`` → two residual MLP blocks with a token-wise gate → head."""

    def __init__(self, cin: int, hidden: int, stages: list[Stage]) -> None:
        super().__init__()
        d = cin * 8
        self.a1, self.fc2 = stages[0], nn.Linear(hidden, d)
        self.a2, self.fc4 = stages[1], nn.Linear(hidden, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(8 * d, 3)

    def forward(self, x: Tensor) -> Tensor:
        t = x.permute(0, 2, 1, 3).flatten(2)  # [B, 8 rows, cin * 8]
        t = t + self.fc2(self.a1(t))
        t = t + self.fc4(gated(self.a2, self.a2(self.norm(t))))
        return self.head(t.flatten(1))


class Conv1dNet(nn.Module):
    """``[B, cin, 8, 8]`` → ``[B, cin·8, 8]`` → Conv1d → gate → (BatchNorm) → Conv1d → gate → head."""

    def __init__(self, c: int, stages: list[Stage], bn: bool) -> None:
        super().__init__()
        self.a1 = stages[0]
        self.bn = nn.BatchNorm1d(c) if bn else nn.Identity()
        self.a2 = stages[1]
        self.head = nn.Linear(c * 8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn(self.a1(x.flatten(1, 2)))
        return self.head(gated(self.a2, self.a2(h)).flatten(1))


class ConvNet(nn.Module):
    """stem + gate ``a1`` → (BatchNorm after the gate) → conv + gate ``a2`` (``h + a2(h)`` if residual) → head."""

    def __init__(self, c: int, stages: list[Stage], bn: bool, residual: bool) -> None:
        super().__init__()
        self.a1 = stages[0]
        self.bn = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.a2 = stages[1]
        self.residual = residual
        self.head = nn.Linear(c * 64, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn(self.a1(x))
        g = gated(self.a2, self.a2(h))
        return self.head((h + g if self.residual else g).flatten(1))


class Normalized(nn.Module):
    """``model((x - mean) / std)``: an input-normalization module in front of the model."""

    def __init__(self, model: nn.Module, cin: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, cin, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, cin, 1, 1), 0.25))
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


class Float64(nn.Module):
    """A float64 model casting its float32 input first (README: models that are not float32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.double()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(torch.float64))


def stage(rng: random.Random, layer: nn.Module, grouping: str, root: bool) -> Stage:
    where = rng.choice(["module", "module", "inline"] + (["root"] if root else []))
    pool = isinstance(layer, nn.Conv1d) and rng.random() < 0.15
    method = "pool1d" if pool else rng.choice(METHODS)
    return Stage(layer, KGate(method, "spatial" if pool else grouping, rng.choice([0.2, 0.25, 0.5])), where)


def build(seed: int) -> tuple[nn.Module, torch.Tensor, list[str], str]:
    rng = random.Random(seed)
    body, cin = rng.choice(["token", "conv1d", "conv", "conv"]), rng.choice([1, 3])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if body == "token":
            d, hidden = cin * 8, rng.choice([16, 32])
            stages = [stage(rng, nn.Linear(d, hidden), rng.choice(["token", "tokens"]), False),
                      stage(rng, nn.Linear(d, hidden), rng.choice(["token", "tokens"]), True)]
            net: nn.Module = TokenMLP(cin, hidden, stages)
        elif body == "conv1d":
            c = rng.choice([8, 12])
            stages = [stage(rng, nn.Conv1d(cin * 8, c, 3, padding=1), rng.choice(["sample", "channel"]), False),
                      stage(rng, nn.Conv1d(c, c, 3, padding=1), rng.choice(["sample", "channel"]), True)]
            net = Conv1dNet(c, stages, rng.random() < 0.4)
        else:
            c = rng.choice([4, 6, 8])
            groupings = ["sample", "spatial", "channel"]
            stages = [stage(rng, nn.Conv2d(cin, c, 3, padding=1), rng.choice(groupings), False),
                      stage(rng, nn.Conv2d(c, c, 3, padding=1), rng.choice(groupings), True)]
            net = ConvNet(c, stages, rng.random() < 0.5, rng.random() < 0.5)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(rng.choice([4, 6, 8]), cin, 8, 8, generator=torch.Generator().manual_seed(seed))
    sites = [s.site(n) for s, n in zip(stages, ["a1", "a2"])]
    desc = [f"seed={seed} {body} cin={cin}"] + [f"{s.where}:{s.gate.method if s.where == 'module' else s.spec}"
                                                 + (f"/{s.gate.grouping}/{s.gate.ratio}" if s.where == "module" else "")
                                                 for s in stages]
    desc += [f"bn={not isinstance(getattr(net, 'bn', None), nn.Identity)}", f"res={getattr(net, 'residual', '')}"]
    if rng.random() < 0.3:
        net, sites = Normalized(net, cin), [f"model.{s}".rstrip(".") for s in sites]
        desc.append("normalized")
    if rng.random() < 0.2:
        net, sites = Float64(net), [f"model.{s}".rstrip(".") for s in sites]
        desc.append("float64")
    if rng.random() < 0.15:
        net, sites = nn.DataParallel(net), [f"module.{s}".rstrip(".") for s in sites]
        desc.append("DataParallel")
    return net.eval(), x, sites, " ".join(desc)
