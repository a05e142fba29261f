"""Seeded random kWTA models in the styles users write (test support of tests/test_fuzz46_fixed_seeds.py; the
wild-model fuzzer that found the bugs those seeds pin ran many more seeds of :func:`build` outside the suite).

``build(seed)`` → ``(model, x, sites, description)``: a small CNN ``[N, 1 or 3, 8, 8] → [N, 3 or 5]`` (conv →
optional BatchNorm → gate ``a1`` → conv → optional BatchNorm → gate ``a2`` → linear) or MLP, its gates drawn
from module top-k (``topk`` / ``kthvalue`` / ``sort`` / ``quantile`` thresholds or a scattered mask, per sample,
channel, location or volume, optionally on a quantized score), inline top-k in a block's ``forward`` or the
model's own, LWTA by ``max``/``amax`` over blocks of 2 channels, max-pool winner-take-all
(``h == max_pool2d(h, 3, 1, 1)``) and max-unpool codes, a global adaptive max-pool gate, quantized activations,
gates zeroing losers in place, a top-k over the whole batch, a ReLU before the gate, two gates in one module,
gates in custom ``autograd.Function``s, nupic-like k-winners with boosting and duty cycles, a gate module shared
by both sites or called with a keyword; ``sites`` the module names (``""``: the model's own ``forward``) holding
a gate. Untrained, seeded; the global RNG is left as it was."""

from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wild_kwta_models import MaskedKwta, STEKwta, update_duty_cycle

METHODS = ["topk", "kthvalue", "sort", "quantile", "topk_scatter"]
GROUPS = ["sample", "channel", "local", "volume"]


def _grouped(h: Tensor, grouping: str) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    b, c, hh, ww = h.shape
    if grouping in ("sample", "volume"):
        return h.reshape(b, -1), lambda f: f.reshape(b, c, hh, ww)
    if grouping == "channel":
        return h.reshape(b, c, hh * ww), lambda f: f.reshape(b, c, hh, ww)
    # local: over channels at each location
    return h.permute(0, 2, 3, 1).reshape(b, hh, ww, c), lambda f: f.permute(0, 3, 1, 2)


def topk_gate(h: Tensor, method: str, grouping: str, ratio: float, quant: float = 0.0) -> Tensor:
    f, back = _grouped(h, grouping)
    score = torch.round(f * quant) / quant if quant else f
    n = f.shape[-1]
    k = max(1, int(ratio * n))
    if method == "topk":
        t = score.topk(k, dim=-1).values[..., -1:]
        mask = score >= t
    elif method == "kthvalue":
        t = score.kthvalue(n - k + 1, dim=-1, keepdim=True).values
        mask = score >= t
    elif method == "sort":
        t = score.sort(dim=-1, descending=True).values[..., k - 1:k]
        mask = score >= t
    elif method == "quantile":
        t = torch.quantile(score, 1 - ratio, dim=-1, keepdim=True)
        mask = score >= t
    else:
        mask = torch.zeros_like(score).scatter(-1, score.topk(k, dim=-1).indices, 1.0) > 0
    return back(f * mask.to(f.dtype))


def lwta(h: Tensor, block: int, how: str) -> Tensor:
    b, c, hh, ww = h.shape
    v = h.view(b, c // block, block, hh, ww)
    m = v.amax(2, keepdim=True) if how == "amax" else torch.max(v, 2, keepdim=True).values
    return (v * (v == m).to(v.dtype)).view_as(h)


def pool_max(h: Tensor) -> Tensor:
    return h * (h == F.max_pool2d(h, 3, 1, 1)).to(h.dtype)


def max_unpool(h: Tensor) -> Tensor:
    return F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2, output_size=h.shape[-2:])


def global_max(h: Tensor) -> Tensor:
    return h * (h == F.adaptive_max_pool2d(h, 1)).to(h.dtype)


class Gate(nn.Module):
    """A leaf gate module: ``spec`` picks the style."""

    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, h: Tensor) -> Tensor:
        return apply(self.spec, h)


