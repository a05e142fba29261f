"""The smooth kWTA relaxation (kwta_robust.layers.smooth_kwta, BPDA's 'smooth' surrogate) against a per-group loop:
``x · sigmoid((s - t) / (T · std(s)))``, ``t`` midway between the k-th and (k+1)-th largest score of the group and
``std`` the group's population std."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from kwta_robust.layers import smooth_kwta


def by_hand(x: Tensor, s: Tensor, k: int, temperature: float) -> Tensor:
    """The relaxation of one group (any shape, flattened)."""
    top = s.flatten().sort(descending=True).values
    mid = (top[k - 1] + top[k]) / 2
    std = math.sqrt(float(((s - s.mean()) ** 2).mean()))
    return x * torch.sigmoid((s - mid) / (temperature * std))


@pytest.mark.parametrize("mode", ["dense", "volume", "channel", "local"])
def test_smooth_kwta_is_the_per_group_formula(mode: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    s = torch.randn(2, 3, 4, 4, generator=gen)  # scores other than the values: the gate multiplies x, not s
    k, temperature = 2, 0.3
    expected = torch.empty_like(x)
    for n in range(2):
        if mode in ("dense", "volume"):
            expected[n] = by_hand(x[n], s[n], k, temperature)
        elif mode == "channel":  # per channel, over the 16 locations
            for c in range(3):
                expected[n, c] = by_hand(x[n, c], s[n, c], k, temperature)
        else:  # local: per location, over the 3 channels
            for i in range(4):
                for j in range(4):
                    expected[n, :, i, j] = by_hand(x[n, :, i, j], s[n, :, i, j], k, temperature)
    got = smooth_kwta(x.flatten(1), k, mode, temperature, s.flatten(1)).view_as(x) if mode == "dense" else \
        smooth_kwta(x, k, mode, temperature, s)
    assert torch.allclose(got, expected, atol=1e-6)
