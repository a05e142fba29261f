"""BPDA on any module: the surrogate-backward protocol given to modules that do not implement it.

Athalye, Carlini & Wagner (ICML 2018, "Obfuscated Gradients Give a False Sense of Security", §4.1) replace the
backward pass of a non-differentiable layer by that of a differentiable approximation while the forward pass stays
exact. Our own kWTA layers implement :class:`attacks.bpda_protocol.SupportsSurrogateBackward`; a module written
elsewhere — Xiao et al.'s ``Sparsify*``, Numenta's ``KWinners``, a user's top-k gate, a rounding or quantization
layer — gets the same protocol from :class:`ModuleBackward`, which attaches two hooks to it for the duration of
an attack:

* a forward pre-hook — only when gradients are being recorded for the input — notes the input and hands the module
  a detached copy of it (the module's own backward is replaced, so it needs no graph of its own);
* a forward hook then returns the module's **own output, copied bit for bit** through a custom autograd function
  whose backward is the vector-Jacobian product of the surrogate evaluated at the module's input. Without
  gradients the hooks change nothing at all.

Surrogates (the protocol's backward specs): ``"exact"`` (no change), ``"identity"`` (straight-through,
``dL/dx = dL/dy``; needs ``y`` shaped like ``x``; a top-k gate that flattens its input, ``[N, C, H, W] →
[N, C·H·W]``, gets its smooth relaxation in the input's shape),
``"smooth"`` (for a top-k gate
:func:`attacks.gates.relaxed_gate` with the gate's grouping and score — given by the :class:`LayerTarget` (with a
boosted gate's per-unit factors, :mod:`attacks.gate_factors`) or inferred from the call (read with one host–device
synchronisation before the fit: :func:`attacks.gate_screen.screened_read`), with ``k`` read from the layer's own
output; for a module returning a top-k gate's 0/1 mask, which its parent applies, the relaxed mask,
:func:`attacks.gates.mask_as_gate`; for a piecewise-constant layer or a module whose output is
not a top-k selection of its input: identity, as no relaxation of an unknown staircase is known — fit one with
``surrogate="learned"``) or a callable ``g(x) -> y`` (e.g. a fitted per-layer surrogate).

Parameters inside a wrapped module receive no gradient during the attack (attacks need input gradients only). A
module that changes its input in place (nupic.torch's ``KWinners(inplace=True)``) changes the copy, so the
surrogate still sees its input; code after it that reads that input sees it unchanged while BPDA acts (the layer
probe of ``kwta_robust`` records ``in_place`` and warns once; the runner re-classifies every adversarial input on
the model as it is). :func:`attached_backward` removes every hook on exit, also on errors, so the model is left
exactly as it was (same hooks, parameters, buffers and flags).

:func:`select_modules` resolves layer specs — qualified names as in ``named_modules``, globs on those names, or
class names — for the BPDA attack's ``layers`` parameter and for ``kwta_robust``'s ``bpda_layers``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_protocol import (BACKWARD_NAMES, BackwardSpec, SupportsSurrogateBackward,
                                   checked_surrogate_output)
from attacks.gate_screen import screened_read
from attacks.gates import CHANNEL_STATISTICS, relaxed_gate
from attacks.inline_gates import InlineGates, scripted_call
from attacks.one_winner import ADAPTIVE_POOLING_CHILDREN
from attacks.pool_relax import POOL_CHILDREN

logger = logging.getLogger(__name__)

LAYER_KINDS: tuple[str, ...] = ("gate", "piecewise-constant", "module", "inline")
SCORES: tuple[str, ...] = ("value", "magnitude", "smallest", "boosted", "relu") + CHANNEL_STATISTICS


@dataclass(frozen=True)
class LayerTarget:
    """What BPDA knows about a module it acts on: ``kind`` — ``"gate"`` (a top-k gate, with its ``grouping``, see
    :mod:`attacks.gates`; ``None``: inferred at each call), ``"piecewise-constant"`` (rounding, quantization,
    thresholds), ``"module"`` (selected by the user, not classified) or ``"inline"`` (a module whose own ``forward``
    builds a top-k gate from a selection operation: the smooth and identity surrogates act on that gate alone,
    :mod:`attacks.inline_gates`; a given map on the whole module); for a gate, the ``score`` its winners are
    the largest of (``"value"``; ``"magnitude"`` for ``|x|`` and ``"smallest"`` for ``-x`` (a bottom-k gate):
    :func:`attacks.gates.selection_score`; ``"relu"`` for ``relu(x)``, a top-k then a ReLU; ``"boosted"``
    for ``b_u · x``, with ``factors`` the per-unit ``b_u`` along dim 1: :mod:`attacks.gate_factors`; ``"max"``,
    ``"mean"``, ``"abs-mean"``, ``"l2-norm"``: the statistic a ``"whole-channel"`` gate ranks, ``channel_statistic``);
    ``mask``: the gate's module returns the 0/1 mask, which its parent applies (:func:`attacks.gates.mask_as_gate`),
    so the smooth surrogate is the relaxed mask; ``gates``: for an inline target, the gates one call of its
    ``forward`` builds (the layer probe's count, readable or made in place): a call that relaxed fewer is refused."""

    kind: str = "module"
    grouping: str | None = None
    score: str = "value"
    factors: tuple[float, ...] | None = None
    mask: bool = False
    gates: int = 1

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise AttackConfigError(f"layers: unknown layer kind {self.kind!r}; use one of {', '.join(LAYER_KINDS)}")
        if self.score not in SCORES:
            raise AttackConfigError(f"layers: unknown gate score {self.score!r}; use one of {', '.join(SCORES)}")
        if (self.grouping == "whole-channel") != (self.score in CHANNEL_STATISTICS):
            raise AttackConfigError(f"layers: grouping 'whole-channel' goes with score "
                                    f"{' or '.join(map(repr, CHANNEL_STATISTICS))} (the channel statistic it ranks), "
                                    f"and those scores only with it; got grouping {self.grouping!r}, score "
                                    f"{self.score!r}")
        if self.mask and (self.kind != "gate" or self.grouping is None):
            raise AttackConfigError("layers: mask goes with kind 'gate' and its grouping (a module returning a "
                                    f"top-k gate's 0/1 mask); got kind {self.kind!r}, grouping {self.grouping!r}")
        if isinstance(self.gates, bool) or not isinstance(self.gates, int) or self.gates < 1 or (
                self.gates > 1 and self.kind != "inline"):
            raise AttackConfigError(f"layers: gates must be a whole number >= 1, above 1 only with kind 'inline' (the "
                                    f"gates its forward builds); got {self.gates!r} with kind {self.kind!r}")
        if (self.score == "boosted") != (self.factors is not None):
            raise AttackConfigError("layers: score 'boosted' goes with factors (one positive number per unit along "
                                    "dim 1), and factors only with it")
        if self.factors is not None:
            numbers = all(isinstance(f, Real) and not isinstance(f, bool) for f in self.factors)
            factors = tuple(float(f) for f in self.factors) if numbers else ()
            if not factors or not all(math.isfinite(f) and f > 0 for f in factors):
                raise AttackConfigError("layers: factors must be positive finite numbers, one per unit along dim 1")
            object.__setattr__(self, "factors", factors)

    @classmethod
    def of(cls, value: Any) -> "LayerTarget":
        """From a :class:`LayerTarget`, a mapping with ``kind``/``grouping``/``score``/``factors`` or ``None`` (a
        plain module)."""
        if isinstance(value, LayerTarget):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"kind", "grouping", "score", "factors", "mask", "gates"})
            if unknown:
                raise AttackConfigError(f"layers: unknown layer setting {unknown[0]!r}; use kind, grouping, score, "
                                        "factors, mask and gates")
            factors = value.get("factors")
            if factors is not None and (isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence)):
                raise AttackConfigError(f"layers: factors must be a list of numbers, got {type(factors).__name__}")
            mask = value.get("mask", False)
            if not isinstance(mask, bool):
                raise AttackConfigError(f"layers: mask must be true or false, got {mask!r}")
            return cls(str(value.get("kind", "module")), value.get("grouping"), str(value.get("score", "value")),
                       None if factors is None else tuple(factors), mask, value.get("gates", 1))
        raise AttackConfigError(f"layers: expected a layer description, got {type(value).__name__}")

    def describe(self) -> str:
        parts = [self.kind] + ([self.grouping] if self.grouping is not None else [])
        return "/".join(parts + ([self.score] if self.score != "value" else []) + (["mask"] if self.mask else []))


