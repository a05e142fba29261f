"""Losses on low-precision logits (float16, bfloat16): what the attacks compute them in.

A model evaluated in half precision (``model.half()`` with its input cast, ``torch.autocast`` inside ``forward``,
logits returned as ``.half()``) hands the attacks float16 or bfloat16 logits ``[N, C]``. Losses taken in that
precision mask gradients (Carlini et al. 2019, "On Evaluating Adversarial Robustness", §5: vanishing gradients):

* cross-entropy's gradient ``softmax(z) - onehot(y)`` rounds to zero in float16 once the margin exceeds about 17
  (``p_j`` below half its smallest subnormal 6e-8; the true class's ``p_y - 1`` is 0 from about 9, ``1 - p_y``
  below float16's resolution near 1), so PGD-CE and FGSM stand still on every confident sample;
* DLR's ``+ 1e-12`` is 0 in float16, so tied logits (``z_(1) = z_(3)``, frequent at 8 or 11 mantissa bits) divide
  by zero; a margin of two float16 logits near 65504 overflows.

:func:`loss_logits` upcasts them to float32 (the same values) before any loss, and float32 and float64 logits are
returned unchanged (the same tensor: no float32 number moves). For the sign- and direction-following attacks (PGD,
FGSM, APGD) it can also rescale each sample's gradient on its way back into the float16 network by a power of two
(:func:`_unit_rows`), so the cast back does not flush it to zero: the direction of every sample's input gradient is
unchanged (a per-sample positive factor; exact, being a power of two). EOT and gradient estimation take their losses
in float32 but are not rescaled (a factor per draw would reweight the draws' average), so a float16 network's backward
can still flush their gradients: the ``low-precision`` flag says to evaluate in float32. This package never imports
``kwta_robust``.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The smallest power-of-two exponent a row is scaled by (2**126 stays finite in float32).
_MIN_EXPONENT = -126


def is_low_precision_dtype(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is a floating-point type narrower than float32 (float16, bfloat16, float8)."""
    return dtype.is_floating_point and dtype.itemsize < 4


def is_low_precision(t: Tensor) -> bool:
    """Whether ``t`` is a floating-point tensor narrower than float32 (:func:`is_low_precision_dtype`)."""
    return is_low_precision_dtype(t.dtype)


def sum_tolerance(dtype: torch.dtype, atol: float) -> float:
    """How far from 1 the float32 row sums of probabilities stored in ``dtype`` may be: ``atol``, or for float16 /
    bfloat16 a few of their epsilons if that is more (each entry is rounded; bfloat16's epsilon is 7.8e-3)."""
    return max(atol, 8 * torch.finfo(dtype).eps) if is_low_precision_dtype(dtype) else atol


def loss_logits(logits: Tensor, rescale: bool = False) -> Tensor:
    """``logits`` ``[N, C]`` for a loss: float16/bfloat16 ones as float32 (same values), others unchanged (the same
    tensor). With ``rescale`` (only for attacks that follow each sample's gradient *direction*: sign or L2-normalized
    steps) each row of the loss's gradient w.r.t. the logits is brought to a largest entry in [0.5, 1) by a power of
    two on the way back (:func:`_unit_rows`), so a float16 network's backward does not flush it to zero."""
    if not is_low_precision(logits):
        return logits
    up = logits.float()
    if rescale and up.requires_grad:
        up.register_hook(_unit_rows)
    return up


def _unit_rows(grad: Tensor) -> Tensor:
    """``grad`` ``[N, C]`` with each row multiplied by the power of two that puts its largest |entry| in [0.5, 1)
    (all-zero rows unchanged): per sample a positive factor, so the direction of that sample's input gradient is
    the same, and exact (no rounding); only the float16 cast after it no longer underflows."""
    peak = grad.abs().amax(dim=1, keepdim=True)
    _, exponent = torch.frexp(peak)  # peak = mantissa * 2**exponent, mantissa in [0.5, 1)
    scale = torch.ldexp(torch.ones_like(peak), -exponent.clamp(min=_MIN_EXPONENT))
    return torch.where(peak > 0, grad * scale, grad)
