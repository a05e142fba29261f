"""nupic.torch-style layers (Ahmad & Scheinkman, *How Can We Be So Dense? The Benefits of Using Highly Sparse
Representations*, 2019; github.com/numenta/nupic.torch ``modules/k_winners.py``, ``modules/sparse_weights.py``),
rebuilt from their description with the same buffers, so nupic.torch checkpoints load into them.

**KWinners / KWinners2d.** Winners are chosen on boosted scores ``x · exp(-β · duty_cycle)`` (the paper's
``exp(β (target − duty_cycle))`` up to a positive factor, so the same ranking), the outputs are the unboosted
``x``, losers are set to 0 (``masked_fill``). Without ``break_ties`` every unit whose boosted score is ``>=`` the
k-th largest wins (ties all kept); with it exactly k win (``topk``'s choice among ties); ``relu=True`` also switches
off units whose boosted score is below 0 (``<= 0`` with ``break_ties``). Boosting applies in eval mode too: the
loaded duty cycles change which units win.

k rules (as nupic.torch): ``KWinners(n)``: ``k = round(n · percent_on)``, eval ``k = int(k · k_inference_factor)``;
``KWinners2d`` global (``local=False``, over C·H·W of each sample): ``k = round(n · percent_on)``, eval
``k = round(n · percent_on · k_inference_factor)``; local (over the C channels at each position): the same with
``n = C``. ``round`` is Python's (half to even). nupic.torch fixes a global layer's n at its first forward; here
it is read from every input, which is the same for inputs of one size. A ``KWinners`` whose eval k exceeds n
(small n, e.g. n = 2, percent_on 0.3, k_inference_factor 3) is refused when built; nupic.torch fails at its
first eval-mode forward.

State (the state_dict keys): ``boost_strength`` (0-d float buffer; its value is cached as a Python float on
load, as nupic.torch does), ``duty_cycle`` (``[n]`` for KWinners, ``[1, C, 1, 1]`` for KWinners2d). Duty cycles
update only in train mode: ``dc ← (dc · (period − B) + active) / period`` with ``period = min(duty_cycle_period,
samples seen)`` (2-D: active counts divided by H·W). :meth:`KWinnersBase.update_boost_strength` multiplies β by
``boost_strength_factor`` (nupic.torch calls it once per epoch).

**SparseWeights / SparseWeights2d** wrap a ``Linear`` / ``Conv2d`` as ``.module`` with a ``zero_mask`` buffer
(float16, the weight's shape; 1 marks a weight held at zero, ``round((1 − sparsity) · fan_in)`` non-zeros per
output unit). The forward is the wrapped layer's; :meth:`SparseWeightsBase.rezero_weights` re-applies the mask
(nupic.torch calls it after every optimizer step). New masks are drawn from a ``torch.Generator`` seeded with
``seed`` (nupic.torch draws them from NumPy's global generator); a loaded checkpoint replaces them.

These modules do not implement the BPDA protocol themselves: they are "foreign" top-k gates as a user's own
nupic.torch network would have them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _winners(x: Tensor, scores: Tensor, k: int, dim_size: int, break_ties: bool, relu: bool, inplace: bool) -> Tensor:
    """Keep ``x`` where ``scores`` (``[N, G]`` groups along dim 1, or ``[N, C, H, W]`` with groups along dim 1)
    is among the k largest of its group; zero elsewhere."""
    if k == 0:
        return torch.zeros_like(x)
    if break_ties:
        indices = scores.topk(k=k, dim=1, sorted=False)[1]
        off = torch.ones_like(scores, dtype=torch.bool)
        off.scatter_(1, indices, False)
        if relu:
            off.logical_or_(scores <= 0)
    else:
        threshold = scores.kthvalue(dim_size - k + 1, dim=1, keepdim=True)[0]
        if relu:
            threshold.clamp_(min=0)
        off = scores < threshold
    return x.masked_fill_(off, 0) if inplace else x.masked_fill(off, 0)


class KWinnersBase(nn.Module):
    """Shared settings and state of :class:`KWinners` and :class:`KWinners2d` (see the module docstring)."""

    describes_as_kwta = True  # models.describe_model lists these with the package's kWTA layers
    mode = "dense"

    def __init__(self, percent_on: float, k_inference_factor: float = 1.0, boost_strength: float = 1.0,
                 boost_strength_factor: float = 1.0, duty_cycle_period: int = 1000) -> None:
        super().__init__()
        if boost_strength < 0.0:
            raise ValueError(f"KWinners: boost_strength must be >= 0, got {boost_strength}")
        if not 0.0 <= boost_strength_factor <= 1.0:
            raise ValueError(f"KWinners: boost_strength_factor must be in [0, 1], got {boost_strength_factor}")
        if not 0.0 < percent_on < 1.0 or not 0.0 < percent_on * k_inference_factor < 1.0:
            raise ValueError(f"KWinners: percent_on ({percent_on}) and percent_on * k_inference_factor "
                             f"({percent_on * k_inference_factor}) must lie in (0, 1)")
        self.percent_on = percent_on
        self.percent_on_inference = percent_on * k_inference_factor
        self.k_inference_factor = k_inference_factor
        self.learning_iterations = 0
        self.register_buffer("boost_strength", torch.tensor(boost_strength, dtype=torch.float))
        self._cached_boost_strength = float(boost_strength)
        self.boost_strength_factor = boost_strength_factor
        self.duty_cycle_period = duty_cycle_period

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._cached_boost_strength = self.boost_strength.item()

    def update_boost_strength(self) -> None:
        """β ← β · boost_strength_factor (nupic.torch: once per training epoch)."""
        self._cached_boost_strength *= self.boost_strength_factor
        self.boost_strength.fill_(self._cached_boost_strength)

    def describe(self) -> dict:
        """Plain-data settings for records, in the keys of :meth:`kwta_robust.layers.KWTA.describe`."""
        return {"mode": self.mode, "ratio": self.percent_on, "k": None, "boost_strength": self._cached_boost_strength,
                "k_inference_factor": self.k_inference_factor, "implementation": f"nupic.torch {type(self).__name__}"}

    def boosted(self, x: Tensor) -> Tensor:
        """The scores winners are chosen on: ``x · exp(-β · duty_cycle)`` (detached)."""
        if self._cached_boost_strength > 0.0:
            return x.detach() * torch.exp(-self._cached_boost_strength * self.duty_cycle)
        return x.detach()

    @torch.no_grad()
    def _update_duty_cycle(self, active_per_unit: Tensor, batch_size: int) -> None:
        self.learning_iterations += batch_size
        period = min(self.duty_cycle_period, self.learning_iterations)
        self.duty_cycle.mul_(period - batch_size)
        self.duty_cycle.reshape(-1).add_(active_per_unit)
        self.duty_cycle.div_(period)


class KWinners(KWinnersBase):
    """k-winners over the ``n`` features of each sample: ``[N, n] → [N, n]``."""

    def __init__(self, n: int, percent_on: float, k_inference_factor: float = 1.5, boost_strength: float = 1.0,
                 boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000, break_ties: bool = False,
                 relu: bool = False, inplace: bool = False) -> None:
        super().__init__(percent_on, k_inference_factor, boost_strength, boost_strength_factor, duty_cycle_period)
        self.break_ties, self.relu, self.inplace = break_ties, relu, inplace
        self.n = n
        self.k = int(round(n * percent_on))
        self.k_inference = int(self.k * self.k_inference_factor)
        if self.k_inference > n:  # nupic.torch accepts this and fails at the first eval-mode forward
            raise ValueError(f"KWinners: k_inference_factor ({k_inference_factor}) gives {self.k_inference} eval-mode "
                             f"winners of n = {n} (int(round(n · percent_on) · k_inference_factor) must be <= n)")
        self.register_buffer("duty_cycle", torch.zeros(self.n))

    def forward(self, x: Tensor) -> Tensor:
        k = self.k if self.training else self.k_inference
        out = _winners(x, self.boosted(x), k, x.shape[1], self.break_ties, self.relu, self.inplace)
        if self.training:
            self._update_duty_cycle(out.gt(0).sum(dim=0, dtype=torch.float), out.shape[0])
        return out

    def extra_repr(self) -> str:
        return (f"n={self.n}, percent_on={self.percent_on}, boost_strength={self._cached_boost_strength}, "
                f"k_inference_factor={self.k_inference_factor}, break_ties={self.break_ties}")


class KWinners2d(KWinnersBase):
    """k-winners for ``[N, C, H, W]`` feature maps: over C·H·W of each sample (``local=False``) or over the C
    channels at each position (``local=True``)."""

    def __init__(self, channels: int, percent_on: float = 0.1, k_inference_factor: float = 1.5,
                 boost_strength: float = 1.0, boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000,
                 local: bool = False, break_ties: bool = False, relu: bool = False, inplace: bool = False) -> None:
        super().__init__(percent_on, k_inference_factor, boost_strength, boost_strength_factor, duty_cycle_period)
        self.channels, self.local = channels, local
        self.mode = "local" if local else "volume"
        self.break_ties, self.relu, self.inplace = break_ties, relu, inplace
        self.register_buffer("duty_cycle", torch.zeros((1, channels, 1, 1)))

    def k_for(self, x: Tensor, training: bool) -> int:
        """k for input ``x`` in train (``percent_on``) or eval (``percent_on · k_inference_factor``) mode."""
        n = self.channels if self.local else x.shape[1] * x.shape[2] * x.shape[3]
        return int(round(n * (self.percent_on if training else self.percent_on_inference)))

    def forward(self, x: Tensor) -> Tensor:
        k = self.k_for(x, self.training)
        scores = self.boosted(x)
        if self.local:
            out = _winners(x, scores, k, x.shape[1], self.break_ties, self.relu, self.inplace)
        else:
            n = x.shape[1] * x.shape[2] * x.shape[3]
            flat = _winners(x.reshape(x.shape[0], n), scores.reshape(x.shape[0], n), k, n, self.break_ties,
                            self.relu, False)
            out = x.copy_(flat.view_as(x)) if self.inplace else flat.view_as(x)
        if self.training:
            active = out.gt(0).sum(dim=(0, 2, 3), dtype=torch.float) / float(x.shape[2] * x.shape[3])
            self._update_duty_cycle(active, out.shape[0])
        return out

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, local={self.local}, percent_on={self.percent_on}, "
                f"boost_strength={self._cached_boost_strength}, k_inference_factor={self.k_inference_factor}, "
                f"break_ties={self.break_ties}")


class SparseWeightsBase(nn.Module):
    """A ``Linear``/``Conv2d`` (``.module``) whose weights are held sparse by a fixed ``zero_mask`` buffer."""

    def __init__(self, module: nn.Module, sparsity: float, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"SparseWeights: sparsity must lie in (0, 1), got {sparsity}")
        self.module = module
        self.sparsity = sparsity
        weight = module.weight
        out_units, fan_in = weight.shape[0], weight[0].numel()
        num_nonzero = int(round((1 - sparsity) * fan_in))
        gen = torch.Generator().manual_seed(int(seed))
        keep = torch.rand(out_units, fan_in, generator=gen).argsort(dim=1)[:, :num_nonzero]
        zero_mask = torch.ones(out_units, fan_in, dtype=torch.bool).scatter_(1, keep, False)
        self.register_buffer("zero_mask", zero_mask.view_as(weight).half())
        self.rezero_weights()

    @torch.no_grad()
    def rezero_weights(self) -> None:
        """Set the masked weights to zero again (after an optimizer step)."""
        self.module.weight.masked_fill_(self.zero_mask.bool(), 0)

    @property
    def weight(self) -> Tensor:
        return self.module.weight

    @property
    def bias(self) -> Tensor | None:
        return self.module.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity}"


class SparseWeights(SparseWeightsBase):
    """Sparse ``nn.Linear`` weights (per output unit ``round((1 − sparsity) · in_features)`` non-zeros)."""


class SparseWeights2d(SparseWeightsBase):
    """Sparse ``nn.Conv2d`` weights (per output channel ``round((1 − sparsity) · C_in·kh·kw)`` non-zeros)."""


def update_boost_strength(module: nn.Module) -> None:
    """For ``model.apply``: decay β of every k-winners layer."""
    if isinstance(module, KWinnersBase):
        module.update_boost_strength()


def rezero_weights(module: nn.Module) -> None:
    """For ``model.apply``: re-apply every sparse-weights mask."""
    if isinstance(module, SparseWeightsBase):
        module.rezero_weights()