class _SurrogateGradient(torch.autograd.Function):
    """Forward: a copy of the module's output (bit-identical); backward: the VJP of ``surrogate`` at ``x``.

    ``surrogate`` is ``None`` for the identity (straight-through)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor, surrogate: Callable[[Tensor], Tensor] | None,
                name: str = "") -> Tensor:
        ctx.surrogate, ctx.layer = surrogate, name
        ctx.save_for_backward(x)
        return out.clone()  # a copy, not the tensor itself: later in-place ops on it must stay legal

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.surrogate is None:
            return grad, None, None, None
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            out = ctx.surrogate(xd)  # a given map (named: checked; a built-in relaxation may compute in float32)
            out = checked_surrogate_output(out, xd, grad, ctx.layer) if ctx.layer else out
            (grad_x,) = torch.autograd.grad(out, xd, grad)
        return grad_x, None, None, None


class ModuleBackward:
    """The surrogate-backward protocol for any module, through hooks (see the module docstring).

    ``backward``/``temperature``/``set_backward`` as in :class:`attacks.bpda_protocol.SupportsSurrogateBackward`;
    the hooks are attached by :meth:`attach` and removed by :meth:`detach` (:func:`attached_backward` does both).
    """

    def __init__(self, name: str, module: nn.Module, target: LayerTarget | None = None) -> None:
        self.name, self.module = name, module
        self.target = target or LayerTarget()
        self.backward: BackwardSpec = "exact"
        self.temperature = 1.0
        self._handles: list[Any] = []
        self._input: tuple[Tensor, Tensor, int] | None = None
        self._fallback_logged = self._in_place_logged = False
        self._factors_tensor: Tensor | None = None
        self._factors_logged = False
        self.calls = 0  # forward calls seen while attached (with or without gradients)
        self._depth = 0  # an inline target: how many of its child modules are running
        self._inline: InlineGates | None = None  # an inline target: the mode relaxing its gates while it runs

    # --- the protocol --------------------------------------------------------------------------------------
    def set_backward(self, backward: BackwardSpec, temperature: float | None = None) -> None:
        if isinstance(backward, str) and backward not in BACKWARD_NAMES:
            raise ValueError(f"layer {self.name!r}: backward must be one of {', '.join(BACKWARD_NAMES)} or a callable, "
                             f"got {backward!r}")
        if not isinstance(backward, str) and not callable(backward):
            raise ValueError(f"layer {self.name!r}: backward must be a name or a callable, "
                             f"got {type(backward).__name__}")
        if temperature is not None:
            if not temperature > 0:
                raise ValueError(f"layer {self.name!r}: temperature must be > 0, got {temperature}")
            self.temperature = float(temperature)
        self.backward = backward

    # --- hooks ---------------------------------------------------------------------------------------------
    def attach(self) -> None:
        if not self._handles:
            self._handles = [self.module.register_forward_pre_hook(self._before),
                             self.module.register_forward_hook(self._after)]
            if self.target.kind == "inline":  # the gate is looked for in its own forward, not its children's
                pooling = ADAPTIVE_POOLING_CHILDREN + POOL_CHILDREN  # their calls are their caller's (pool_relax)
                for child in self.module.modules():
                    if child is not self.module and not isinstance(child, pooling):
                        self._handles += [child.register_forward_pre_hook(lambda *_: self._step(1)),
                                          child.register_forward_hook(lambda *_: self._step(-1))]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._input, self._depth = [], None, 0
        self._leave_inline()

    def _step(self, by: int) -> None:
        self._depth += by

    def _leave_inline(self) -> None:
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.__exit__(None, None, None)

    def _before(self, _module: nn.Module, args: tuple) -> tuple | None:
        """While gradients are recorded for its input: hand the module a detached copy of it (its own backward is
        replaced, so it needs no graph; an in-place module then changes the copy, not the input the surrogate
        needs)."""
        self.calls += 1
        if self.target.kind == "inline" and isinstance(self.backward, str):
            if self.backward != "exact" and torch.is_grad_enabled() and self._inline is None:
                self._inline = InlineGates(lambda: self._depth == 0, _SurrogateGradient.apply, self.backward,
                                           self.temperature)
                self._inline.__enter__()
            return None
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if self.backward == "exact" or x is None or not torch.is_grad_enabled() or not x.requires_grad:
            self._input = None
            return None
        copy = x.detach().clone()
        self._input = (x, copy, copy._version)
        return (copy, *args[1:])

    def _check_inline(self, inline: InlineGates, args: tuple, output: Any) -> None:
        """Refuse a call whose gates BPDA did not all relax (``inline``: its watch of this call): one built where
        autograd records nothing; a selection with no gate read; fewer gates relaxed than the layer probe counted per
        call (``LayerTarget.gates``), max-pool gates among them or top-k gates only — a gate that zeroed only zeros
        on this call (:meth:`InlineGates.zeroed_nothing`, read on the host once, only where a refusal is in
        question) counting as relaxed."""
        gates, relaxed, layer = self.target.gates, inline.relaxed, f"BPDA layer {shown(self.name)} " \
            f"({type(self.module).__name__})"
        if inline.unrecorded and relaxed < gates:
            raise AttackConfigError(
                f"{layer} builds its top-k gate where autograd records nothing (inside a custom "
                "torch.autograd.Function, or under torch.no_grad), so BPDA cannot relax it and the gate's own backward "
                "would run; call that kWTA from a module of its own (bpda_layers: auto then replaces its backward), or "
                "use bpda surrogate: model, gradient estimation or square")
        unread = inline.selections and not relaxed
        short = relaxed < gates and (inline.pools.noted or relaxed > 0 or unread)
        if not (unread or short) or not _records(output):
            return
        zeroed = inline.zeroed_nothing()
        if unread and not zeroed:
            raise AttackConfigError(
                f"{layer} ran a top-k selection in its forward but built no gate BPDA could read there (on an input "
                f"of shape {_shape(args)}), so the gate's 0/1 mask would cut the gradient unseen; build the gate in "
                "one form on every input (h * (h >= t), not h[m.nonzero(as_tuple=True)] = 0 on the ranked tensor or a "
                "branch on the batch), or call that kWTA from a module of its own (bpda_layers: auto then replaces its "
                "backward), or use bpda surrogate: model, gradient estimation or square")
        if short and relaxed + zeroed < gates:
            fix = ("build each max-pool gate as h * (h == p) or h.mul_(h == p), p = F.max_pool2d(h, 3, 1, 1), on each "
                   "input (not on a branch on the batch)" if inline.pools.noted else
                   "build every gate in a form BPDA reads (h * (h >= t), each selection's mask applied once, not "
                   "h[m.nonzero(as_tuple=True)] = 0 on the ranked tensor or a branch on the batch), or call each kWTA "
                   "from a module of its own (bpda_layers: auto then replaces its backward)")
            which = (f"builds {gates} gates in its forward, max-pool winner-take-all ones among them (read by the "
                     "layer probe), but" if inline.pools.noted else f"builds {gates} top-k gates in its forward (read "
                     "by the layer probe: each application of a selection's 0/1 mask is one) but")
            raise AttackConfigError(
                f"{layer} {which} BPDA could read and relax only {relaxed} of them there (on an input of shape "
                f"{_shape(args)}), so the other gates' 0/1 masks would cut the gradient unseen; {fix}, or use bpda "
                "surrogate: model, gradient estimation or square")

    def _after(self, _module: nn.Module, args: tuple, output: Any) -> Tensor | None:
        inline = self._inline
        self._leave_inline()
        if inline is not None:
            self._check_inline(inline, args, output)
        noted, self._input = self._input, None
        if noted is None:
            return None
        x, copy, version = noted
        if len(args) != 1 or args[0] is not copy or not isinstance(output, Tensor):
            raise AttackConfigError(f"BPDA layer {self.name!r} ({type(self.module).__name__}) must map one tensor to "
                                    "one tensor; select the gate itself, not a module around it")
        if copy._version != version and not self._in_place_logged:  # the layer probe warns once per evaluation
            logger.debug("BPDA layer %s (%s) changes its input in place; it computes on a copy",
                         self.name, type(self.module).__name__)
            self._in_place_logged = True
        if callable(self.backward) or output.shape == x.shape:  # a given map g(x) -> y has its own shapes
            given = self.name if callable(self.backward) else ""
            return _SurrogateGradient.apply(x, output, self._surrogate(x, output), given)
        # a top-k gate that flattens its input's elements: its relaxation acts in the input's shape (a module that
        # reorders them, a transpose, is no gate there; straight-through would scramble the gradient)
        same_elements = output.numel() == x.numel() and output.shape[:1] == x.shape[:1]
        inner = self._surrogate(x, output.reshape(x.shape)) if same_elements else None
        if inner is None:
            raise AttackConfigError(f"BPDA layer {self.name!r}: the identity and smooth surrogates need an output "
                                    "shaped like the input (or a top-k gate that flattens it), got "
                                    f"{tuple(x.shape)} → {tuple(output.shape)}; pass a differentiable map of the "
                                    "layer as its backward, or attack without its gradients (gradient estimation, "
                                    "square)")
        shape = output.shape
        return _SurrogateGradient.apply(x, output, lambda t: inner(t).reshape(shape))

    def _surrogate(self, x: Tensor, output: Tensor) -> Callable[[Tensor], Tensor] | None:
        """The differentiable map whose VJP replaces the module's (``None``: identity)."""
        if callable(self.backward):
            return self.backward
        if self.backward == "identity" or self.target.kind == "piecewise-constant":
            return None
        grouping, score, mask = self.target.grouping, self.target.score, self.target.mask
        if grouping is None:
            # read_gate's answer with one host–device synchronisation before the fit, not one per test: every step
            read = screened_read(x.detach(), output.detach())
            if read is not None:  # else grouping stays None: the identity below
                fit, mask = read
                grouping, score = fit.grouping, fit.score
        if grouping is None:
            if not self._fallback_logged:
                logger.info("BPDA layer %s (%s): output is not a top-k selection of the input; the smooth surrogate "
                            "is the identity here", self.name, type(self.module).__name__)
                self._fallback_logged = True
            return None
        factors = self._factors(x) if score == "boosted" else None
        if score == "boosted" and factors is None:  # factors that do not fit this call (logged): its values
            score = "value"
        return functools.partial(relaxed_gate, out=output.detach(), grouping=grouping, temperature=self.temperature,
                                 score=score, factors=factors, mask=mask)

    def _factors(self, x: Tensor) -> Tensor | None:
        """The target's boosted-score factors on ``x``'s device in the dtype :func:`attacks.gates.relaxed_gate`
        scores in (at least float32; made once per device and dtype: no float64 on an accelerator, where it is slow
        or, on MPS, missing), or ``None`` — logged once, the gate then relaxed on its values — where their count is
        not ``x``'s width along dim 1 (a call at a width the layer probe never saw)."""
        factors = self.target.factors or ()
        if len(factors) != x.shape[1]:
            if not self._factors_logged:
                logger.warning("BPDA layer %s (%s): its %d boosted-score factors do not match the %d units along dim 1 "
                               "of its input %s; relaxed on its values there", self.name, type(self.module).__name__,
                               len(factors), x.shape[1], tuple(x.shape))
                self._factors_logged = True
            return None
        dtype = torch.promote_types(x.dtype, torch.float32)  # relaxed_gate's working dtype: no cast per call
        cached = self._factors_tensor
        if cached is None or cached.device != x.device or cached.dtype != dtype:
            self._factors_tensor = cached = torch.tensor(factors, dtype=dtype, device=x.device)
        return cached


