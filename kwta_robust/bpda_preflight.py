"""Every BPDA attack's applicability, checked before an evaluation's first computation.

A module named in ``bpda_layers`` that BPDA cannot act through (it returns a tuple, is called with keyword
arguments, or changes its input's number of elements: :mod:`kwta_robust.straight_through`) used to be refused only
when the runner resolved the BPDA layers, after the clean pass and the model probes had run and a partial record had
been written; a top-k gate built inside a custom ``torch.autograd.Function`` of a module BPDA acts on inline, only at
BPDA's first gradient. :func:`precheck` runs the same layer probe, the same resolution, the same straight-through
probe and one forward with BPDA's hooks on the selected samples and raises the same one-line error. An evaluation
runs it (:func:`run_precheck`) once the model is in the run's memory layout and a record to resume has been read,
before the clean pass and before any file is written; the runner keeps the probe and the straight-through notes it
made (or the resumed record's, which it reads instead), so each is made once per evaluation and no number moves. A
comparison runs it on every model before the first evaluation (:func:`check_bpda_applicable`), in the layout the
evaluation will try, so that the evaluation keeps that probe too. :func:`plan_bpda` is the resolution they share.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from attacks.base import eval_mode, rng_scope
from attacks.bpda import DEFAULT_SURROGATE
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from kwta_robust.bpda_layers import (bpda_fields, for_surrogate, plan_bpda_layers, refuse_pool_gates,
                                     resolve_bpda_layers)
from kwta_robust.detect import Detection, detect_layers, log_findings
from kwta_robust.runtime import channels_last_convolutions
from kwta_robust.straight_through import Use, note_straight_through

#: The surrogates that relax a gate built inline while the module around it runs (the others never meet one).
INLINE_SURROGATES = ("smooth", "identity")

#: The field a BPDA sanity attack's layers come from, as its refusals name it (the top-level ``bpda_layers``).
SANITY_LAYERS = "bpda_layers (the diagnostics.sanity bpda attack's layers)"

#: A resolved BPDA plan: the layers of every BPDA attack (by label), the BPDA sanity attack's (or ``None``) and
#: every (surrogate, layers) use, in that order.
Plan = tuple[dict[str, dict[str, LayerTarget]], "dict[str, LayerTarget] | None", list[Use]]


def plan_bpda(model: nn.Module, specs: Sequence[Any], cfg: Any, detection: Mapping[str, Any],
              strict: bool) -> Plan:
    """Resolve the ``bpda_layers`` of every BPDA attack in ``specs`` and of a BPDA sanity attack against the layer
    probe's ``detection`` (a record's dict; the sanity attack's layers only where there is one), each refused as
    :func:`~kwta_robust.bpda_layers.plan_bpda_layers` refuses a max-pool gate for the smooth surrogate."""
    bpda = [s for s in specs if s.attack == "bpda"]
    found = Detection.from_dict(dict(detection))
    layers = plan_bpda_layers(model, bpda, cfg.bpda_layers, found, strict)
    sanity = cfg.diagnostics.sanity
    sanity_layers = None
    if sanity is not None and sanity.attack == "bpda" and detection:
        surrogate = sanity.params.get("surrogate", DEFAULT_SURROGATE)
        resolved = resolve_bpda_layers(model, cfg.bpda_layers, found, strict=strict)
        refuse_pool_gates(resolved, surrogate, found, SANITY_LAYERS)
        sanity_layers = for_surrogate(surrogate, resolved)
    uses = [(s.params.get("surrogate", DEFAULT_SURROGATE), layers[s.label]) for s in bpda] + (
        [(sanity.params.get("surrogate", DEFAULT_SURROGATE), sanity_layers)] if sanity_layers else [])
    return layers, sanity_layers, uses


class Prechecked(NamedTuple):
    """What :func:`precheck` found: ``probe``, the layer probe it made (``None``: it was given a detection, or none
    was needed; :func:`run_precheck` puts a comparison's probe here, whose findings the runner then logs);
    ``detection``, the record's detection that probe (or the one given) makes, the straight-through notes of the
    modules BPDA acts on included (``None``: no BPDA attack)."""

    probe: Detection | None
    detection: dict[str, Any] | None


def precheck(model: nn.Module, x: Tensor, cfg: Any, specs: Sequence[Any], strict: bool,
             detection: Mapping[str, Any] | None = None) -> Prechecked:
    """Raise the runner's one-line ConfigError now if some BPDA attack of ``specs`` (or the BPDA sanity attack)
    could not act on the layers it names; ``x``: the evaluation's selected samples (the first
    ``diagnostics.gradient_batch`` are probed, as the runner probes them); ``detection``: a layer probe already
    made (a shard's, from its driver; a resumed record's; a comparison's), else one is made here, silently. Returns
    what was found, for the runner to keep instead of probing the same inputs under the same seed again
    (:func:`reusable_probe`): valid for the run only where the model was probed in the run's memory layout. The
    model is left as it was (every probe removes its hooks and restores modes and the global RNG)."""
    sanity = cfg.diagnostics.sanity
    bpda_sanity = sanity is not None and sanity.attack == "bpda" and cfg.diagnostics.enabled
    if not any(s.attack == "bpda" for s in specs) and not bpda_sanity:
        return Prechecked(None, None)
    probe_x = x[:min(cfg.diagnostics.gradient_batch, int(x.shape[0]))]
    made = None if detection is not None else detect_layers(model, probe_x, seed=cfg.seed, log=False)
    found = dict(detection) if made is None else made.to_dict()  # a copy: the straight-through notes go on it
    uses = plan_bpda(model, specs, cfg, found, strict)[2]
    note_straight_through(found, model, probe_x, uses, cfg.seed, bpda_fields(specs))
    check_unrecorded_gates(model, probe_x, uses, cfg.seed)
    return Prechecked(made, found)


def check_unrecorded_gates(model: nn.Module, x: Tensor, uses: Sequence[Use], seed: int) -> None:
    """Raise now BPDA's refusal of a top-k gate built where autograd records nothing (inside a custom
    ``torch.autograd.Function``'s ``forward``) in a module it acts on inline: the smooth and identity surrogates
    relax an inline gate only while autograd records it (:mod:`attacks.inline_gates`), and
    :class:`attacks.bpda_wrap.ModuleBackward` refuses such a call at the attack's first gradient, after the clean
    pass and the attacks before it; so is its refusal of a call that ran a selection there but relaxed no gate, where
    the probe inputs already show it. One forward with gradients on the probe inputs ``x``, per (surrogate, layers)
    use that acts on an inline target, with BPDA's hooks attached as the attack attaches them (eval mode, global RNG
    seeded with ``seed`` and restored); nothing else runs, and the hooks are removed after."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for surrogate, layers in uses:
        key = (surrogate, tuple(layers))
        if surrogate not in INLINE_SURROGATES or key in seen or not any(
                LayerTarget.of(t).kind == "inline" for t in layers.values()):
            continue
        seen.add(key)
        with attached_backward(model, layers) as controllers, \
                surrogate_backward(model, surrogate, None, controllers), eval_mode(model), rng_scope(seed), \
                torch.enable_grad():
            model(x.detach().clone().requires_grad_(True))


