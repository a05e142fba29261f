"""The groupings a top-k gate selects within, and the reshaping to one row per group.

A gate keeps the ``k`` largest units of each group (Xiao et al., ICLR 2020: ``volume`` over a sample's whole
activation volume, ``channel`` within each channel's map, ``local`` across the channels at each location; Ahmad &
Scheinkman 2019: ``dense`` over a layer's units); ``row`` per row of a feature map; ``"block-<U>"`` within blocks of
``U`` consecutive channels at each location (local winner-take-all, Srivastava et al. 2013); ``whole-channel`` ranks
channel statistics (:func:`attacks.gates.channel_statistic`). :func:`group_rows` turns ``[N, ...]`` into ``[G, S]``,
one row per group, and :func:`ungroup_rows` back; :mod:`attacks.gates` reads and relaxes gates on those rows. This
module never imports ``kwta_robust``.
"""

from __future__ import annotations

import torch
from torch import Tensor

GROUPINGS: tuple[str, ...] = ("dense", "volume", "row", "channel", "local", "whole-channel", "block-<U>")
#: Prefix of the block groupings, ``"block-<U>"`` with ``U >= 2`` units per block (:func:`block_size`).
BLOCK_PREFIX = "block-"


def candidate_groupings(ndim: int) -> tuple[str, ...]:
    """Groupings to try for a tensor of ``ndim`` dims, finest first (a per-channel gate also has a constant count
    per sample, so the finer grouping must be tried first; a gate keeping whole channels has a constant count at
    every location too, so it comes before ``"local"``; a per-row gate has a constant count per channel, so
    ``"row"`` comes before ``"channel"`` — on ``[N, C, L]`` a row is a channel, so it is tried from 4 dims)."""
    if ndim < 2:
        return ()
    if ndim == 2:
        return ("dense",)
    return ("whole-channel",) + (("row",) if ndim >= 4 else ()) + ("channel", "local", "volume")


def block_size(grouping: str) -> int | None:
    """``U`` of a ``"block-<U>"`` grouping (``U >= 2``), else ``None``."""
    suffix = grouping[len(BLOCK_PREFIX):] if grouping.startswith(BLOCK_PREFIX) else ""
    return int(suffix) if suffix.isascii() and suffix.isdigit() and int(suffix) >= 2 else None  # not "block-²"


def block_groupings(shape: tuple[int, ...] | torch.Size) -> tuple[str, ...]:
    """The ``"block-<U>"`` groupings of a tensor of ``shape`` ``[N, U·B, ...]``, finest first: every ``U`` dividing
    dim 1 into at least two blocks (one block is ``"dense"`` or ``"local"``)."""
    units = int(shape[1]) if len(shape) >= 2 else 0
    return tuple(f"{BLOCK_PREFIX}{u}" for u in range(2, units // 2 + 1) if units % u == 0)


def group_rows(t: Tensor, grouping: str) -> Tensor:
    """``[N, ...]`` → ``[G, S]``: one row per group of ``grouping`` (see the module docstring)."""
    if grouping in ("dense", "volume"):
        return t.flatten(1)
    u = block_size(grouping)
    if u is not None:
        if t.ndim < 2 or t.shape[1] % u:
            raise ValueError(f"grouping {grouping!r} needs dim 1 a multiple of {u}, got shape {tuple(t.shape)}")
        return t.reshape(t.shape[0], t.shape[1], -1).transpose(1, 2).reshape(-1, u)
    if t.ndim < 3:
        raise ValueError(f"grouping {grouping!r} needs [N, C, ...] inputs, got shape {tuple(t.shape)}")
    if grouping == "row":
        return t.reshape(-1, t.shape[-1])
    flat = t.flatten(2)  # [N, C, L]
    if grouping == "channel":
        return flat.reshape(-1, flat.shape[2])
    if grouping == "local":
        return flat.transpose(1, 2).reshape(-1, flat.shape[1])
    if grouping == "whole-channel":
        raise ValueError("grouping 'whole-channel' ranks channel statistics (channel_statistic), not elements")
    raise ValueError(f"unknown grouping {grouping!r}; use one of {', '.join(GROUPINGS)}")


def ungroup_rows(rows: Tensor, like: Tensor, grouping: str) -> Tensor:
    """Inverse of :func:`group_rows`: ``[G, S]`` back to the shape of ``like``."""
    if grouping in ("dense", "volume", "row", "channel"):
        return rows.reshape(like.shape)
    n, c = like.shape[0], like.shape[1]  # "local" and "block-<U>": rows run along dim 1 at each location
    return rows.reshape(n, -1, c).transpose(1, 2).reshape(like.shape)


def per_unit(values: Tensor, x: Tensor) -> Tensor:
    """``values`` ``[U]``, one per unit along dim 1 of ``x`` ``[N, U, ...]`` (a feature or a channel), expanded to
    ``x``'s shape."""
    return values.view([1, -1] + [1] * (x.ndim - 2)).expand(x.shape)