def _records(output: Any) -> bool:
    """Whether autograd records some tensor of a module's ``output`` (a tensor, or a tuple, list or dict of them):
    without that no gradient reaches the call, so a gate its forward ran unrelaxed cuts nothing."""
    if isinstance(output, Tensor):
        return output.requires_grad
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    return any(_records(item) for item in items)


def _shape(args: tuple) -> str:
    """The shape of a call's first tensor argument, for messages (``?`` where it has none)."""
    return str(tuple(args[0].shape)) if args and isinstance(args[0], Tensor) else "?"


def compiled_part(model: nn.Module) -> str | None:
    """Why hooks cannot act inside ``model`` — ``"it is TorchScript ..."`` / ``"its module 'x' is torch.compile'd
    ..."`` / ``"its module 'x' calls the TorchScript function 'f' ..."`` (TorchScript has no Python hooks or a graph
    that never calls them; hooks added after ``torch.compile`` never run; :func:`attacks.inline_gates.scripted_call`:
    a block's, not a leaf's) — or ``None`` for an eager model."""
    for name, module in model.named_modules():
        what = f"its module {name!r}" if name else "it"
        if isinstance(module, torch.jit.ScriptModule):
            return f"{what} is TorchScript (torch.jit.script / torch.jit.trace), whose layers hooks cannot reach"
        if type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod"):
            return f"{what} is torch.compile'd, and hooks added after compiling never run"
        script = scripted_call(module) if next(module.children(), None) is not None else None
        if script is not None:  # a leaf's gate is read from its output; a block's from its operations
            return (f"{what} calls the TorchScript function {script!r} in forward (drop its @torch.jit.script), "
                    "whose operations hooks cannot see")
    return None