class LayerProbe(NamedTuple):
    """A layer probe made before an evaluation (a comparison's pre-check) and the memory layout ``model`` was in
    (``"channels_last"`` or ``"as given"``, as :func:`~kwta_robust.runtime.evaluation_layout` names them): an
    evaluation keeps it only where it runs in that layout (convolutions round differently in the other)."""

    detection: Detection
    layout: str


def check_bpda_applicable(model: nn.Module, x: Tensor, cfg: Any, specs: Sequence[Any], strict: bool,
                          channels_last: bool = False) -> LayerProbe | None:
    """:func:`precheck`, before an evaluation starts (a comparison's): the layer probe it made and its layout
    (``None``: none was made), which an evaluation in that layout keeps (``evaluate(layer_probe=...)``).
    ``channels_last``: the evaluation will try channels-last (:func:`~kwta_robust.runtime.converts`), so the check
    runs with the model's plain ``Conv2d`` weights converted as the evaluation converts them (the very same weights:
    :func:`~kwta_robust.runtime.channels_last_convolutions`) and put back after; a model with none, or that cannot
    run so (the evaluation then keeps its own layout too), is checked in its own layout. An evaluation that keeps
    another layout than the probe's probes again itself: the recorded detection is the one it would make."""
    if channels_last:
        with channels_last_convolutions([model]) as converted:
            try:
                made = precheck(model, x, cfg, specs, strict).probe if converted else None
            except RuntimeError:  # e.g. a .view of an NCHW tensor: checked below in the model's own layout
                converted = 0
        if converted:
            return None if made is None else LayerProbe(made, "channels_last")
    made = precheck(model, x, cfg, specs, strict).probe
    return None if made is None else LayerProbe(made, "as given")


def reusable_probe(checked: Prechecked | None) -> dict[str, Any] | None:
    """The record's detection from the runner's BPDA pre-check (made in the run's memory layout, on the same model,
    the same first ``diagnostics.gradient_batch`` samples and the same seed, straight-through notes included), its
    findings logged as the runner's own probe logs them; ``None`` where the runner must probe itself (no probe was
    made: no BPDA attack)."""
    if checked is None or checked.detection is None:
        return None
    if checked.probe is not None:
        log_findings(checked.probe)
    return checked.detection


def run_precheck(model: nn.Module, x: Tensor, cfg: Any, specs: Sequence[Any], strict: bool,
                 driver: Mapping[str, Any] | None, kept: Mapping[str, Any] | None,
                 given: Detection | None) -> tuple[Prechecked | None, dict[str, Any] | None]:
    """An evaluation's :func:`precheck`, made once the model is in the run's memory layout (the layer probe it makes
    is then the one the runner would make, and is kept: one probe per evaluation). ``driver``: a shard's detection
    from its driver; else ``kept``: a resumed record's; else ``given``: a probe made before the run in this layout
    (a comparison's); else a probe is made. Returns what the runner keeps for a record that holds no detection (or
    ``None``), and ``kept`` with the straight-through notes added (or ``None``)."""
    if driver is not None:
        precheck(model, x, cfg, specs, strict, driver)
        return None, None
    found = precheck(model, x, cfg, specs, strict, kept if given is None else given.to_dict())
    if kept is not None:
        return None, found.detection
    return (found if given is None else Prechecked(given, found.detection)), None
