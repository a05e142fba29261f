"""Which modules of a model mask gradients: a probe of every leaf module on one batch of evaluation inputs.

Gradient masking hides in individual layers (Athalye, Carlini & Wagner, ICML 2018, §3: shattered gradients from
non-differentiable operations, stochastic gradients from randomized ones), and most kWTA models are not built by
this package (Xiao et al.'s ``Sparsify*`` networks, Numenta's ``KWinners``, users' own top-k gates). Before the
attacks, :func:`detect_layers` runs the model once on a batch ``x`` ``[B, ...]`` with hooks on every leaf module
and, for each call of a leaf with one floating-point tensor in and out, classifies it from the outside:

* **top-k gate** — ``out = x · m`` with ``m ∈ {0, 1}`` (:func:`attacks.gates.mask_agreement`), something zeroed,
  a constant number of winners per group (per sample, per channel, per location or whole channels per sample:
  :func:`attacks.gates.infer_grouping`), and *competition*: at some input position a loser of one sample is not
  smaller than a winner of another, so no fixed element-wise threshold explains the selection. That last test
  separates a gate from ReLU and other element-wise thresholds, whose winner count varies and whose mask a per-position
  threshold always explains (for them not one position crosses, whatever the batch; ``competing_fraction`` in the
  evidence is the fraction of positions holding winners and losers that do). Where no position crosses (one
  sample, or a selection that is the same for every sample of the batch), a gate is one whose count ``k`` stays
  the same when its input is shifted by ± its std — an element-wise threshold's count follows the shift. Dropout
  or identity in eval mode keep everything (``k = N``) and are not gates (a gate shared by layers is one if any of
  its calls shows one: at a layer of ``k`` units or fewer it keeps everything); Numenta's boosted ``KWinners`` (winners
  chosen on boosted scores ``b_u · x``) is a gate, its ``ordered_fraction`` below 1: where per-unit factors order
  its groups (:func:`attacks.gate_factors.boosted_factors`), they are in the evidence (``score_factors``) and BPDA's
  smooth surrogate relaxes the boosted scores. A module returning a top-k gate's 0/1 mask, applied by its parent
  (``g(h) · mask(h)``), is read as the gate ``h · mask`` (:func:`gate_view`; ``output: mask`` in the evidence) and
  BPDA relaxes the mask. A gate that flattens its output is read in its input's shape (:func:`as_input_shape`); a
  call masking its input without a constant count is repeated on the input moved by :data:`TIE_JITTER` of its std:
  ties in the probe batch (a constant background) hide the count of a gate ranking by another score (boosted, |x|).
* **piecewise constant** — the layer's input gradient (a vector-Jacobian product with a random vector) is exactly
  zero, or the output does not depend on the input through autograd at all, while a small random perturbation of
  the input (0.1 %, 1 %, 10 % of its std) changes the output: rounding, quantization, hard thresholds, ``sign``.
* **randomized** — two calls on the same input differ (relative to the output's scale, more than ``1e-5``):
  noise or dropout kept active at inference; expectation over transformation (EOT) is needed.
* **max-pool gate** — a spatial winner-take-all built from a max-pool inside the module (``h · (h ==
  F.max_pool2d(h, 3, 1, 1))``, ``F.max_unpool2d`` of a max-pool's indices, or their 0/1 mask): ``out = x · m``
  whose kept values all came out of a max-pool called in the module's forward while some value it zeroed did not
  (:func:`attacks.pool_gates.is_pool_gate`, on the max-pool calls of the module's second call:
  :class:`attacks.pool_gates.PoolCalls`). Read before the top-k test, which would read it as a gate of a rule it
  does not follow (its winners per row or per channel happen to be near constant) and relax it on that. Where the
  selection watch reads the gate (``gate: max-pool``: a result, or ``h.mul_(h == p)``, ``h[h != p] = 0``:
  :mod:`attacks.pool_in_place`), ``auto`` acts on it as on an inline gate and BPDA relaxes the gate alone
  (:mod:`attacks.pool_relax`); a 0/1 mask returned or a gate made in place otherwise (by ``nonzero`` indices):
  ``auto`` leaves it, ``selections-outside-layers`` names it with the fix. ``nn.MaxPool2d``: no gate.
Modules implementing :class:`attacks.bpda_protocol.SupportsSurrogateBackward` (our kWTA layers) are listed as
``bpda_capable`` whatever the probe finds. ``bpda_layers: auto`` acts on every gate, every piecewise-constant layer
and every BPDA-capable module (:meth:`Detection.auto_targets`). The evidence of each finding (shape, grouping,
``k`` per group, agreement fractions, gradient and perturbation numbers) goes into the record.

The probe runs in eval mode (Numenta's duty cycles update only in train mode) under a forked RNG seeded from ``seed``
(the caller's RNG state is untouched), never computes parameter gradients, and leaves the model exactly as it was (all
hooks removed). Cost: about five forward passes and one backward pass of the model on ``B`` inputs. Only leaf modules
called with one positional tensor are probed: a gate written as a function call inside a parent's ``forward``, inside a
module with children, or called with keyword arguments is invisible here. One more forward (:func:`selections_outside`)
lists the calls of torch's selection operations (``topk``, ``sort``, quantiles …) made outside every module ``auto``
acts on (``selections``) and counts the ReLUs and other activations applied (``relu_calls``, ``other_activations``),
so the diagnostics can say when such a gate went unreplaced; where one feeds a top-k gate built in the same forward
(``gate``: ``x + kwta(conv(x))``), ``auto`` acts on that module (:meth:`Detection.inline_gates`) and BPDA relaxes it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from attacks.base import eval_mode, rng_scope, seeded_generator
from attacks.bpda_protocol import SupportsSurrogateBackward
from attacks.bpda_wrap import LayerTarget
from attacks.gate_factors import BOOSTED_EVIDENCE_KEYS, boosted_factors
from attacks.gates import (MIN_MASK_AGREEMENT, GateFit, infer_grouping, mask_agreement, mask_as_gate,
                           selection_score, true_fraction)
from attacks.pool_gates import PoolCalls, is_pool_gate
from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.model_checks import check_hookable
from kwta_robust.detect_selections import selections_outside
from kwta_robust.relu_calls import ReluCount
from kwta_robust.relu_winners import zeroes_negative_winners
from kwta_robust.selection_entries import is_max_pool_op, where_called
from kwta_robust.tie_break import TIE_JITTER, nudged as _nudged, spread as _spread

logger = logging.getLogger(__name__)

GATE, PIECEWISE_CONSTANT, RANDOMIZED, POOL_GATE = "gate", "piecewise-constant", "randomized", "max-pool-gate"
KINDS: tuple[str, ...] = (GATE, PIECEWISE_CONSTANT, RANDOMIZED, POOL_GATE)
#: Perturbation scales (fractions of the input's std) for the piecewise-constant test.
PERTURBATION_SCALES: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
#: Two calls differing by more than this, relative to the largest output, make a module randomized.
RANDOM_RTOL = 1e-5


def unrelaxed_pool_gates(detection: Mapping[str, Any]) -> set[str]:
    """The max-pool gates (:data:`POOL_GATE`) of ``detection`` (:meth:`Detection.to_dict`) whose forward returned no
    gate BPDA relaxes (no selection of ``gate`` :data:`~attacks.pool_relax.POOL_GATE_MARK`: a mask, a gate made in
    place): ``auto`` leaves them out, with a top-k gate built inline beside, and the flags name them."""
    relaxed = {s["modules"][-1] for s in detection.get("selections", [])
               if s.get("gate") == POOL_GATE_MARK and s.get("modules")}
    return {l["name"] for l in detection.get("layers", [])
            if POOL_GATE in l.get("kinds", ()) and l["name"] not in relaxed}


def pool_gate_fix(names: list[str]) -> str:
    """The fix for the max-pool winner-take-all gates (:data:`POOL_GATE`, :mod:`attacks.pool_gates`) built in the
    modules ``names`` in a form BPDA cannot relax (a 0/1 mask returned for the parent, a gate made in place):
    ``bpda_layers: auto`` leaves them out and the smooth surrogate has no relaxation of them, so
    the ``model`` surrogate must be given them by name (it distils a twin whose learned surrogates replace them)."""
    return (f"name {'it' if len(names) == 1 else 'them'} for surrogate: model (bpda_layers: [{', '.join(names)}]) "
            "and add gradient estimation and square")


@dataclass
class LayerFinding:
    """One leaf module with what the probe found (``kinds`` ⊆ :data:`KINDS`) and the evidence."""

    name: str
    module_class: str
    kinds: list[str]
    grouping: str | None = None
    native: bool = False
    evidence: dict = field(default_factory=dict)

    def target(self) -> LayerTarget:
        if GATE in self.kinds:
            factors, statistic = (ev := self.evidence).get("score_factors"), ev.get("statistic")
            mask = self.evidence.get("output") == "mask" and self.grouping is not None
            if factors is not None and self.grouping is not None:
                return LayerTarget(GATE, self.grouping, "boosted", tuple(factors), mask=mask)
            if self.grouping == "whole-channel":
                return LayerTarget(GATE, self.grouping, statistic, mask=mask)
            # (calls that disagree on the grouping or on returning the mask leave it None: BPDA reads them per call)
            score = selection_score(ev.get("ordered_fraction", 1.0), ev.get("magnitude_ordered_fraction", 0.0),
                                    ev.get("smallest_ordered_fraction", 0.0))  # "relu": a top-k then a ReLU
            return LayerTarget(GATE, self.grouping, "relu" if score == "value" and ev.get("relu") else score, mask=mask)
        if PIECEWISE_CONSTANT in self.kinds:
            return LayerTarget(PIECEWISE_CONSTANT)
        return LayerTarget()


@dataclass
class Detection:
    """Result of :func:`detect_layers`: ``n`` probed inputs, ``probed`` leaf modules, the findings, the BPDA-capable
    modules (model order), the selection calls made outside all of them (:func:`selections_outside`), the probe's
    wall time, added by the runner once the BPDA layers are resolved the unclassified modules they name
    (:mod:`kwta_robust.straight_through`), the one-winner calls no gate followed (``unread_winners``), the ReLUs one
    forward applied outside the gates (:mod:`kwta_robust.relu_calls`)."""

    n: int = 0
    probed: int = 0
    layers: list[LayerFinding] = field(default_factory=list)
    bpda_capable: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    selections: list[dict] = field(default_factory=list)
    straight_through: dict[str, dict] = field(default_factory=dict)
    unread_winners: list[dict] = field(default_factory=list)  # :mod:`kwta_robust.unread_winners`
    relu_calls: int = 0
    other_activations: dict[str, int] | None = None  # by kind, beside the ReLUs; None: not counted (older record)

    def names(self, kind: str) -> list[str]:
        return [f.name for f in self.layers if kind in f.kinds]

    def finding(self, name: str) -> LayerFinding | None:
        return next((f for f in self.layers if f.name == name), None)

    def inline_gates(self) -> list[str]:
        """The modules whose own ``forward`` builds a top-k gate from a selection operation (a selection with
        ``gate``, :func:`~kwta_robust.detect_selections.selections_outside`), in listing order; the model itself
        (``""``) is one when its own ``forward`` builds the gate: BPDA hooks the root module like any other."""
        return list(dict.fromkeys(s["modules"][-1] for s in self.selections if s.get("gate") and s.get("modules")))

    def auto_targets(self) -> dict[str, LayerTarget]:
        """What ``bpda_layers: auto`` acts on: gates, piecewise-constant layers, BPDA-capable modules and modules
        building a gate inline (:meth:`inline_gates`); not a max-pool gate BPDA cannot relax, with a top-k gate or
        not (:func:`unrelaxed_pool_gates`)."""
        names = set(self.names(GATE)) | set(self.names(PIECEWISE_CONSTANT)) | set(self.bpda_capable)
        order = [f.name for f in self.layers] + [n for n in self.bpda_capable if self.finding(n) is None]
        pooled = unrelaxed_pool_gates(self.to_dict())
        inline = [n for n in self.inline_gates() if n not in names and n not in pooled]
        return {name: self.target(name) for name in order + inline if name in names or name in inline}

    def target(self, name: str) -> LayerTarget:
        finding = self.finding(name)
        if finding is not None and not (POOL_GATE in finding.kinds and name in self.inline_gates()):
            return finding.target()
        if name not in self.inline_gates():
            return LayerTarget()
        # the fewest gates one call of its forward built (``gates``, where two or more): BPDA refuses one relaxing fewer
        counts = [int(s.get("gates", 1)) for s in self.selections
                  if s.get("gate") and (s.get("modules") or [])[-1:] == [name]]
        return LayerTarget("inline", gates=min(counts))

    def to_dict(self) -> dict:  # empty unread_winners, uncounted other_activations left out; relu_calls 0: none ran
        return {k: v for k, v in asdict(self).items() if v or k != "unread_winners" and v is not None}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Detection":
        data = dict(data or {})
        return cls(layers=[LayerFinding(**dict(f)) for f in data.pop("layers", [])], **data)


def competing_fraction(x: Tensor, out: Tensor) -> tuple[float, int]:
    """Among input positions (all non-batch elements) holding winners and losers over the batch, the fraction where
    the largest loser is not below the smallest winner, and their count: a loser equal to a winner at one position
    is competition too, as no element-wise threshold keeps a value in one sample and drops it in another. Losers
    with input exactly 0 are ignored."""
    win = out != 0
    lose = (out == 0) & (x != 0)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    smallest_winner = torch.where(win, x, inf).amin(dim=0)
    largest_loser = torch.where(lose, x, -inf).amax(dim=0)
    mixed = win.any(dim=0) & lose.any(dim=0)
    crossed = mixed & (largest_loser >= smallest_winner)
    n_mixed = int(mixed.sum())
    return (float(crossed.sum()) / n_mixed if n_mixed else 0.0), int(crossed.sum())


def gate_view(x: Tensor, out: Tensor) -> tuple[Tensor, bool]:
    """``out`` as a gate reads it: in ``x``'s shape (:func:`as_input_shape`), and for a module returning a 0/1 mask
    (applied by its parent: ``g(h) · topk_mask(h)``), ``x · mask`` (:func:`attacks.gates.mask_as_gate`), and True."""
    out = as_input_shape(x, out)
    gated = mask_as_gate(x, out)
    return (out, False) if gated is None else (gated, True)


def _pool_gate(x: Tensor, view: Tensor, pools: list[tuple[str, Tensor, Tensor]]) -> bool:
    """Whether ``view`` (a call's output as :func:`gate_view` reads it) is ``x · mask``, zeroing some of ``x``, and a
    winner-take-all gate built from one of ``pools`` (``(name, input, pooled values)`` of the max-pools its forward
    called: :func:`attacks.pool_gates.is_pool_gate`)."""
    return bool(pools) and mask_agreement(x, view) >= MIN_MASK_AGREEMENT \
        and is_pool_gate(view, [x], [(i, v) for _, i, v in pools], known_gated=x)


def as_input_shape(x: Tensor, out: Tensor) -> Tensor:
    """``out`` reshaped like ``x`` when a module flattened (or otherwise reshaped) its input's elements without
    reordering them (``[N, C, H, W] → [N, C·H·W]``); otherwise ``out`` itself."""
    if out.shape != x.shape and out.numel() == x.numel() and out.ndim >= 1 and out.shape[:1] == x.shape[:1]:
        return out.reshape(x.shape)
    return out


class _LeafProbe:
    """Hooks on one leaf module that classify each call (see the module docstring)."""

    def __init__(self, name: str, module: nn.Module, generator: torch.Generator) -> None:
        self.name, self.module, self.generator = name, module, generator
        self.calls: list[dict[str, Any]] = []
        self._busy = False
        self._input: Tensor | None = None
        self._version: int | None = None

    def before(self, _module: nn.Module, args: tuple) -> None:
        if not self._busy:  # a copy: an in-place module would overwrite its input
            one = len(args) == 1 and isinstance(args[0], Tensor)
            self._input = args[0].detach().clone() if one else None
            # an inference tensor (a forward under torch.inference_mode) has no version counter
            self._version = args[0]._version if one and not args[0].is_inference() else None

    def after(self, _module: nn.Module, args: tuple, output: Any) -> None:
        if self._busy:
            return
        x, self._input = self._input, None
        if x is None or not isinstance(output, Tensor) or not x.is_floating_point() or not output.is_floating_point():
            return  # not one floating-point tensor in and out: not probed
        self._busy = True
        try:
            call = self._classify(x, output.detach())
        finally:
            self._busy = False
        # BPDA hands such a module a copy (attacks.bpda_wrap)
        if self._version is not None and args[0]._version != self._version:
            call["evidence"]["in_place"] = True
        call["keeps_shape"] = output.shape == x.shape
        self.calls.append(call)

    def _call(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x.clone())  # a copy: an in-place module must not change the probe's input

    def _classify(self, x: Tensor, out: Tensor) -> dict[str, Any]:
        found: dict[str, Any] = {"kinds": set(), "evidence": {"shape": list(x.shape)}}
        with PoolCalls() as pools:  # the max-pools of its forward: a max-pool gate's winners came out of one
            again = self._call(x)
        scale = max(float(out.abs().max()) if out.numel() else 0.0, 1e-12)
        diff = float("inf") if again.shape != out.shape else float((again - out).abs().max()) if out.numel() else 0.0
        if diff > RANDOM_RTOL * scale:
            found["kinds"].add(RANDOMIZED)
            found["evidence"].update({"max_call_difference": diff, "max_abs_output": scale})
        view, is_mask = gate_view(x, out)
        if _pool_gate(x, view, pools.pools):
            found["kinds"].add(POOL_GATE)
            found["evidence"].update({"selection": "max-pool winner-take-all", "pools": sorted({n for n, _, _ in
                                      pools.pools}), "density": true_fraction(view != 0)})
            if is_mask:
                found["evidence"]["output"] = "mask"
            return found
        gate_x, gate_out, fit = self._gate_fit(x, view)
        if fit is not None:
            competing, crossed = competing_fraction(gate_x, gate_out)
            if crossed or (self._k_survives_shifts(gate_x, fit)
                           and (not is_mask or self._mask_follows_input(x, out))):
                found["kinds"].add(GATE)
                found["grouping"] = fit.grouping
                found["evidence"].update(fit.to_dict())
                found["evidence"].update({"mask_agreement": mask_agreement(gate_x, gate_out),
                                          "competing_fraction": competing, "competing_positions": crossed,
                                          "density": true_fraction(gate_out != 0)})
                boosted = boosted_factors(gate_x, gate_out, fit)
                if boosted is not None:
                    found["evidence"].update(boosted.evidence())
                if gate_x is not x:
                    found["evidence"]["ties_broken"] = TIE_JITTER
                if out.shape != x.shape:
                    found["evidence"]["output_shape"] = list(out.shape)
                if is_mask:
                    found["evidence"]["output"] = "mask"
                elif fit.grouping != "whole-channel" and zeroes_negative_winners(self._call, gate_x, gate_out):
                    found["evidence"]["relu"] = True  # a top-k then a ReLU (kwta_robust.relu_winners)
                return found
        if RANDOMIZED not in found["kinds"]:
            found["evidence"].update(self._piecewise_evidence(x, out, found["kinds"]))
        return found

    def _gate_fit(self, x: Tensor, out: Tensor) -> tuple[Tensor, Tensor, GateFit | None]:
        """The gate this call shows, on the input and the output as :func:`gate_view` reads it (in the input's
        shape, a returned mask as the gate it builds), and the input it was read on: where
        ties in the probe batch (a constant image background makes hundreds of equal values in one channel) hide
        a constant count of winners that the gate chose among them by another score (boosted, ``|x|``), the call
        is repeated on the input moved by :data:`TIE_JITTER` of its std (seeded noise): what a gate is does not
        depend on the batch it is probed with."""
        fit = infer_grouping(x, out)
        if fit is not None or out.shape != x.shape or mask_agreement(x, out) < MIN_MASK_AGREEMENT:
            return x, out, fit
        moved = _nudged(x, TIE_JITTER, seed=0)
        if moved is None:
            return x, out, None
        moved_out = gate_view(moved, self._call(moved))[0]
        moved_fit = infer_grouping(moved, moved_out)
        return (moved, moved_out, moved_fit) if moved_fit is not None else (x, out, None)

    def _k_survives_shifts(self, x: Tensor, fit: GateFit) -> bool:
        """Whether the winner count stays ``fit.k`` (same grouping) when the input moves by ± its std: true for a
        top-k gate, false for an element-wise threshold, whose count follows the shift (within one for a gate whose
        count is ``k`` or ``k + 1``: :func:`attacks.gates.threshold_fit`)."""
        spread = _spread(x)
        for shift in (spread, -spread) if spread > 0 else ():
            moved = infer_grouping(x + shift, gate_view(x + shift, self._call(x + shift))[0])
            if moved is None or moved.grouping != fit.grouping \
                    or abs(moved.k - fit.k) > max(moved.k_spread, fit.k_spread):  # a quantile's k or k + 1
                return False
        return spread > 0

    def _mask_follows_input(self, x: Tensor, out: Tensor) -> bool:
        """Whether a module returning a 0/1 mask that no position of the batch shows competing (the same mask for
        every sample) selects by its input at all: its mask changes when the input moves by seeded noise of its
        std. A mask that does not — an attention mask (``tril(ones_like(s))``), a frozen pattern — is no gate: its
        output does not depend on its input, and a relaxation would invent a gradient through it."""
        moved = _nudged(x, 1.0, seed=1)
        if moved is None:
            return False
        again = self._call(moved)
        return again.shape != out.shape or not torch.equal(again, out)

    def _piecewise_evidence(self, x: Tensor, out: Tensor, kinds: set) -> dict[str, Any]:
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            y = self.module(xg.clone())
            grad = None
            if isinstance(y, Tensor) and y.is_floating_point() and y.requires_grad:
                v = torch.randn(y.shape, generator=self.generator, device=y.device, dtype=y.dtype)
                (grad,) = torch.autograd.grad(y, xg, v, allow_unused=True)
        if grad is not None and bool((grad != 0).any()):
            return {}
        spread = float(x.std()) if x.numel() > 1 else 0.0
        spread = spread if spread > 0 else max(float(x.abs().max()), 1.0)
        for fraction in PERTURBATION_SCALES:
            noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            moved = self._call(x + fraction * spread * noise)
            changed = true_fraction(moved != out) if moved.shape == out.shape else 1.0
            if changed > 0:
                kinds.add(PIECEWISE_CONSTANT)
                return {"input_gradient": "none" if grad is None else "zero", "perturbation_std_fraction": fraction,
                        "changed_output_fraction": changed}
        return {}

    def finding(self, native: bool) -> LayerFinding | None:
        """The module's kinds over its calls: a gate where any call showed one (a call of a shared gate that keeps
        everything, ``k = N`` at that shape, shows none; ``gate_calls`` in the evidence counts those that did),
        randomized where any call was, piecewise-constant where every call was."""
        if not self.calls:
            return None
        gate_calls = [c for c in self.calls if GATE in c["kinds"]]
        kinds = [k for k in KINDS if (all(k in c["kinds"] for c in self.calls) if k == PIECEWISE_CONSTANT
                                      else any(k in c["kinds"] for c in self.calls))]
        if not kinds and not native:
            return None
        calls = gate_calls or self.calls  # a gate's evidence and grouping are those of the calls that showed it
        # calls of other groupings, or whole channels ranked by other statistics: no one grouping (read at each call)
        groupings = {(c.get("grouping"), c["evidence"].get("statistic"), c["evidence"].get("output")) for c in calls}
        evidence = dict(calls[0]["evidence"])
        evidence["calls"] = len(self.calls)
        if gate_calls and len(gate_calls) < len(self.calls):
            evidence["gate_calls"] = len(gate_calls)
        # a module called on inputs of other shapes (one gate shared by two layers): k of each shape, call order
        k_by_shape = {tuple(c["evidence"]["shape"]): [c["evidence"]["k"], c["evidence"]["group_size"]]
                      for c in calls if "k" in c["evidence"]}
        if len(k_by_shape) > 1:
            evidence["k_per_shape"] = [[list(shape), *k] for shape, k in k_by_shape.items()]
        if len(groupings) != 1:  # no one grouping: no one ranking statistic (nor mask output) either
            evidence.pop("statistic", None)
            evidence.pop("output", None)
        if len(groupings) != 1 or any(len(c["evidence"].get("score_factors") or ())
                                      != len(evidence.get("score_factors") or ()) for c in calls):
            # a gate shared by layers of other widths or groupings: no one set of factors
            for key in BOOSTED_EVIDENCE_KEYS:
                evidence.pop(key, None)
        return LayerFinding(self.name, type(self.module).__name__, kinds,
                            groupings.pop()[0] if len(groupings) == 1 and GATE in kinds else None, native, evidence)


def detect_layers(model: nn.Module, x: Tensor, seed: int = 0, log: bool = True) -> Detection:
    """Probe every leaf module of ``model`` on ``x`` ``[B, ...]`` (in eval mode; see the module docstring); a
    compiled model (TorchScript, ``torch.compile``), whose modules hooks cannot reach, is a one-line error.
    ``log=False``: no log lines (a pre-check: the runner logs the findings of the probe it keeps or makes)."""
    check_hookable(model, "model")
    start = time.perf_counter()
    named = [(name, m) for name, m in model.named_modules() if name]
    capable = [name for name, m in named if isinstance(m, SupportsSurrogateBackward)]
    leaves = [(name, m) for name, m in named if not any(m.children()) or name in capable]
    generator = seeded_generator(seed, x.device)
    probes = [_LeafProbe(name, m, generator) for name, m in leaves]
    handles = []
    try:
        for probe in probes:
            handles.append(probe.module.register_forward_pre_hook(probe.before))
            handles.append(probe.module.register_forward_hook(probe.after))
        with eval_mode(model), rng_scope(seed), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    findings = [f for f in (p.finding(p.name in capable) for p in probes) if f is not None]
    detection = Detection(int(x.shape[0]), sum(1 for p in probes if p.calls), findings, capable)
    relus = ReluCount(int(x.shape[0]), [*detection.names(GATE), *detection.names(POOL_GATE), *capable])
    detection.selections = selections_outside(model, x, detection.auto_targets(), seed, relus=relus, probed={
        p.name: all(c["keeps_shape"] for c in p.calls) for p in probes if p.calls}, unread=detection.unread_winners)
    detection.selections, detection.relu_calls = detection.selections + unnoted_pool_gates(detection), relus.calls
    detection.other_activations = relus.other_activations()
    detection.wall_time_s = time.perf_counter() - start
    if log:
        log_findings(detection)
    return detection


def unnoted_pool_gates(detection: Detection) -> list[dict]:
    """A selection entry (as :func:`~kwta_robust.detect_selections.selections_outside` makes them: ``op`` the
    max-pool, ``modules`` the module's name and those around it by name, ``probed``) for each max-pool gate the probe
    found whose forward the selections' watch saw build no such gate — one returning its 0/1 mask for the parent to
    apply, or gating in place — so that ``selections-outside-layers`` names every max-pool gate BPDA left alone."""
    noted = {s["modules"][-1] for s in detection.selections if s.get("modules") and is_max_pool_op(s)}
    entries = []
    for f in detection.layers:
        if POOL_GATE in f.kinds and f.name not in noted:
            parts = f.name.split(".")
            entries.append({"op": (f.evidence.get("pools") or ["max_pool2d"])[0], "kind": "selection",
                            "modules": [""] + [".".join(parts[:i]) for i in range(1, len(parts) + 1)],
                            "calls": int(f.evidence.get("calls", 1)), "probed": True, "keeps_shape": True})
    return entries


def log_findings(detection: Detection) -> None:
    """The layer probe's findings as log lines: one info line per layer, warnings for in-place layers and for
    selections made outside every layer (also for a probe made silently before the run and kept by it)."""
    for finding in detection.layers:
        logger.info("layer %s (%s): %s%s", finding.name, finding.module_class, ", ".join(finding.kinds) or "-",
                    f" ({finding.grouping})" if finding.grouping else "")
        if finding.evidence.get("in_place") and finding.kinds:
            logger.warning("layer %s (%s) changes its input in place: while BPDA acts on it, it computes on a copy, "
                           "so code after it that reads that input sees it unchanged (the runner re-classifies every "
                           "adversarial input on the model as it is)", finding.name, finding.module_class)
        if POOL_GATE in finding.kinds and finding.name not in detection.inline_gates():
            logger.warning("layer %s (%s) is a winner-take-all built from a max-pool in a form BPDA cannot relax (its "
                           "0/1 mask returned, or made in place, not as h.mul_(h == p) or h[h != p] = 0), which "
                           "bpda_layers: auto leaves out: %s", finding.name, finding.module_class,
                           pool_gate_fix([finding.name]))
    pool_gates = set(detection.names(POOL_GATE))
    for selection in detection.selections:
        if (selection.get("modules") or [""])[-1] in pool_gates and not selection.get("gate"):  # warned above
            continue
        if selection.get("gate") == POOL_GATE_MARK:
            logger.info("the model builds a winner-take-all gate from a max-pool: %s; BPDA's smooth surrogate relaxes "
                        "it where it acts on that module (bpda_layers: auto does)", where_called(selection))
            continue
        if selection.get("gate"):
            logger.info("the model builds a top-k gate (%s) inline: %s; BPDA relaxes it where it acts on that module "
                        "(bpda_layers: auto does)", selection["gate"], where_called(selection))
            continue
        logger.warning("the model calls %s, %s (%d call(s))%s", where_called(selection),
                       "a module whose outputs showed no top-k gate" if selection["probed"] else
                       "outside any layer the probe can classify", selection["calls"],
                       "; a step function: no gradient flows through it" if selection["kind"] == "step" else "")
