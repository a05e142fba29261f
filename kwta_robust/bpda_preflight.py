"""Every BPDA attack's applicability, checked before an evaluation's first computation.

A module named in ``bpda_layers`` that BPDA cannot act through (it returns a tuple, is called with keyword
arguments, or changes its input's number of elements: :mod:`kwta_robust.straight_through`) used to be refused only
when the runner resolved the BPDA layers, after the clean pass and the model probes had run and a partial record had
been written. :func:`check_bpda_applicable` runs the same layer probe, the same resolution and the same
straight-through probe on the selected samples before the runner starts its record (no file read or written), and
raises the same one-line :class:`~kwta_robust.errors.ConfigError`; it records nothing, so no number moves.
:func:`plan_bpda` is the resolution both share.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from attacks.bpda import DEFAULT_SURROGATE
from attacks.bpda_wrap import LayerTarget
from kwta_robust.bpda_layers import bpda_fields, plan_bpda_layers, resolve_bpda_layers
from kwta_robust.detect import Detection, detect_layers
from kwta_robust.straight_through import Use, note_straight_through

#: A resolved BPDA plan: the layers of every BPDA attack (by label), the BPDA sanity attack's (or ``None``) and
#: every (surrogate, layers) use, in that order.
Plan = tuple[dict[str, dict[str, LayerTarget]], "dict[str, LayerTarget] | None", list[Use]]


def plan_bpda(model: nn.Module, specs: Sequence[Any], cfg: Any, detection: Mapping[str, Any],
              strict: bool) -> Plan:
    """Resolve the ``bpda_layers`` of every BPDA attack in ``specs`` and of a BPDA sanity attack against the layer
    probe's ``detection`` (a record's dict; the sanity attack's layers only where there is one)."""
    bpda = [s for s in specs if s.attack == "bpda"]
    found = Detection.from_dict(dict(detection))
    layers = plan_bpda_layers(model, bpda, cfg.bpda_layers, found, strict)
    sanity = cfg.diagnostics.sanity
    sanity_layers = None
    if sanity is not None and sanity.attack == "bpda" and detection:
        sanity_layers = resolve_bpda_layers(model, cfg.bpda_layers, found, strict=strict)
    uses = [(s.params.get("surrogate", DEFAULT_SURROGATE), layers[s.label]) for s in bpda] + (
        [(sanity.params.get("surrogate", DEFAULT_SURROGATE), sanity_layers)] if sanity_layers else [])
    return layers, sanity_layers, uses


def check_bpda_applicable(model: nn.Module, x: Tensor, cfg: Any, specs: Sequence[Any], strict: bool,
                          detection: Mapping[str, Any] | None = None) -> None:
    """Raise the runner's one-line ConfigError now if some BPDA attack of ``specs`` (or the BPDA sanity attack)
    could not act on the layers it names; ``x``: the evaluation's selected samples (the first
    ``diagnostics.gradient_batch`` are probed, as the runner probes them); ``detection``: a layer probe already
    made (a shard's, from its driver), else one is made here, silently (the runner's own logs its findings).
    The model is left as it was (every probe removes its hooks and restores modes and the global RNG)."""
    sanity = cfg.diagnostics.sanity
    bpda_sanity = sanity is not None and sanity.attack == "bpda" and cfg.diagnostics.enabled
    if not any(s.attack == "bpda" for s in specs) and not bpda_sanity:
        return
    probe_x = x[:min(cfg.diagnostics.gradient_batch, int(x.shape[0]))]
    found = dict(detection) if detection is not None else detect_layers(model, probe_x, seed=cfg.seed,
                                                                        log=False).to_dict()
    uses = plan_bpda(model, specs, cfg, found, strict)[2]
    note_straight_through(found, model, probe_x, uses, cfg.seed, bpda_fields(specs))  # on a copy: recorded nowhere
