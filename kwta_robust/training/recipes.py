"""The named recipes of a training config: optimizers, learning-rate schedules and augmentations, each a table
keyed by the names :mod:`kwta_robust.training.config` allows (``optimizer``, ``schedule``, ``augment``)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kwta_robust.training.config import TrainConfig

#: ``optimizer`` → ``(parameters, cfg, lr) -> torch.optim.Optimizer``.
OPTIMIZERS: dict[str, Callable[[Any, TrainConfig, float], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg, lr: torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
    "adam": lambda params, cfg, lr: torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay),
    "adamw": lambda params, cfg, lr: torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay),
}

#: Learning-rate multiplier as a function of training progress ``p`` in [0, 1) (updated every step).
SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "constant": lambda p, cfg: 1.0,
    "cosine": lambda p, cfg: 0.5 * (1.0 + math.cos(math.pi * p)),
    "step": lambda p, cfg: cfg.gamma ** sum(p >= m for m in cfg.milestones),
}


def _translate(x: Tensor, gen: torch.Generator, pad: int, flip: bool) -> Tensor:
    """Random translation by up to ``pad`` pixels per axis (zero fill) and, if ``flip``, a random horizontal flip;
    independently per sample, batched: ``[N, C, H, W] → [N, C, H, W]``."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows, cols]
    if flip:
        mirrored = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(mirrored[:, None, None, None], out.flip(3), out)
    return out


#: ``augment`` → ``(x, generator) -> x`` applied to every training batch (inputs stay in [0, 1]).
AUGMENTATIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "none": lambda x, gen: x,
    "shift": lambda x, gen: _translate(x, gen, pad=2, flip=False),  # digits: ±2 pixels
    "crop-flip": lambda x, gen: _translate(x, gen, pad=4, flip=True),  # CIFAR: 4-pixel pad-and-crop + flip
}