def refuse_compiled(model: nn.Module, where: str = "layers") -> None:
    """:class:`AttackConfigError` naming ``where`` if hooks cannot act inside ``model`` (:func:`compiled_part`)."""
    compiled = compiled_part(model)
    if compiled is not None:
        raise AttackConfigError(f"{where}: {compiled}, so BPDA would change nothing; attack the eager nn.Module")


@contextlib.contextmanager
def attached_backward(
    model: nn.Module, targets: Mapping[str, LayerTarget]
) -> Iterator[dict[str, SupportsSurrogateBackward]]:
    """The protocol object of every named module for the block: the module itself where it implements
    :class:`SupportsSurrogateBackward` (native path), else a :class:`ModuleBackward` whose hooks are removed on exit.
    Unknown names raise :class:`AttackConfigError`; so does a block in which the model ran but none of the wrapped
    modules did (called as ``.forward(x)`` by their parent, bypassing hooks: BPDA changed nothing), and a wrapped
    module that never ran while others did is a warning."""
    modules = dict(model.named_modules())
    # the model itself ("") is a target only where its own forward builds a gate inline (kind "inline")
    unknown = [name for name in targets if name not in modules or not (name or LayerTarget.of(targets[name]).kind
                                                                        == "inline")]
    if unknown:
        raise AttackConfigError(f"layers: the model has no module named {unknown[0]!r}")
    if targets:
        refuse_compiled(model)
    wrappers: list[ModuleBackward] = []
    controllers: dict[str, SupportsSurrogateBackward] = {}
    model_calls = [0]
    counter = model.register_forward_pre_hook(lambda _module, _args: model_calls.__setitem__(0, model_calls[0] + 1))
    try:
        for name, target in targets.items():
            module = modules[name]
            if isinstance(module, SupportsSurrogateBackward):
                controllers[name] = module
                continue
            wrapper = ModuleBackward(name, module, LayerTarget.of(target))
            wrapper.attach()
            wrappers.append(wrapper)
            controllers[name] = wrapper
        yield controllers
        _check_wrappers_ran(wrappers, model_calls[0])
    finally:
        counter.remove()
        for wrapper in wrappers:
            wrapper.detach()


