"""k-Winners-Take-All activations with a pluggable backward pass.

kWTA (Xiao, Zhong & Zheng, "Enhancing Adversarial Defense by k-Winners-Take-All", ICLR 2020; Ahmad & Scheinkman,
"How Can We Be So Dense?", 2019) keeps the ``k`` largest activations of a group and zeroes the rest:

    kwta(x)_i = x_i  if x_i >= t_k(x)  else 0,     t_k(x) = k-th largest value of the group.

Groups (``mode``):

* ``"dense"``   — ``[N, F]``: per sample, over the F features.
* ``"volume"``  — ``[N, C, H, W]``: per sample, over the whole C·H·W volume (Xiao et al.'s setting).
* ``"channel"`` — ``[N, C, H, W]``: per sample and channel, over H·W.
* ``"local"``   — ``[N, C, H, W]``: per sample and location, across the C channels (Numenta's "local" kWTA).

``k`` comes from an absolute ``k`` or from a ``ratio`` (k/N): ``k = max(1, floor(ratio · group_size + 1e-9))``
(:func:`k_from_ratio`: the tolerance absorbs float error), capped at the group size. Xiao et al.'s code takes
``int(ratio · group_size)``, one fewer where that product lies just below an integer (0.29 · 100) and none below
1: :class:`kwta_robust.zoo.xiao.XiaoKWTA` keeps their rule (one unit where it gives none).

**Ties.** The threshold is the k-th largest value and every entry ``>= t_k`` wins, so when several entries tie at
the threshold *all* of them are kept and more than ``k`` units may be active. This is deterministic (no dependence
on the order ``torch.topk`` returns equal values in) and matches Xiao et al.'s implementation.

**Backward.** The forward output is always exact. The backward pass is pluggable (the BPDA protocol of
:mod:`attacks.bpda_protocol`): ``"exact"`` (autograd through the winners: ``dy/dx = mask``), ``"identity"``
(straight-through), ``"smooth"`` (the relaxation ``x · sigmoid((s - t(s)) / (T · std(s)))`` with ``s`` the boosted
scores, ``t`` midway between the k-th and (k+1)-th largest score and temperature ``T``; differentiable in ``x``
everywhere but at ties) or any callable surrogate ``g(x)``.
Non-exact backward passes are implemented as ``exact.detach() + (g(x) - g(x).detach())``, whose forward value
equals the exact output bit for bit. With ``"smooth"`` the exact mask and the relaxation come from one sorted
top-(k+1) selection (:func:`smooth_kwta_and_mask`; the k-th largest value is among them): BPDA-smooth runs one
selection a layer and step instead of two, with the same bits.

**Boosting** (Numenta): with ``boost_strength > 0`` winners are chosen on ``x · exp(β (density - duty_cycle))``;
duty cycles live in buffers and are updated only in train mode. ``k_inference_factor`` scales ``k`` in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Union

import torch
from torch import Tensor, nn

from attacks.bpda_protocol import checked_surrogate_output
from kwta_robust.errors import ConfigError
from kwta_robust.layer_checks import (check_boost_units, check_mode, check_ratio, check_scores, check_settings,
                                      check_temperature, whole_k)
from kwta_robust.selection import kth_largest

KWTAMode = Literal["dense", "volume", "channel", "local"]
SPATIAL_MODES: tuple[str, ...] = ("volume", "channel", "local")
BACKWARDS: tuple[str, ...] = ("exact", "identity", "smooth")
BackwardSpec = Union[str, Callable[[Tensor], Tensor]]


def group_size(shape: torch.Size | tuple[int, ...], mode: KWTAMode) -> int:
    """Number of units competing in one group for an input of ``shape`` in ``mode`` (a mode the shape does not fit:
    one line)."""
    if mode == "dense" and len(shape) >= 2:
        return int(math.prod(shape[1:]))
    if len(shape) != 4 or mode not in SPATIAL_MODES:
        check_mode(mode, shape)  # raises: the checks off the fast path
    _, c, h, w = shape
    return {"volume": c * h * w, "channel": h * w, "local": c}[mode]


def k_from_ratio(ratio: float, size: int) -> int:
    """``max(1, floor(ratio · size))`` capped at ``size`` (a tiny tolerance absorbs float error in ratio·size)."""
    return min(size, max(1, int(math.floor(ratio * size + 1e-9))))


def _grouped(scores: Tensor, mode: KWTAMode) -> tuple[Tensor, int]:
    """A view of ``scores`` with each group along one dim, and that dim: ``[N, C, H, W]`` and dim 1 (local),
    ``[N, C, H·W]`` (channel) or ``[N, 1, F]`` (dense, volume) and dim -1.

    Volume groups are sets (the threshold does not depend on the order of the units), so a channels-last input
    is grouped in its memory order, ``[N, 1, H·W·C]``, a view instead of an NCHW copy."""
    if mode == "local":
        return scores, 1
    if mode == "channel":
        return scores.flatten(2), -1
    if scores.ndim == 4 and not scores.is_contiguous() and scores.is_contiguous(memory_format=torch.channels_last):
        return scores.permute(0, 2, 3, 1).reshape(scores.shape[0], 1, -1), -1
    return scores.flatten(1).unsqueeze(1), -1


def _group_top(scores: Tensor, k: int, mode: KWTAMode, sorted_: bool) -> tuple[Tensor, int]:
    """The ``k`` largest scores of each group along the last dim (local: dim 1) and the dim they lie along."""
    flat, dim = _grouped(scores, mode)
    return flat.topk(k, dim=dim, sorted=sorted_).values, dim


def _broadcast_threshold(thr: Tensor, scores: Tensor, mode: KWTAMode) -> Tensor:
    """Per-group values from :func:`_group_top` (reduced with keepdim) shaped to broadcast against ``scores``."""
    if mode == "local":
        return thr  # [N, 1, H, W]
    if mode == "channel":
        return thr.unsqueeze(-1)  # [N, C, 1, 1]
    return thr.view((scores.shape[0],) + (1,) * (scores.ndim - 1))


def _select_on_host(flat: Tensor) -> bool:
    """Whether :func:`_partition_threshold` may select on ``flat``: a plain strided float32/float64 CPU tensor without
    autograd history, outside tracing and compilation, with one torch thread (``torch.topk`` splits the groups
    across threads, NumPy's selection does not)."""
    return (flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64) and not flat.requires_grad
            and flat.layout == torch.strided and type(flat) is Tensor and torch.get_num_threads() == 1
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _partition_threshold(flat: Tensor, k: int, dim: int) -> Tensor:
    """The k-th largest value along ``dim`` (kept as a size-1 dim) by NumPy (:func:`kwta_robust.selection.kth_largest`:
    introselect, and on AMD Zen 4 a sampled bracket for wide groups): the value of ``topk(k).values.amin()``, NaN
    included (NaN ranks largest, so a group holding one gets NaN)."""
    return torch.from_numpy(kth_largest(flat.numpy(), k, dim))


def kwta_threshold(scores: Tensor, k: int, mode: KWTAMode) -> Tensor:
    """The k-th largest score of each group, shaped to broadcast against ``scores`` (``k`` capped at the group size)."""
    size = group_size(scores.shape, mode)
    if size == 0 or not scores.is_floating_point():
        check_scores(scores, size, mode)
    if type(k) is not int or k < 1:
        k = whole_k(k)
    k = min(k, size)
    flat, dim = _grouped(scores, mode)
    # k = 1 and k = size are plain reductions (several times faster than topk on CPU); on the CPU with one thread
    # NumPy's selection (kwta_robust.selection: introselect, 1.2-1.5x faster than topk on the small CNN's
    # activations; on AMD Zen 4, whose AVX-512 partition is slow, a sampled bracket on wide groups, about 2x faster
    # again). Same values as the topk path, NaN included: topk ranks NaN largest and amin/amax propagate it.
    if k == 1:
        thr = flat.amax(dim=dim, keepdim=True)
    elif k == size:
        thr = flat.amin(dim=dim, keepdim=True)
    elif _select_on_host(flat):
        thr = _partition_threshold(flat, k, dim)
    else:
        thr = flat.topk(k, dim=dim, sorted=False).values.amin(dim=dim, keepdim=True)
    return _broadcast_threshold(thr, scores, mode)


def winner_mask(scores: Tensor, k: int, mode: KWTAMode, dtype: torch.dtype | None = None) -> Tensor:
    """``1`` where a score is ``>=`` its group's k-th largest (:func:`kwta_threshold`), else ``0``, as a tensor of
    ``dtype`` (default the scores' dtype) shaped like ``scores``; never requires grad.

    The comparison writes the floating-point mask directly (``torch.ge(..., out=)``): on CPU a boolean mask, and
    multiplying by it, take a slow type-converting path (about 5x the cost of the float compare and multiply).
    """
    s = scores.detach()
    return _mask_at(s, kwta_threshold(s, k, mode), dtype)


def _mask_at(scores: Tensor, threshold: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``scores >= threshold`` written as ``dtype`` (default the scores') in the scores' layout (e.g. channels_last);
    ``scores`` detached. See :func:`winner_mask` for why the mask is floating-point."""
    return torch.ge(scores, threshold, out=torch.empty_like(scores, dtype=dtype or scores.dtype))


class _MaskedProduct(torch.autograd.Function):
    """``x * mask`` whose input gradient ``mask * grad`` takes the mask's memory layout, as ReLU's gradient takes its
    output's: autograd's own product (``grad * mask``) takes the layout of the incoming gradient, which arrives
    NCHW through a ``flatten`` even when the feature maps are channels-last, and the max-pooling before the kWTA
    layer then copies it back to channels-last in the backward pass. Same values, bit for bit."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return mask * grad, None


def apply_mask(x: Tensor, mask: Tensor) -> Tensor:
    """``x * mask`` (gradient: the mask, in the mask's memory layout). Without an autograd graph to build, the
    product is written into ``mask``'s storage (same values, bit for bit), so a forward pass holds one tensor fewer
    — with large query batches (gradient estimation, noise probes) that is the largest tensor of the pass."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaskedProduct.apply(x, mask)
    return mask.mul_(x)


def _smooth_thresholds(scores: Tensor, k: int, mode: KWTAMode) -> tuple[Tensor | None, Tensor]:
    """``(soft, exact)`` from one sorted top-(k+1) selection: the threshold of :func:`smooth_kwta`, midway between
    the k-th and (k+1)-th largest score of each group (differentiable; gating there makes the relaxation tend to the
    exact kWTA as ``T → 0``), and the exact kWTA threshold, the value of :func:`kwta_threshold` (the minimum of the
    top k, NaN where the group holds a NaN; detached), both shaped to broadcast against ``scores``. When all units
    win, ``exact`` is the group's minimum (:func:`kwta_threshold` itself) and ``soft`` is ``None`` (no threshold:
    the gate is 1)."""
    size = group_size(scores.shape, mode)
    if size == 0 or not scores.is_floating_point():
        check_scores(scores, size, mode)
    if type(k) is not int or k < 1:
        k = whole_k(k)
    if k >= size:
        return None, kwta_threshold(scores.detach(), size, mode)
    top, dim = _group_top(scores, k + 1, mode, sorted_=True)
    mid = (top.narrow(dim, k - 1, 1) + top.narrow(dim, k, 1)) / 2
    exact = top.detach().narrow(dim, 0, k).amin(dim=dim, keepdim=True)
    return _broadcast_threshold(mid, scores, mode), _broadcast_threshold(exact, scores, mode)


def kwta(x: Tensor, k: int, mode: KWTAMode = "dense", scores: Tensor | None = None) -> Tensor:
    """Exact kWTA: keep entries of ``x`` whose score (default ``x``) is ``>=`` the group's k-th largest; zero the rest.

    ``x``: ``[N, F]`` (dense) or ``[N, C, H, W]``. Returns a tensor of the same shape. Gradient (autograd) is the
    winner mask.
    """
    return apply_mask(x, winner_mask(x if scores is None else scores, k, mode, x.dtype))


def _group_std(scores: Tensor, mode: KWTAMode) -> Tensor:
    # Population std (correction=0): defined for groups of one unit and for empty batches.
    if mode == "local":
        return scores.std(dim=1, keepdim=True, correction=0)
    if mode == "channel":
        return scores.flatten(2).std(dim=-1, keepdim=True, correction=0).unsqueeze(-1)
    std = scores.flatten(1).std(dim=1, correction=0)
    return std.view((scores.shape[0],) + (1,) * (scores.ndim - 1))


def smooth_kwta(x: Tensor, k: int, mode: KWTAMode, temperature: float, scores: Tensor | None = None) -> Tensor:
    """Differentiable relaxation of kWTA: ``x · sigmoid((s - t(s)) / (T · std(s)))`` with ``t`` midway between the
    k-th and (k+1)-th largest score (:func:`_smooth_thresholds`).

    As ``T → 0`` this tends to the exact kWTA (away from ties: with the k-th score itself as threshold, the k-th
    winner would stay halved at every temperature). The scale ``std(s)`` (per group) makes ``T`` independent of
    the activations' magnitude.
    """
    return _smooth_gate(x, k, mode, temperature, scores)[0]


def smooth_kwta_and_mask(x: Tensor, k: int, mode: KWTAMode, temperature: float,
                         scores: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`smooth_kwta` and the exact winner mask (:func:`winner_mask` of the same scores, in ``x``'s dtype)
    from one top-(k+1) selection: the BPDA-smooth forward needs both, and the sorted top-(k+1) values the
    relaxation's threshold takes already hold the exact threshold (the minimum of the top k). Same values, bit
    for bit, as the two functions called apart. ``x``: ``[N, F]`` or ``[N, C, H, W]``; both results shaped like it."""
    smooth, exact = _smooth_gate(x, k, mode, temperature, scores)
    return smooth, _mask_at((x if scores is None else scores).detach(), exact, x.dtype)


def _smooth_gate(x: Tensor, k: int, mode: KWTAMode, temperature: float,
                 scores: Tensor | None) -> tuple[Tensor, Tensor]:
    """The relaxation of :func:`smooth_kwta` and the exact threshold of its selection (:func:`_smooth_thresholds`)."""
    s = x if scores is None else scores
    soft, exact = _smooth_thresholds(s, k, mode)
    if type(temperature) is not float or not temperature > 0:
        temperature = check_temperature(temperature)
    if soft is None:  # all win: the gate is 1 (a -inf threshold over T·std(s) would back-propagate NaN)
        return x * 1.0, exact
    tau = temperature * _group_std(s, mode).clamp_min(1e-12)
    return x * torch.sigmoid((s - soft) / tau), exact


class _KWTABase(nn.Module):
    """Shared machinery of :class:`KWTA` and :class:`KWTA2d` (see the module docstring)."""

    def __init__(
        self,
        mode: KWTAMode,
        ratio: float | None = None,
        k: int | None = None,
        backward: BackwardSpec = "exact",
        temperature: float = 1.0,
        boost_strength: float = 0.0,
        duty_cycle_period: int = 1000,
        k_inference_factor: float = 1.0,
        num_units: int | None = None,
    ) -> None:
        super().__init__()
        if (ratio is None) == (k is None):
            raise ConfigError("kWTA: give exactly one of ratio (k/N in (0, 1]) or k (an integer >= 1)")
        self.mode: KWTAMode = mode
        self._ratio: float | None = None
        self._k: int | None = None
        if ratio is not None:
            self.ratio = ratio
        else:
            self.k = k  # type: ignore[assignment]
        check_settings(boost_strength, duty_cycle_period, k_inference_factor, num_units)
        self.boost_strength = float(boost_strength)
        self.duty_cycle_period = int(duty_cycle_period)
        self.k_inference_factor = float(k_inference_factor)
        self.num_units = num_units
        if num_units is not None and boost_strength > 0:
            self.register_buffer("duty_cycle", torch.zeros(num_units))
            self.register_buffer("learning_iterations", torch.zeros((), dtype=torch.long))
        else:
            self.duty_cycle = None
        self.temperature = 1.0
        self.set_backward(backward, temperature)

    # --- sparsity level ------------------------------------------------------------------------------------
    @property
    def ratio(self) -> float | None:
        return self._ratio

    @ratio.setter
    def ratio(self, value: float) -> None:
        self._ratio, self._k = check_ratio(value), None

    @property
    def k(self) -> int | None:
        return self._k

    @k.setter
    def k(self, value: int) -> None:
        self._k, self._ratio = whole_k(value, "must be an integer >= 1"), None

    def effective_k(self, size: int, training: bool | None = None) -> int:
        """k used for a group of ``size`` units (eval mode applies ``k_inference_factor``)."""
        k = (k_from_ratio(self._ratio, size) if self._ratio is not None
             else min(size, int(self._k)))  # type: ignore[arg-type]
        training = self.training if training is None else training
        if not training and self.k_inference_factor != 1.0:
            k = min(size, max(1, int(round(k * self.k_inference_factor))))
        return k

    # --- BPDA protocol ---------------------------------------------------------------------------------------
    def set_backward(self, backward: BackwardSpec, temperature: float | None = None) -> None:
        """Choose the backward pass (``"exact"``, ``"identity"``, ``"smooth"`` or a callable surrogate)."""
        if isinstance(backward, str) and backward not in BACKWARDS:
            raise ConfigError(f"kWTA backward must be one of {', '.join(BACKWARDS)} or a callable, got {backward!r}")
        if not isinstance(backward, str) and not callable(backward):
            raise ConfigError(f"kWTA backward must be a name or a callable, got {type(backward).__name__}")
        if temperature is not None:
            self.temperature = check_temperature(temperature)
        # Bypass nn.Module.__setattr__: a surrogate that is itself a module must not become a submodule
        # (that would change the model's state_dict while an attack runs).
        self.__dict__["backward"] = backward

    # --- forward ---------------------------------------------------------------------------------------------
    def _check_shape(self, x: Tensor) -> None:
        raise NotImplementedError

    def _boost(self, x: Tensor) -> Tensor | None:
        if self.duty_cycle is None:
            return None
        check_boost_units(x, self.duty_cycle.shape[0])
        density = self.effective_k(group_size(x.shape, self.mode), training=True) / group_size(x.shape, self.mode)
        factor = torch.exp(self.boost_strength * (density - self.duty_cycle))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * factor.view(shape)

    @torch.no_grad()
    def _update_duty_cycle(self, mask: Tensor) -> None:
        batch = mask.shape[0]
        self.learning_iterations += batch
        # Running mean over the last `period` samples; a batch larger than the period replaces it (the batch
        # mean), which keeps duty cycles in [0, 1] (Numenta's formula would weight the batch negatively).
        period = max(batch, min(self.duty_cycle_period, int(self.learning_iterations.item())))
        reduce_dims = [0] + list(range(2, mask.ndim))
        per_unit = mask.float().sum(dim=reduce_dims)
        if mask.ndim > 2:
            per_unit = per_unit / math.prod(mask.shape[2:])
        self.duty_cycle.mul_(period - batch).add_(per_unit).div_(period)

    def surrogate(self, x: Tensor) -> Tensor:
        """The differentiable function whose gradient the current backward mode uses (for BPDA and tests)."""
        k = self.effective_k(group_size(x.shape, self.mode))
        scores = self._boost(x)
        if self.backward == "identity":
            return x
        if self.backward == "smooth":
            return smooth_kwta(x, k, self.mode, self.temperature, scores)
        if callable(self.backward):  # a user's or fitted map: checked, its output replaces this layer's gradient
            return checked_surrogate_output(self.backward(x), x, x, type(self).__name__)
        return kwta(x, k, self.mode, scores)

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)
        k = self.effective_k(group_size(x.shape, self.mode))
        scores = self._boost(x)
        boosting = self.training and self.duty_cycle is not None
        if self.backward == "smooth" and not boosting:  # one selection for the exact mask and the relaxation
            sur, mask = smooth_kwta_and_mask(x, k, self.mode, self.temperature, scores)
        else:
            mask = winner_mask(x if scores is None else scores, k, self.mode, x.dtype)
            # the surrogate relaxes this selection: its scores are boosted before the duty cycles move
            sur = None if self.backward == "exact" else self.surrogate(x)
            if boosting:
                self._update_duty_cycle(mask)
            if sur is None:
                return apply_mask(x, mask)
        return (x * mask).detach() + (sur - sur.detach())

    def describe(self) -> dict:
        """Plain-data description for checkpoint metadata and records."""
        return {
            "mode": self.mode,
            "ratio": self._ratio,
            "k": self._k,
            "boost_strength": self.boost_strength,
            "k_inference_factor": self.k_inference_factor,
        }

    def extra_repr(self) -> str:
        size = f"ratio={self._ratio}" if self._ratio is not None else f"k={self._k}"
        backward = self.backward if isinstance(self.backward, str) else "custom"
        return f"mode={self.mode}, {size}, backward={backward}"


class KWTA(_KWTABase):
    """Dense kWTA over the features of each sample: ``[N, F] → [N, F]`` (inputs with more dims are flattened
    per sample for the competition and keep their shape)."""

    def __init__(self, ratio: float | None = None, k: int | None = None, **kwargs: Any) -> None:
        super().__init__("dense", ratio=ratio, k=k, **kwargs)

    def _check_shape(self, x: Tensor) -> None:
        if x.ndim < 2:
            raise ConfigError(f"KWTA expects a batch [N, F], got shape {tuple(x.shape)}")


class KWTA2d(_KWTABase):
    """kWTA for feature maps ``[N, C, H, W] → [N, C, H, W]``; ``mode`` is ``"volume"``, ``"channel"`` or ``"local"``.
    ``num_units`` (for boosting) is the number of channels."""

    def __init__(
        self, ratio: float | None = None, k: int | None = None, mode: KWTAMode = "volume", **kwargs: Any
    ) -> None:
        if mode not in SPATIAL_MODES:
            raise ConfigError(f"KWTA2d mode must be one of {', '.join(SPATIAL_MODES)}, got {mode!r}")
        super().__init__(mode, ratio=ratio, k=k, **kwargs)

    def _check_shape(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ConfigError(f"KWTA2d expects [N, C, H, W], got shape {tuple(x.shape)}")


def kwta_layers(model: nn.Module) -> dict[str, _KWTABase]:
    """All kWTA layers of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _KWTABase)}


def set_kwta_ratio(model: nn.Module, ratio: float) -> int:
    """Set the ratio of every kWTA layer of a live model (incremental-sparsity schedule); returns the count."""
    layers = kwta_layers(model)
    for layer in layers.values():
        layer.ratio = ratio
    return len(layers)


@dataclass(frozen=True)
class ActivationSpec:
    """Which activation an architecture uses — injected into every model factory (as timm's ``act_layer``).

    ``name``: ``"relu"`` or ``"kwta"``. For kWTA, ``ratio`` (or ``k``), the 2-D ``mode`` for convolutional layers
    (dense layers always use ``"dense"``), and boosting settings.
    """

    name: Literal["relu", "kwta"] = "relu"
    ratio: float | None = None
    k: int | None = None
    mode: KWTAMode = "volume"
    boost_strength: float = 0.0
    k_inference_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ("relu", "kwta"):
            raise ValueError(f"activation: unknown activation {self.name!r}; use 'relu' or 'kwta'")
        if self.name == "kwta":
            if (self.ratio is None) == (self.k is None):
                raise ValueError("activation: kwta needs exactly one of k_ratio (in (0, 1]) or k")
            if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
                raise ValueError(f"activation: k_ratio must be in (0, 1], got {self.ratio}")
            if self.mode not in SPATIAL_MODES:
                raise ValueError(f"activation: kwta mode must be one of {', '.join(SPATIAL_MODES)}, got {self.mode!r}")

    def dense(self, num_features: int) -> nn.Module:
        """Activation for a fully connected layer with ``num_features`` outputs."""
        if self.name == "relu":
            return nn.ReLU()
        return KWTA(
            ratio=self.ratio, k=self.k, boost_strength=self.boost_strength,
            k_inference_factor=self.k_inference_factor, num_units=num_features,
        )

    def spatial(self, channels: int) -> nn.Module:
        """Activation for a convolutional layer with ``channels`` output channels."""
        if self.name == "relu":
            return nn.ReLU()
        return KWTA2d(
            ratio=self.ratio, k=self.k, mode=self.mode, boost_strength=self.boost_strength,
            k_inference_factor=self.k_inference_factor, num_units=channels,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ActivationSpec":
        return cls(**data)