def apply(spec: dict, h: Tensor) -> Tensor:
    s = spec["style"]
    if s == "topk":
        return topk_gate(h, spec["method"], spec["grouping"], spec["ratio"], spec.get("quant", 0.0))
    if s == "lwta":
        return lwta(h, spec["block"], spec["how"])
    if s == "pool":
        return pool_max(h)
    if s == "unpool":
        return max_unpool(h)
    if s == "global":
        return global_max(h)
    if s == "fn":
        return (STEKwta if spec["fn"] == "ste" else MaskedKwta).apply(h, max(1, int(spec["ratio"] * h[0].numel())))
    if s == "inplace":
        f = h.flatten(1)
        t = f.topk(max(1, int(spec["ratio"] * f.shape[1])), dim=1).values[:, -1:]
        if spec["how"] == "index":
            h[(f < t).view_as(h)] = 0
            return h
        return h.masked_fill_((f < t).view_as(h), 0.0) if spec["how"] == "fill_" else h.mul_((f >= t).view_as(h))
    if s == "batch":
        f = h.flatten()
        return h * (h >= f.topk(max(1, int(spec["ratio"] * f.numel()))).values[-1]).to(h.dtype)
    if s == "relu_first":
        return apply(spec["inner"], torch.relu(h))
    if s == "where":
        f = h.flatten(1)
        t = f.sort(dim=1).values[:, -max(1, int(spec["ratio"] * f.shape[1]))].unsqueeze(1)
        return torch.where(f >= t, f, 0.0).view_as(h)
    if s == "quantized":
        q = torch.round(h * spec["q"]) / spec["q"]
        return topk_gate(q, "topk", spec["grouping"], spec["ratio"])
    if s == "dense_topk":
        k = max(1, int(spec["ratio"] * h.shape[1]))
        return h * (h >= h.topk(k, dim=1).values[:, -1:]).to(h.dtype)
    if s == "dense_lwta":
        v = h.view(h.shape[0], -1, 2)
        return (v * (v == v.amax(2, keepdim=True)).to(v.dtype)).view_as(h)
    if s == "two":
        return apply(spec["second"], apply(spec["first"], h))
    raise ValueError(s)


class KWinnersLike(nn.Module):
    """nupic-like KWinners2d with boosting and duty cycles (own look-alike)."""

    def __init__(self, channels: int, percent_on: float, boost: float, local: bool) -> None:
        super().__init__()
        self.percent_on, self.boost_strength, self.local = percent_on, boost, local
        self.register_buffer("duty_cycle", torch.zeros(1, channels, 1, 1))
        self.register_buffer("learning_iterations", torch.tensor(0))

    def forward(self, x: Tensor) -> Tensor:
        boosted = (x * torch.exp((self.percent_on - self.duty_cycle) * self.boost_strength)).detach()
        if self.local:
            k = max(1, int(round(self.percent_on * x.shape[1])))
            idx = boosted.topk(k, dim=1).indices
            mask = torch.zeros_like(x, dtype=torch.bool).scatter_(1, idx, True)
        else:
            k = max(1, int(round(self.percent_on * x[0].numel())))
            flat = boosted.reshape(x.shape[0], -1)
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1)[1], True).view_as(x)
        out = x.masked_fill(~mask, 0)
        if self.training:
            update_duty_cycle(self, out)
        return out


class Inline(nn.Module):
    """A block with a conv and the gate inline in its own forward (optionally residual)."""

    def __init__(self, c: int, spec: dict, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.spec, self.residual = spec, residual

    def forward(self, x: Tensor) -> Tensor:
        h = apply(self.spec, self.conv(x))
        return x + h if self.residual else h


def random_spec(rng: random.Random, c: int, allow_two: bool = True) -> dict:
    style = rng.choice(["topk"] * 4 + ["lwta", "pool", "unpool", "global", "fn", "quantized", "inplace", "batch",
                                         "relu_first", "where"]
                       + (["two"] if allow_two else []))
    if style == "inplace":
        return {"style": "inplace", "how": rng.choice(["index", "fill_", "mul_"]), "ratio": rng.choice([0.2, 0.5])}
    if style == "batch":
        return {"style": "batch", "ratio": 0.25}
    if style == "relu_first":
        return {"style": "relu_first", "inner": random_spec(rng, c, False)}
    if style == "where":
        return {"style": "where", "ratio": rng.choice([0.1, 0.3])}
    if style == "quantized":
        return {"style": "quantized", "q": rng.choice([2.0, 4.0]), "grouping": rng.choice(["volume", "channel"]),
                "ratio": rng.choice([0.2, 0.5])}
    if style == "topk":
        spec = {"style": "topk", "method": rng.choice(METHODS), "grouping": rng.choice(GROUPS),
                "ratio": rng.choice([0.2, 0.25, 0.5])}
        if spec["grouping"] == "local" and spec["ratio"] * c < 1:
            spec["ratio"] = 0.5
        if rng.random() < 0.25:
            spec["quant"] = rng.choice([2.0, 4.0])
        return spec
    if style == "lwta":
        return {"style": "lwta", "block": 2, "how": rng.choice(["amax", "max"])}
    if style == "fn":
        return {"style": "fn", "fn": rng.choice(["ste", "masked"]), "ratio": rng.choice([0.2, 0.3])}
    if style == "two":
        return {"style": "two", "first": random_spec(rng, c, False), "second": random_spec(rng, c, False)}
    return {"style": style}


class Net(nn.Module):
    def __init__(self, cin: int, c: int, stages: list[nn.Module], bns: list[bool], classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cin, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c) if bns[0] else nn.Identity()
        self.a1 = stages[0]
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c) if bns[1] else nn.Identity()
        self.a2 = stages[1]
        self.head = nn.Linear(c * 64, classes)

        self.root_spec, self.shared, self.keyword = None, False, False

    def forward(self, x: Tensor) -> Tensor:
        h = self.a1(self.bn0(self.stem(x)))
        h = self.bn1(self.conv2(h))
        if self.root_spec is not None:
            h = apply(self.root_spec, h)
        elif self.shared:
            h = self.a1(h)
        elif self.keyword:
            h = self.a2(h=h) if not isinstance(self.a2, (Inline, KWinnersLike)) else self.a2(x=h)
        else:
            h = self.a2(h)
        return self.head(h.flatten(1))