def shown(name: str) -> str:
    """A module name for messages: quoted, or ``(model)`` for the model itself (``""``), which the record keeps as
    ``""``."""
    return repr(name) if name else "(model)"


def _check_wrappers_ran(wrappers: Sequence[ModuleBackward], model_calls: int) -> None:
    idle = [f"{w.name} ({type(w.module).__name__})" for w in wrappers if w.calls == 0]
    if not model_calls or not idle:
        return
    if len(idle) == len(wrappers):
        raise AttackConfigError(f"layers: BPDA's layer(s) {', '.join(idle)} never ran in {model_calls} forward(s) of "
                                "the model (a parent calling .forward() bypasses hooks, or the module is unused), so "
                                "BPDA changed nothing; name the modules the forward calls")
    logger.warning("BPDA layer(s) %s never ran in %d forward(s) of the model; BPDA acted on the others only",
                   ", ".join(idle), model_calls)


def _class_names(module: nn.Module) -> tuple[str, str]:
    cls = type(module)
    return cls.__name__, f"{cls.__module__}.{cls.__qualname__}"


def match_modules(model: nn.Module, spec: str) -> list[str]:
    """Names of the modules ``spec`` selects: the qualified name itself, else a glob on the names (``*``, ``?``,
    ``[...]``), else every module of that class (``TopK`` or ``package.module.TopK``). The root is never selected."""
    named = [(name, module) for name, module in model.named_modules() if name]
    if any(name == spec for name, _ in named):
        return [spec]
    if any(ch in spec for ch in "*?["):
        return [name for name, _ in named if fnmatch.fnmatchcase(name, spec)]
    return [name for name, module in named if spec in _class_names(module)]


def module_candidates(model: nn.Module, limit: int = 12) -> str:
    """``name (Class)`` of the model's leaf modules, for error messages (at most ``limit``, then a count)."""
    leaves = [f"{name} ({type(m).__name__})" for name, m in model.named_modules() if name and not any(m.children())]
    more = f", … {len(leaves) - limit} more" if len(leaves) > limit else ""
    return ", ".join(leaves[:limit]) + more


def select_modules(model: nn.Module, specs: Sequence[str], where: str = "layers") -> list[str]:
    """Resolve layer specs (see :func:`match_modules`) to module names, in model order, without repeats; a spec
    matching nothing, or a compiled model (:func:`refuse_compiled`), raises :class:`AttackConfigError` naming
    ``where`` (and listing the candidates)."""
    refuse_compiled(model, where)
    chosen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str) or not spec:
            raise AttackConfigError(f"{where}: expected module names, globs or class names, got {spec!r}")
        found = match_modules(model, spec)
        if not found:
            raise AttackConfigError(f"{where}: {spec!r} matches no module (by name, glob or class name); "
                                    f"candidates: {module_candidates(model)}")
        chosen.update(found)
    return [name for name, _ in model.named_modules() if name in chosen]
