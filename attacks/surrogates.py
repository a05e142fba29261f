"""Learned BPDA surrogates: per-layer fitted modules and a distilled differentiable twin of the whole model.

BPDA (Athalye, Carlini & Wagner, ICML 2018, "Obfuscated Gradients Give a False Sense of Security", §4.1) needs a
differentiable ``g ≈ f`` for each non-differentiable (or gradient-masking) layer ``f``. Where no closed-form
relaxation is known, Athalye et al. suggest *learning* it. This module does that generically, for any layer that
maps a tensor to a tensor of the same shape (as kWTA does) — by default the layers implementing
:class:`attacks.bpda_protocol.SupportsSurrogateBackward`, or any modules named by the caller; it never imports
``kwta_robust``.

**Per-layer surrogate** (:class:`GroupGateSurrogate`). An element-wise gate conditioned on the element's rank
statistics within its competition group: for an input ``h`` (``[N, F]`` or ``[N, C, H, W]``) it computes, per
element, the features

* ``h / std_sample(h)`` (the value, scale-free), and for every candidate grouping ``G`` (per sample; for 4-D inputs
  also per channel over H·W and per location over C):
* ``(h - t_G(h)) / std_G(h)`` where ``t_G`` is the ``ceil(ρ·|G|)``-th largest value of the group, ``ρ`` being the
  fraction of non-zero outputs measured on the fitting data (the layer's empirical density);

and a small MLP shared by all elements maps them to a gate logit ``a`` and a residual ``r``:
``g(h) = h · sigmoid(a) + r · std_sample(h)``. A hard top-k layer is the limit ``a → ±∞`` of the gate on the right
grouping's threshold feature, so the family contains (a smooth version of) kWTA in every selection mode, while the
learned MLP decides which grouping and how sharp. Everything is differentiable (the threshold's gradient flows to
the k-th element through ``topk``).

**Fitting.** Inputs and outputs of every switched layer are collected with forward hooks while the *unchanged*
model runs (no gradients) on the clean batch and on random perturbations of it inside the threat model's ball (at
most ``max_rows`` rows per layer, a random subset). The features do not depend on the MLP, so they are computed once
for a random pool of activation elements; each surrogate is fitted by Adam on mini-batches of that pool, minimising
the squared error divided by the mean squared output. The reported *fit error* is the relative MSE
``||g(h) - f(h)||² / ||f(h)||²`` of the fitted surrogate over all kept rows (0 = exact; 1 = no better than
predicting zeros).

**Model twin** (:func:`distill_model_twin`). A deep copy of the target in which every BPDA-capable layer is replaced
by its fitted :class:`GroupGateSurrogate`, then fine-tuned end to end (all parameters of the copy) on the KL
divergence to the target's softmax at fresh random points of the ball around rows of the batch (the clean rows
enter through the layer fits and the final logit check). :class:`GradientSwapModel` then returns the target's
exact logits in the forward pass and the twin's gradient in the backward pass (BPDA at the model level). The
target is never modified: it is only run forward under ``torch.no_grad``.

All randomness (perturbations, mini-batches, MLP initialisation) comes from an explicit ``torch.Generator``; the
global RNG is never touched.

**Cost.** Fitting runs once per attack call (per batch): one forward pass per layer over at most ``max_rows`` inputs
plus ``steps`` small Adam steps per layer. Differentiating through a surrogate costs about ``hidden`` times the
layer's activation memory, so for large convolutional networks lower ``fit_hidden`` or the batch size.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import AttackConfigError, ThreatModel, eval_mode
from attacks.bpda_protocol import surrogate_layers
from attacks.errors import FLOAT32_RANGE, check_count, in_float32_range, is_finite_number

logger = logging.getLogger(__name__)

_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------------------
# random points inside the threat model
# ----------------------------------------------------------------------------------------------------------------
def perturbed_copies(x: Tensor, threat: ThreatModel, copies: int, generator: torch.Generator) -> Tensor:
    """``x`` followed by ``copies`` random perturbations of it inside the ball: ``[(copies + 1)·N, ...]``."""
    return torch.cat([x] + [threat.random_start(x, generator) for _ in range(copies)])


# ----------------------------------------------------------------------------------------------------------------
# the per-layer surrogate
# ----------------------------------------------------------------------------------------------------------------
def _uniform_parameter(shape: tuple[int, ...], bound: float, generator: torch.Generator, device, dtype) -> nn.Parameter:
    """``U(-bound, bound)`` parameter drawn from ``generator`` (``nn.Linear``'s default scale, no global RNG)."""
    return nn.Parameter((torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1) * bound)


def _group_stats(h: Tensor, dims: tuple[int, ...], density: float) -> tuple[Tensor, Tensor]:
    """Threshold (the ``ceil(density·size)``-th largest value) and std of each group spanning ``dims``."""
    moved = h.movedim(dims, tuple(range(h.ndim - len(dims), h.ndim)))
    flat = moved.flatten(h.ndim - len(dims))  # [..., size]
    size = flat.shape[-1]
    k = min(size, max(1, math.ceil(density * size - 1e-9)))
    thr = flat.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    std = flat.std(dim=-1, keepdim=True) if size > 1 else torch.ones_like(thr)
    keep_shape = moved.shape[: h.ndim - len(dims)] + (1,) * len(dims)
    thr = thr.view(keep_shape).movedim(tuple(range(h.ndim - len(dims), h.ndim)), dims)
    std = std.view(keep_shape).movedim(tuple(range(h.ndim - len(dims), h.ndim)), dims)
    return thr, std.clamp_min(_EPS)


class GroupGateSurrogate(nn.Module):
    """Differentiable element-wise gate on rank features (see the module docstring): ``[N, ...] → [N, ...]``.

    ``density``: fraction of non-zero outputs of the layer being imitated (sets the rank of the threshold);
    ``ndim``: number of dimensions of the layer's input (4 adds per-channel and per-location groupings).
    """

    def __init__(self, density: float, ndim: int, hidden: int, generator: torch.Generator,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        self.density = float(density)
        self.ndim = int(ndim)
        # groupings as tuples of dimensions that compete (all non-batch dims; H,W; C)
        groups: list[tuple[int, ...]] = [tuple(range(1, ndim))]
        if ndim == 4:
            groups += [(2, 3), (1,)]
        self.groups = groups
        n_features = 1 + len(groups)
        bound_in, bound_hidden = 1.0 / math.sqrt(n_features), 1.0 / math.sqrt(hidden)
        self.w1 = _uniform_parameter((hidden, n_features), bound_in, generator, device, dtype)
        self.b1 = _uniform_parameter((hidden,), bound_in, generator, device, dtype)
        self.w2 = _uniform_parameter((2, hidden), bound_hidden, generator, device, dtype)
        self.b2 = nn.Parameter(torch.zeros(2, device=device, dtype=dtype))

    def features(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Per-element features ``[N, ..., n_features]`` and the per-sample scale broadcast to ``h``'s shape."""
        _, scale = _group_stats(h, self.groups[0], self.density)
        feats = [h / scale]
        for dims in self.groups:
            thr, std = _group_stats(h, dims, self.density)
            feats.append((h - thr) / std)
        return torch.stack(feats, dim=-1), scale.expand_as(h)

    def head(self, h: Tensor, feats: Tensor, scale: Tensor) -> Tensor:
        """The element-wise map, on any matching selection of elements: ``h, scale [...]``, ``feats [..., F]``."""
        gate_logit, residual = F.linear(torch.tanh(F.linear(feats, self.w1, self.b1)), self.w2, self.b2).unbind(-1)
        return h * torch.sigmoid(gate_logit) + residual * scale

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim != self.ndim:
            raise ValueError(f"surrogate fitted on {self.ndim}-D inputs got shape {tuple(h.shape)}")
        feats, scale = self.features(h)
        return self.head(h, feats, scale)


# ----------------------------------------------------------------------------------------------------------------
# collecting activations and fitting
# ----------------------------------------------------------------------------------------------------------------
#: The largest learning rate of a fit: Adam's float32 step ``lr / (1 - 0.9)`` overflowed (a raw RuntimeError) from
#: about 3.4e37; far below that a fit diverges anyway, and says so.
LR_MAX = 1e30


def _check_lr(field: str, lr: object, default: float) -> None:
    """A learning rate: a finite number > 0 within float32's range and at most :data:`LR_MAX`, else one line
    (naming the setting's ``default``)."""
    if not (is_finite_number(lr) and lr > 0 and in_float32_range(lr)):
        raise AttackConfigError(f"{field}: must be a finite number > 0 {FLOAT32_RANGE}, got {lr!r}")
    if lr > LR_MAX:
        raise AttackConfigError(f"{field}: must be at most {LR_MAX:g} (Adam's float32 arithmetic overflows beyond "
                                f"it; the default is {default:g}), got {lr!r}")


@dataclass(frozen=True)
class FitSettings:
    """Budget of the surrogate fits (shared by the per-layer and the model surrogates)."""

    perturbations: int = 3  # random perturbed copies of the batch (plus the clean batch)
    steps: int = 300  # Adam steps per layer
    lr: float = 1e-2
    hidden: int = 16
    batch_elements: int = 4096  # activation elements per Adam step, drawn from ...
    pool_elements: int = 262144  # ... a random pool of the collected elements (features computed once)
    max_rows: int = 512  # inputs whose activations are collected (a random subset of the clean + perturbed batch)

    def __post_init__(self) -> None:
        for name in ("perturbations", "hidden", "batch_elements", "pool_elements", "max_rows"):
            check_count(f"fit_{name}", getattr(self, name))  # 1.5, nan, True: a raw TypeError or silently taken
        check_count("fit_steps", self.steps, 0)
        _check_lr("fit_lr", self.lr, FitSettings.lr)


def collect_layer_io(
    model: nn.Module, layer_names: list[str], inputs: Tensor, batch_size: int = 256,
    resized: list[str] | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Inputs and outputs of the named layers while ``model`` runs on ``inputs`` (forward hooks, no gradients).

    Returns ``{name: (layer_input [M, ...], layer_output [M, ...])}`` concatenated over the chunks of ``inputs``; a
    layer that never ran is left out. A layer changing its input's shape is refused, or, given ``resized`` (a list),
    named there and left out. The model is run in eval mode and left exactly as it was.
    """
    modules = dict(model.named_modules())
    store: dict[str, tuple[list[Tensor], list[Tensor]]] = {name: ([], []) for name in layer_names}

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple, output: Tensor) -> None:
            if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                raise AttackConfigError(f"surrogate='learned': layer {name!r} must map one tensor to one tensor")
            if args[0].shape != output.shape and resized is not None:
                resized.extend([name] if name not in resized else [])
                return
            if args[0].shape != output.shape:
                raise AttackConfigError(
                    f"surrogate='learned': layer {name!r} changes the shape {tuple(args[0].shape)} → "
                    f"{tuple(output.shape)}; learned surrogates need shape-preserving layers (use 'smooth' or 'model')"
                )
            store[name][0].append(args[0].detach())
            store[name][1].append(output.detach())

        return hook

    handles = [modules[name].register_forward_hook(make_hook(name)) for name in layer_names]
    try:
        with eval_mode(model), torch.no_grad():
            for chunk in inputs.split(batch_size):
                model(chunk)
    finally:
        for handle in handles:
            handle.remove()
    return {name: (torch.cat(ins), torch.cat(outs)) for name, (ins, outs) in store.items() if ins}


def relative_mse(pred: Tensor, target: Tensor) -> float:
    """``||pred - target||² / ||target||²`` (with a floor on the denominator)."""
    return float(((pred - target) ** 2).sum() / (target**2).sum().clamp_min(1e-12))


def fit_layer_surrogate(
    inputs: Tensor, outputs: Tensor, settings: FitSettings, generator: torch.Generator
) -> tuple[GroupGateSurrogate, float]:
    """Fit one :class:`GroupGateSurrogate` to ``inputs → outputs`` (``[M, ...]`` each); returns it and its fit error
    (relative MSE over all ``M`` rows)."""
    density = float((outputs != 0).float().mean().clamp(min=1.0 / outputs[0].numel(), max=1.0))
    module = GroupGateSurrogate(density, inputs.ndim, settings.hidden, generator, inputs.device, inputs.dtype)
    # The features do not depend on the MLP: compute them once, keep a random pool of elements, fit on it.
    total = inputs.numel()
    pool: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    with torch.no_grad():
        for h, target in zip(inputs.split(64), outputs.split(64)):
            feats, scale = module.features(h)
            take = min(h.numel(), math.ceil(settings.pool_elements * h.numel() / total))
            pick = torch.randperm(h.numel(), generator=generator, device=h.device)[:take]
            pool.append((h.reshape(-1)[pick], feats.reshape(-1, feats.shape[-1])[pick], scale.reshape(-1)[pick],
                         target.reshape(-1)[pick]))
    pool_h, pool_f, pool_s, pool_t = (torch.cat(parts) for parts in zip(*pool))
    norm = (outputs**2).mean().clamp_min(1e-12)
    optimiser = torch.optim.Adam(module.parameters(), lr=settings.lr)
    with torch.enable_grad():
        for _ in range(settings.steps):
            pick = torch.randint(len(pool_h), (min(len(pool_h), settings.batch_elements),), generator=generator,
                                 device=pool_h.device)
            pred = module.head(pool_h[pick], pool_f[pick], pool_s[pick])
            loss = ((pred - pool_t[pick]) ** 2).mean() / norm
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    module.requires_grad_(False)
    with torch.no_grad():
        sq_error = sum(float(((module(h) - t) ** 2).sum()) for h, t in zip(inputs.split(64), outputs.split(64)))
    return module, sq_error / max(float((outputs**2).sum()), 1e-12)


def fit_layer_surrogates(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    settings: FitSettings,
    generator: torch.Generator,
    names: Sequence[str] | None = None,
    keep_resized: bool = False,
) -> tuple[dict[str, GroupGateSurrogate], dict[str, float]]:
    """Fit a surrogate for each named layer (default: every BPDA-capable layer) of ``model`` on the batch ``x`` and
    perturbations of it; any shape-preserving module can be named (``keep_resized``: one that is not is left out,
    logged, instead of refused: the model twin keeps it as it is). A named layer that never runs is refused.

    Returns ``({layer_name: surrogate}, {layer_name: relative MSE})``; both empty if there is no such layer.
    """
    names = list(surrogate_layers(model)) if names is None else list(names)
    if not names:
        return {}, {}
    data = perturbed_copies(x, threat, settings.perturbations, generator)
    if len(data) > settings.max_rows:
        data = data[torch.randperm(len(data), generator=generator, device=data.device)[: settings.max_rows]]
    fitted: dict[str, GroupGateSurrogate] = {}
    errors: dict[str, float] = {}
    idle: list[str] = []  # named layers that never ran (as attached_backward: all of them refused, some a warning)
    for name in names:  # one layer's activations in memory at a time (one forward pass per layer)
        resized: list[str] | None = [] if keep_resized else None
        collected = collect_layer_io(model, [name], data, resized=resized)
        if resized:
            logger.info("model surrogate: layer %s changes its input's shape; the twin keeps it as it is", name)
            continue
        if name not in collected:  # torch.cat of nothing: a raw ValueError before
            idle.append(name)
            continue
        layer_in, layer_out = collected[name]
        fitted[name], errors[name] = fit_layer_surrogate(layer_in, layer_out, settings, generator)
        logger.info("learned surrogate for layer %s: relative MSE %.4g", name, errors[name])
        if not math.isfinite(errors[name]):  # a NaN surrogate's gradient silently turned BPDA into a no-op
            raise AttackConfigError(f"fit_lr: the learned surrogate of layer {name!r} diverged (relative MSE "
                                    f"{errors[name]}) at fit_lr {settings.lr!r}; lower fit_lr (default "
                                    f"{FitSettings.lr:g})")
    if idle and len(idle) == len(names):
        raise AttackConfigError(f"layers: BPDA's layer(s) {', '.join(idle)} never ran in a forward of the model (a "
                                "parent calling .forward() bypasses hooks, or the module is unused), so there is "
                                "nothing to fit; name the modules the forward calls")
    if idle:
        logger.warning("BPDA layer(s) %s never ran in a forward of the model; no surrogate fitted there",
                       ", ".join(idle))
    return fitted, errors


# ----------------------------------------------------------------------------------------------------------------
# the model twin
# ----------------------------------------------------------------------------------------------------------------
def _replace_module(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@dataclass(frozen=True)
class DistillSettings:
    """Budget of the end-to-end distillation of the model twin."""

    steps: int = 100
    lr: float = 1e-3
    batch_rows: int = 128

    def __post_init__(self) -> None:
        check_count("distill_steps", self.steps, 0)
        _check_lr("distill_lr", self.lr, DistillSettings.lr)
        check_count("distill_batch_rows", self.batch_rows)


def distill_model_twin(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    fit: FitSettings,
    distill: DistillSettings,
    generator: torch.Generator,
    names: Sequence[str] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """A differentiable twin of ``model`` (see the module docstring) and its fit errors.

    Errors: per replaced layer (relative MSE of the layer fit) and ``"logits"``: relative MSE of the twin's logits
    against the target's (both centred per sample, as the softmax ignores shifts) on the clean batch and one random
    perturbation of it, after distillation; the prediction agreement is logged. ``names``: the layers replaced by
    fitted surrogates (default: every BPDA-capable layer). The target is only run
    forward without gradients; the twin is a deep copy in eval mode with its own parameters.
    """
    layer_fits, errors = fit_layer_surrogates(model, x, threat, fit, generator, names, keep_resized=True)
    twin = copy.deepcopy(model)
    for name, module in layer_fits.items():
        module.requires_grad_(True)
        _replace_module(twin, name, module)
    twin.eval()
    twin.requires_grad_(True)
    params = [p for p in twin.parameters() if p.is_floating_point()]
    rows = len(x)
    if distill.steps and params:
        optimiser = torch.optim.Adam(params, lr=distill.lr)
        with eval_mode(model), torch.enable_grad():
            for _ in range(distill.steps):
                idx = torch.randint(rows, (min(rows, distill.batch_rows),), generator=generator, device=x.device)
                xb = threat.random_start(x[idx], generator)
                with torch.no_grad():
                    target = F.log_softmax(model(xb), dim=1)
                loss = F.kl_div(F.log_softmax(twin(xb), dim=1), target, log_target=True, reduction="batchmean")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    twin.requires_grad_(False)
    with eval_mode(model), torch.no_grad():
        check = perturbed_copies(x, threat, 1, generator)
        target_logits = torch.cat([model(c) for c in check.split(256)])
        twin_logits = torch.cat([twin(c) for c in check.split(256)])
    errors["logits"] = relative_mse(twin_logits - twin_logits.mean(1, keepdim=True),
                                    target_logits - target_logits.mean(1, keepdim=True))
    if not math.isfinite(errors["logits"]):  # the twin's NaN gradient silently turned BPDA into a no-op
        raise AttackConfigError(f"distill_lr: the distilled model twin diverged (logit relative MSE "
                                f"{errors['logits']}) at distill_lr {distill.lr!r}; lower distill_lr (default "
                                f"{DistillSettings.lr:g})")
    agreement = float((twin_logits.argmax(1) == target_logits.argmax(1)).float().mean())
    logger.info("model surrogate: logit relative MSE %.4g, prediction agreement %.3f", errors["logits"], agreement)
    return twin, errors


class GradientSwapModel(nn.Module):
    """BPDA at the model level: the forward value is ``target(x)`` exactly, the gradient is ``twin``'s.

    ``[N, ...] → [N, C]`` logits. ``target`` runs without gradients (its parameters are never touched).
    """

    def __init__(self, target: nn.Module, twin: nn.Module) -> None:
        super().__init__()
        self.target = target
        self.twin = twin

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            exact = self.target(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return exact
        sur = self.twin(x)
        return exact + (sur - sur.detach())
