"""Shared by the literature's architectures: input normalization that adds nothing to the state_dict."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from kwta_robust.models.registry import Normalize


def input_normalization(channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Module | None:
    """``(x - mean) / std`` with non-persistent buffers (the released checkpoints have no such entries), or
    ``None`` when neither is given (the original network sees the inputs as they come)."""
    if mean is None and std is None:
        return None
    return Normalize(channels, mean, std, persistent=False)

