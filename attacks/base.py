"""Threat models, the attack interface and the attack registry.

Every attack in this package turns ``(model, x, y, threat)`` into adversarial inputs ``x_adv``:

* ``model``: any ``nn.Module`` classifier taking NCHW (or N×D) float inputs in ``threat.bounds`` and returning
  logits of shape ``[N, num_classes]``. Attacks never move, mutate or leave the model in train mode.
* ``x``: ``[N, ...]`` float tensor on the model's device, inside ``threat.bounds``.
* ``y``: ``[N]`` int64 labels on the same device.
* returns ``x_adv`` with the shape, dtype and device of ``x``.

The runner (``kwta_robust.evaluate``) does not trust the attacks: it projects every output onto the threat
model again, verifies the epsilon ball and the bounds, and re-classifies the inputs itself.

This package never imports ``kwta_robust``: it works on any PyTorch classifier.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
import typing
import warnings
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Callable, Iterator, Literal, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from attacks.errors import (AttackConfigError, RegistryError, attack_name_hint, call_factory, check_bounds,
                           check_eps, check_seed_param)
from attacks.precision import loss_logits, sum_tolerance
from attacks.registry import Registry, first_doc_line
from attacks.rng import rng_scope  # noqa: F401 (re-export: its home before)

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
#: How a norm is written in tables and by torchattacks / foolbox.
NORM_TITLES: Mapping[str, str] = MappingProxyType({"linf": "Linf", "l2": "L2"})
#: Relative float slack of an L2 distance against eps (:meth:`ThreatModel.slack`).
L2_RTOL = 1e-5


_EPS_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?$")


def parse_eps(value: float | int | str, field_name: str = "eps") -> float:
    """Parse an epsilon as the field writes it: ``0.3``, ``"0.3"``, ``"8/255"`` → float.

    Raises :class:`AttackConfigError` (one line, naming ``field_name``) for strings that do not parse,
    negative, NaN or infinite values.
    """
    if isinstance(value, bool):
        raise AttackConfigError(f"{field_name}: expected a number like 0.3 or '8/255', got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        match = _EPS_PATTERN.match(value)
        if match is None:
            raise AttackConfigError(
                f"{field_name}: cannot parse {value!r} as an epsilon; write a number like 0.3 or a fraction like "
                "'8/255'"
            )
        num, den = match.group(1), match.group(2)
        if den is not None and float(den) == 0.0:
            raise AttackConfigError(f"{field_name}: {value!r} divides by zero")
        eps = float(num) / float(den) if den is not None else float(num)
    else:
        raise AttackConfigError(f"{field_name}: expected a number like 0.3 or '8/255', got {type(value).__name__}")
    return check_eps(field_name, eps, value)


def format_eps(eps: float, max_den: int = 255) -> str:
    """Write an epsilon as the field does: ``8/255`` for multiples of 1/255, otherwise ``0.3``."""
    if eps == 0:
        return "0"
    frac = Fraction(eps).limit_denominator(max_den)
    if frac.denominator in (255,) and abs(float(frac) - eps) < 1e-9:
        return f"{frac.numerator}/{frac.denominator}"
    text = f"{eps:.6g}"
    return text


def threat_text(norm: str, eps: float | str) -> str:
    """A threat point as every table, flag and message writes it: ``Linf 0.1``, ``L2 8/255`` (``eps``: a number,
    or its text as the config wrote it)."""
    return f"{NORM_TITLES.get(norm, norm)} {eps if isinstance(eps, str) else format_eps(eps)}"


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``[N]`` shaped to broadcast against ``like`` ``[N, ...]``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation set: ``{x' : ||x' - x||_norm <= eps, bounds[0] <= x' <= bounds[1]}``.

    ``norm`` is ``"linf"`` or ``"l2"`` (the L2 norm is taken per sample over all non-batch dimensions).
    ``eps`` accepts the field's notation (``"8/255"``) and is stored as a float. The maths that depends on the norm
    lives here, for every attack and for adversarial training: :meth:`project`, :meth:`distance`,
    :meth:`random_start`, :meth:`direction` and :meth:`step`.
    """

    norm: Norm
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise AttackConfigError(f"norm: unknown norm {self.norm!r}; use one of {', '.join(NORMS)}")
        object.__setattr__(self, "eps", parse_eps(self.eps))
        lo, hi = check_bounds(self.bounds)
        if not lo < hi:
            raise AttackConfigError(f"bounds: lower bound must be below upper bound, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (lo, hi))

    @property
    def title(self) -> str:
        """The norm as tables and torchattacks write it: ``Linf``, ``L2``."""
        return NORM_TITLES[self.norm]

    def with_eps(self, eps: float | str) -> "ThreatModel":
        return ThreatModel(self.norm, parse_eps(eps), self.bounds)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Project ``x_adv`` onto the eps ball around ``x`` and clip to the bounds (``[N, ...]`` → ``[N, ...]``)."""
        delta = x_adv - x
        if self.norm == "linf":
            return (x + delta.clamp(-self.eps, self.eps)).clamp(*self.bounds)
        # float32 rounding can leave a scaled row a few ulps outside (at eps 3 on 3x224x224 inputs about 1 row in 4,
        # by up to 5e-6): :meth:`contains` and the runner's violation count allow for it (:meth:`slack`)
        flat = delta.flatten(1)
        factor = (self.eps / flat.norm(p=2, dim=1).clamp_min(1e-12)).clamp(max=1.0)
        return (x + (flat * factor[:, None]).view_as(delta)).clamp(*self.bounds)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample distance in this threat model's norm: ``[N]``."""
        flat = (x_adv - x).flatten(1)
        if self.norm == "linf":
            return flat.abs().amax(dim=1)
        return flat.norm(p=2, dim=1)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A uniform random point of the threat model around each sample, clipped to the bounds: ``[N, ...]``.

        Linf: uniform in the cube ``x + U(-eps, eps)``; L2: a uniform direction at radius ``eps · U^(1/D)``
        (``D`` = features per sample), uniform in the ball. ``generator`` lives on ``x``'s device."""
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return self.project(x + (2 * u - 1) * self.eps, x)
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / _per_sample(direction.flatten(1).norm(p=2, dim=1), x).clamp_min(1e-12)
        dim = math.prod(x.shape[1:])
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / max(dim, 1))
        return self.project(x + self.eps * _per_sample(radius, x) * direction, x)

    def direction(self, grad: Tensor) -> Tensor:
        """The steepest-ascent direction of unit size in this norm, per sample: ``sign(g)`` (Linf) or
        ``g / ||g||_2`` (L2); ``[N, ...]``."""
        if self.norm == "linf":
            return grad.sign()
        flat = grad.flatten(1)
        return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(grad)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """One steepest-ascent step of size ``step_size`` along ``grad`` (not yet projected): ``x + a·sign(g)``
        (Linf) or ``x + a·g / ||g||_2`` (L2)."""
        if self.norm == "linf":
            return x_adv + step_size * grad.sign()
        return x_adv + step_size * grad / _per_sample(grad.flatten(1).norm(p=2, dim=1), grad).clamp_min(1e-12)

    def slack(self, atol: float) -> float:
        """How far past ``eps`` a distance is still float rounding: ``atol``, plus for L2 a relative 1e-5 of ``eps``
        (a float32 norm over D coordinates is off by about 1e-6 relative at D = 150,528)."""
        return atol + (L2_RTOL * self.eps if self.norm == "l2" else 0.0)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-6) -> Tensor:
        """Per-sample bool ``[N]``: inside the eps ball (within :meth:`slack`) and inside the bounds (``atol``)."""
        lo, hi = self.bounds
        in_ball = self.distance(x_adv, x) <= self.eps + self.slack(atol)
        flat = x_adv.flatten(1)
        in_bounds = (flat >= lo - atol).all(dim=1) & (flat <= hi + atol).all(dim=1)
        return in_ball & in_bounds