class Dense(nn.Module):
    def __init__(self, cin: int, width: int, specs: list, bn: bool, classes: int, inline: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin * 64, width)
        self.bn = nn.BatchNorm1d(width) if bn else nn.Identity()
        self.a1 = Gate(specs[0])
        self.fc2 = nn.Linear(width, width)
        self.a2 = Gate(specs[1])
        self.head = nn.Linear(width, classes)
        self.inline, self.spec2 = inline, specs[1]

    def forward(self, x: Tensor) -> Tensor:
        h = self.a1(self.bn(self.fc1(x.flatten(1))))
        h = self.fc2(h)
        return self.head(apply(self.spec2, h) if self.inline else self.a2(h))


def stage(rng: random.Random, c: int) -> tuple[nn.Module, str]:
    r = rng.random()
    if r < 0.15:
        return KWinnersLike(c, rng.choice([0.2, 0.25]), rng.choice([0.0, 1.0, 1.5]), rng.random() < 0.3), "kwinners"
    spec = random_spec(rng, c)
    if r < 0.35:
        return Inline(c, spec, rng.random() < 0.5), f"inline:{spec}"
    if r < 0.42:
        return nn.ReLU(), "relu"
    return Gate(spec), f"gate:{spec}"


def dense_spec(rng: random.Random) -> dict:
    r = rng.random()
    if r < 0.4:
        return {"style": "dense_topk", "ratio": rng.choice([0.1, 0.25, 0.5])}
    if r < 0.6:
        return {"style": "dense_lwta"}
    if r < 0.8:
        return {"style": "fn", "fn": rng.choice(["ste", "masked"]), "ratio": 0.25}
    return {"style": "two", "first": {"style": "dense_topk", "ratio": 0.5}, "second": {"style": "dense_lwta"}}


def build_dense(seed: int, rng: random.Random) -> tuple[nn.Module, Tensor, list[str], str]:
    cin, width = rng.choice([1, 3]), rng.choice([16, 32])
    specs, bn, inline = [dense_spec(rng), dense_spec(rng)], rng.random() < 0.4, rng.random() < 0.3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Dense(cin, width, specs, bn, rng.choice([3, 5]), inline)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(rng.choice([4, 6, 8]), cin, 8, 8, generator=torch.Generator().manual_seed(seed))
    train = rng.random() < 0.1
    net.train(train)
    sites = ["a1", "" if inline else "a2"]
    return net, x, sites, f"seed={seed} DENSE cin={cin} w={width} bn={bn} train={train} inline={inline} {specs}"


def build(seed: int) -> tuple[nn.Module, Tensor, list[str], str]:
    rng = random.Random(seed)
    if rng.random() < 0.25:
        return build_dense(seed, rng)
    cin, c = rng.choice([1, 3]), rng.choice([4, 6, 8])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        s1, d1 = stage(rng, c)
        s2, d2 = stage(rng, c)
        bns = [rng.random() < 0.4, rng.random() < 0.4]
        net = Net(cin, c, [s1, s2], bns, rng.choice([3, 5]))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.rand(rng.choice([4, 6, 8]), cin, 8, 8, generator=torch.Generator().manual_seed(seed))
    extra = rng.random()
    if extra < 0.1:
        net.shared = True
        d2 = "shared-a1"
    elif extra < 0.17 and d2 != "relu":
        net.keyword = True
        d2 = "keyword:" + d2
    root = rng.random() < 0.15 and not net.shared
    if root and d2 != "relu":
        net.root_spec = random_spec(rng, c)
        d2 = f"root:{net.root_spec}"
    train = rng.random() < 0.1
    net.train(train)
    if any(isinstance(m, KWinnersLike) for m in net.modules()) and rng.random() < 0.5:
        with torch.no_grad():  # warm duty cycles so boosting matters
            net.train(True)
            net(x)
            net.train(train)
    sites = [n for n, d in (("a1", d1), ("" if root and d2 != "relu" else "a2", d2)) if d != "relu"]
    if net.shared:
        sites = ["a1"] if d1 != "relu" else []
    return net, x, sites, f"seed={seed} cin={cin} c={c} bn={bns} train={train} a1={d1} a2={d2}"
