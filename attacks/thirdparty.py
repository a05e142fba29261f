"""Showing any model of this package's interface as a classifier of ``[0, 1]``-valued 4-D images.

Image-based attack code hard-codes inputs in ``[0, 1]`` and indexes 4-D ``[N, C, H, W]`` batches (foolbox's
HopSkipJump and Boundary, :mod:`attacks.blackbox`; the Square attack's windows, :mod:`attacks.square`, need square
images): :class:`UnitInputView` shows the model that way, for any input shape and bounds.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class UnitInputView(nn.Module):
    """Shows ``model`` to image-based attack code as a classifier of ``[0, 1]``-valued 4-D inputs.

    ``layout="4d"``: NCHW inputs unchanged, other shapes viewed as ``[N, 1, 1, D]``.
    ``layout="square"``: ``[N, C, S, S]`` with ``S = max(H, W, min_side)`` (images zero-padded at the bottom/right,
    non-image inputs flattened and zero-padded to ``S*S``); the padding never reaches the model (Square attack
    samples square windows, so it needs square images of side >= 5 for L2). Under L2 the padding shares the
    budget, so the attack can only be weaker there, never leave the ball.
    Bounds ``(lo, hi)`` map affinely to ``[0, 1]``; ``eps`` scales by ``1 / (hi - lo)`` (:meth:`view_eps`).
    ``dtype`` (if given) is the dtype the model receives; logits come back in the dtype of the view's inputs.
    """

    def __init__(
        self, model: nn.Module, sample_shape: tuple[int, ...], bounds: tuple[float, float],
        layout: Literal["4d", "square"] = "4d", min_side: int = 1, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.sample_shape = tuple(sample_shape)
        self.lo, self.hi = float(bounds[0]), float(bounds[1])
        self.layout = layout
        image = len(self.sample_shape) == 3
        dim = math.prod(self.sample_shape)
        if layout == "4d":
            self.view_shape = self.sample_shape if image else (1, 1, dim)
        elif image:
            c, h, w = self.sample_shape
            self.view_shape = (c, max(h, w, min_side), max(h, w, min_side))
        else:
            side = max(math.isqrt(dim - 1) + 1 if dim > 1 else 1, min_side)
            self.view_shape = (1, side, side)
        #: bounds [0, 1] and the model's own layout: the view is the identity (the affine map would be exact too)
        self.identity = (self.lo, self.hi) == (0.0, 1.0) and tuple(self.view_shape) == self.sample_shape
        self.training = False  # the wrapper itself never switches the wrapped model to train mode

    def view_eps(self, eps: float) -> float:
        return eps / (self.hi - self.lo)

    def to_view(self, x: Tensor) -> Tensor:
        unit = (x - self.lo) / (self.hi - self.lo)
        n = x.shape[0]
        if self.layout == "4d" or tuple(self.view_shape) == self.sample_shape:
            return unit.reshape(n, *self.view_shape)
        if len(self.sample_shape) == 3:
            _, h, w = self.sample_shape
            side = self.view_shape[1]
            return F.pad(unit, (0, side - w, 0, side - h))
        flat = unit.reshape(n, -1)
        return F.pad(flat, (0, math.prod(self.view_shape) - flat.shape[1])).reshape(n, *self.view_shape)

    def from_view(self, v: Tensor) -> Tensor:
        n = v.shape[0]
        if self.layout == "4d" or tuple(self.view_shape) == self.sample_shape:
            unit = v.reshape(n, *self.sample_shape)
        elif len(self.sample_shape) == 3:
            _, h, w = self.sample_shape
            unit = v[:, :, :h, :w]
        else:
            unit = v.reshape(n, -1)[:, : math.prod(self.sample_shape)].reshape(n, *self.sample_shape)
        return self.lo + unit * (self.hi - self.lo)

    def forward(self, v: Tensor) -> Tensor:
        if self.identity and (self.dtype is None or v.dtype == self.dtype):  # nothing to undo: no extra passes
            return self.model(v)
        x = self.from_view(v)
        return self.model(x if self.dtype is None else x.to(self.dtype)).to(v.dtype)