@runtime_checkable
class Attack(Protocol):
    """The one interface every attack implements.

    ``name`` identifies the configured attack in records and tables (e.g. ``"pgd"``, ``"bpda-smooth+pgd"``).
    ``__call__`` returns ``x_adv`` on ``x.device``; it never moves or mutates the model and never prints.
    """

    name: str

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor: ...


AttackFactory = Callable[..., Attack]
AttackKind = Literal["white-box", "bpda", "adaptive", "transfer", "black-box", "noise"]


@dataclass(frozen=True)
class AttackInfo:
    """What the attack registry holds per name: how to build the attack and what it supports."""

    name: str
    factory: AttackFactory
    norms: tuple[str, ...]
    kind: AttackKind
    single_step: bool = False
    summary: str = ""
    uses_gradient: bool = True
    """Whether the attack follows the attacked model's input gradient (white-box, BPDA, EOT) rather than only its
    outputs (gradient estimation, black-box) or another model's gradient (transfer). The diagnostics count the former
    as gradient-free (a transfer never queries this model), and BPDA refuses both: its backward would change nothing."""
    labels_only: bool = False
    """Whether the attack needs only the attacked model's predicted labels (decision-based: HopSkipJump, Boundary;
    transfer): the attacks that apply to a model returning one-hot hard labels (Brendel et al., ICLR 2018)."""
    min_classes: int = 2  # fewest classes it is defined for (DLR 3, APGD-T 4) and why: :func:`check_classes`
    class_reason: str = ""
    draws: Callable[[Mapping[str, Any]], str | None] | None = None  # its first draw from seed: attacks.seed_draws


#: Kinds whose attacks follow the attacked model's input gradient unless registered otherwise; an ``adaptive``
#: attack must say (``uses_gradient``), as both occur: gradient estimation queries outputs, EOT averages gradients.
GRADIENT_KINDS: tuple[str, ...] = ("white-box", "bpda")


#: Every attack by name (:class:`attacks.registry.Registry` of :class:`AttackInfo`); the families register
#: themselves with :func:`register_attack`, found on the first lookup by importing every module of this package,
#: then another distribution's through the ``kwta_robust.attacks`` entry point group.
REGISTRY: Registry[AttackInfo] = Registry("attack", plugins=("attacks",), entry_point_group="kwta_robust.attacks",
                                          decorator="@register_attack(name, norms=..., kind=...)",
                                          unwrap=lambda info: info.factory, hint=attack_name_hint)


def register_attack(
    name: str,
    *,
    norms: Sequence[str] = NORMS,
    kind: AttackKind = "white-box",
    single_step: bool = False, summary: str = "",
    uses_gradient: bool | None = None, labels_only: bool = False,
    min_classes: int = 2, class_reason: str = "", draws: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> Callable[[AttackFactory], AttackFactory]:
    """Class/function decorator adding an attack factory to :data:`REGISTRY`. ``uses_gradient``
    (:attr:`AttackInfo.uses_gradient`) defaults to whether ``kind`` is one of :data:`GRADIENT_KINDS`; an
    ``adaptive`` attack must give it. ``labels_only``: :attr:`AttackInfo.labels_only`; ``min_classes`` (above 2
    with its ``class_reason``): :attr:`AttackInfo.min_classes`; ``draws``: :attr:`AttackInfo.draws`. The factory takes
    ``seed`` (the runner passes every batch's seed) and the config's ``params``."""
    if kind not in typing.get_args(AttackKind):
        raise RegistryError("attack", f"attack {name!r} has kind {kind!r}; use one of "
                                      f"{', '.join(typing.get_args(AttackKind))}")
    if isinstance(norms, str) or not norms or not set(norms) <= set(NORMS):
        raise RegistryError("attack", f"attack {name!r} has norms {norms!r}; use a non-empty tuple of "
                                      f"{', '.join(NORMS)}")
    if uses_gradient is None and kind == "adaptive":
        raise RegistryError("attack", f"adaptive attack {name!r} must say whether it follows the model's input "
                                      "gradient: register it with uses_gradient=True (like eot) or False (like "
                                      "gradient-estimation)")
    if type(min_classes) is not int or min_classes < 2 or (min_classes > 2 and not class_reason):
        raise RegistryError("attack", f"attack {name!r} has min_classes {min_classes!r}; use an int >= 2 (above 2 "
                                      "with its class_reason)")
    if draws is not None and not callable(draws):
        raise RegistryError("attack", f"attack {name!r} has draws {draws!r}; use a function of its parameters naming "
                                      "its first draw from its seed ('random start', ...) or None, or leave it out")
    follows = kind in GRADIENT_KINDS if uses_gradient is None else bool(uses_gradient)

    def decorator(factory: AttackFactory) -> AttackFactory:
        if not _takes(factory, "seed"):
            raise RegistryError("attack", f"attack {name!r}: its factory {factory.__qualname__} must take a seed "
                                          "keyword argument (every batch's attack is built with its own seed)")
        doc = summary or first_doc_line(factory)
        REGISTRY.add(name, AttackInfo(name, factory, tuple(norms), kind, single_step, doc, follows,
                                      bool(labels_only), min_classes, class_reason, draws), summary=doc,
                     source=getattr(factory, "__module__", None))
        return factory

    return decorator


def _takes(factory: Callable[..., Any], keyword: str) -> bool:
    """Whether ``factory`` accepts ``keyword`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call say
        return True
    return any(p.kind is p.VAR_KEYWORD or (p.name == keyword and p.kind is not p.POSITIONAL_ONLY) for p in params)


def create_attack(name: str, **params: Any) -> Attack:
    """Build a registered attack by name (one-line ``AttackConfigError``: unknown name, ``seed``, parameters)."""
    info = REGISTRY.get(name)
    if "seed" in params:
        params["seed"] = check_seed_param(name, params["seed"])
    return call_factory(f"attack {name!r}", info.factory, params)


def available_attacks() -> list[str]:
    """Names of the registered attacks."""
    return REGISTRY.names()


def attack_info(name: str, field: str | None = None) -> AttackInfo:
    """The registered attack ``name``; an unknown one is a one-line error naming ``field`` (default ``attack``)."""
    return REGISTRY.get(name, field=field)


def attack_defaults(name: str) -> dict[str, Any]:
    """The default parameters of the registered attack ``name``'s factory (``{"steps": 40, ...}``)."""
    params = inspect.signature(attack_info(name).factory).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def check_norm_supported(attack_name: str, threat: ThreatModel, norms: Sequence[str]) -> None:
    """Raise :class:`AttackConfigError` if ``threat``'s norm is not one of ``norms``."""
    if threat.norm not in norms:
        raise AttackConfigError(
            f"attack {attack_name!r} does not support norm {threat.norm!r}; supported: {', '.join(norms)}"
        )


def check_inputs(x: Tensor, y: Tensor, threat: ThreatModel) -> None:
    """Validate a batch before attacking: shapes, label dtype and that ``x`` lies inside the bounds."""
    if x.ndim < 2:
        raise AttackConfigError(f"x: expected a batch [N, ...], got shape {tuple(x.shape)}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise AttackConfigError(f"y: expected labels of shape [{x.shape[0]}], got {tuple(y.shape)}")
    lo, hi = threat.bounds
    if x.numel() and (x.min().item() < lo - 1e-6 or x.max().item() > hi + 1e-6):
        raise AttackConfigError(
            f"x: inputs must lie in bounds [{lo}, {hi}] (got min {x.min().item():.4g}, max {x.max().item():.4g}); "
            "move normalization inside the model"
        )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each module's own flag exactly."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, was_training in flags:
            module.training = was_training


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Disable ``requires_grad`` on parameters (gradients flow to the input only), then restore."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def seeded_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded explicitly (attacks never touch the global RNG)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample CW margin ``max_{j != y} z_j - z_y``: ``[N, C], [N] → [N]`` (positive means misclassified); float16
    and bfloat16 logits in float32 (:func:`attacks.precision.loss_logits`: no overflow near 65504)."""
    logits = loss_logits(logits)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(dim=1) - true


def input_gradient(outputs: Tensor, inputs: Tensor, grad_outputs: Tensor | None = None,
                   retain_graph: bool = False) -> Tensor:
    """``torch.autograd.grad(outputs, inputs, grad_outputs)`` for an attack: zeros shaped like ``inputs`` where the
    outputs do not depend on ``inputs`` through autograd (a module computing under ``torch.no_grad()``, detaching
    or leaving torch: the gradient is cut). The attack then stands still, as on any masked gradient, and the
    diagnostics say so (``zero-gradients``: no input gradient at all) instead of the run ending in a traceback."""
    if not outputs.requires_grad:
        return torch.zeros_like(inputs)
    (grad,) = torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


def finite_or_none(values: Tensor) -> list[float | None]:
    """``values`` ``[N]`` as plain numbers for a record (JSON): ``None`` where not finite (NaN: not measured)."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


def batched_logits(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """The model's outputs ``[N, C]`` on ``x`` ``[N, ...]`` without gradients, ``batch_size`` rows at a time."""
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in x.split(batch_size)]) if len(x) else model(x)


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels ``[N]`` without gradients, batched (:func:`batched_logits`; no input: no model call)."""
    if not len(x):
        return torch.empty(0, dtype=torch.long, device=x.device)
    return batched_logits(model, x, batch_size).argmax(dim=1)


# --- shared helpers for attack implementations (added with the gradient / black-box families) ---------------


class NonLogitOutputWarning(UserWarning):
    """The model's outputs look like probabilities (rows in [0, 1] summing to 1) or one-hot hard labels instead of
    logits."""


def all_zero_or_one(outputs: Tensor) -> bool:
    """Every entry of ``outputs`` ``[N, K]`` is exactly 0 or 1: with rows summing to 1, one-hot hard labels (a model
    returning ``one_hot(argmax)``: its decision only)."""
    return bool(((outputs == 0) | (outputs == 1)).all())


def check_logits(logits: Tensor) -> None:
    """Validate model outputs before attacking: ``[N, C]`` with ``C >= 2``; warn on probabilities.

    Attacks expect logits. Softmax outputs flatten the loss surface (CE on probabilities saturates; the margin
    is bounded by 1), which makes gradient attacks look weaker than they are. Rows that all lie in ``[0, 1]``
    and sum to 1 raise a :class:`NonLogitOutputWarning` (log-probabilities are fine: CE and margins are
    shift-invariant).
    """
    if logits.ndim != 2:
        raise AttackConfigError(
            f"model output: expected logits of shape [N, num_classes], got {tuple(logits.shape)}; "
            "flatten the classifier head"
        )
    if logits.shape[1] < 2:
        raise AttackConfigError(f"model output: need at least 2 classes, got {logits.shape[1]}")
    if logits.shape[0] == 0:
        return
    wide = loss_logits(logits)
    probs_like = bool(
        (logits.min() >= 0).item()
        and (logits.max() <= 1).item()
        # float16/bfloat16 rows summed in float32, within a few of their epsilons of 1
        and torch.allclose(wide.sum(dim=1), torch.ones_like(wide[:, 0]), atol=sum_tolerance(logits.dtype, 1e-3))
    )
    if probs_like and all_zero_or_one(logits):
        warnings.warn(
            "model output: every row is one-hot, so the model returns hard labels (decision-only): gradient and "
            "score-based attacks (square, gradient-estimation) get no signal; use hopskipjump or boundary",
            NonLogitOutputWarning,
            stacklevel=3,
        )
    elif probs_like:
        warnings.warn(
            "model output: rows lie in [0, 1] and sum to 1, so the model returns probabilities; attacks need "
            "logits (remove the final softmax), otherwise robust accuracy is over-estimated",
            NonLogitOutputWarning,
            stacklevel=3,
        )


def check_classes(attack_name: str, num_classes: int) -> None:
    """Raise :class:`AttackConfigError` when the registered attack ``attack_name`` needs more classes than
    ``num_classes`` (:attr:`AttackInfo.min_classes`): checked by the attack when called, by a run before any work;
    a shipped suite leaves it out on such a model."""
    info = REGISTRY.get(attack_name)
    if num_classes < info.min_classes:
        raise AttackConfigError(
            f"attack {attack_name!r} needs a model with at least {info.min_classes} classes ({info.class_reason}); "
            f"this model has {num_classes}: use apgd-ce, pgd or fab instead"
        )


def begin_attack(
    attack_name: str, norms: Sequence[str], model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel
) -> Tensor:
    """Common entry checks of an attack call; returns the clean logits ``[N, C]`` (no grad, eval mode).

    Checks the norm is supported, the batch (shape, bounds), the outputs (:func:`check_logits`) and that the
    labels are valid class indices.
    """
    check_norm_supported(attack_name, threat, norms)
    check_inputs(x, y, threat)
    if y.dtype != torch.int64:
        raise AttackConfigError(f"y: expected int64 class labels, got dtype {y.dtype}; use y.long()")
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    check_logits(logits)
    if y.numel() and (y.min().item() < 0 or y.max().item() >= logits.shape[1]):
        raise AttackConfigError(
            f"y: labels must lie in [0, {logits.shape[1] - 1}] for a model with {logits.shape[1]} outputs, "
            f"got [{y.min().item()}, {y.max().item()}]"
        )
    return logits
