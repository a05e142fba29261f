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
from kwta_robust.bpda_layers import bpda_fields, for_surrogate, plan_bpda_layers, resolve_bpda_layers
from kwta_robust.detect import Detection, detect_layers, log_findings
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
        sanity_layers = for_surrogate(sanity.params.get("surrogate", DEFAULT_SURROGATE),
                                      resolve_bpda_layers(model, cfg.bpda_layers, found, strict=strict))
    uses = [(s.params.get("surrogate", DEFAULT_SURROGATE), layers[s.label]) for s in bpda] + (
        [(sanity.params.get("surrogate", DEFAULT_SURROGATE), sanity_layers)] if sanity_layers else [])
    return layers, sanity_layers, uses


def check_bpda_applicable(model: nn.Module, x: Tensor, cfg: Any, specs: Sequence[Any], strict: bool,
                          detection: Mapping[str, Any] | None = None) -> Detection | None:
    """Raise the runner's one-line ConfigError now if some BPDA attack of ``specs`` (or the BPDA sanity attack)
    could not act on the layers it names; ``x``: the evaluation's selected samples (the first
    ``diagnostics.gradient_batch`` are probed, as the runner probes them); ``detection``: a layer probe already
    made (a shard's, from its driver; a comparison's), else one is made here, silently. Returns the probe made here
    (``None``: none was made), for the runner to keep instead of probing the same inputs under the same seed again
    (:func:`reusable_probe`; it logs the findings then). The model is left as it was (every probe removes its hooks
    and restores modes and the global RNG)."""
    sanity = cfg.diagnostics.sanity
    bpda_sanity = sanity is not None and sanity.attack == "bpda" and cfg.diagnostics.enabled
    if not any(s.attack == "bpda" for s in specs) and not bpda_sanity:
        return None
    probe_x = x[:min(cfg.diagnostics.gradient_batch, int(x.shape[0]))]
    made = None if detection is not None else detect_layers(model, probe_x, seed=cfg.seed, log=False)
    found = dict(detection) if made is None else made.to_dict()  # a copy: the straight-through notes stay on it
    uses = plan_bpda(model, specs, cfg, found, strict)[2]
    note_straight_through(found, model, probe_x, uses, cfg.seed, bpda_fields(specs))  # on a copy: recorded nowhere
    return made


def reusable_probe(probed: Detection | None, layout: str) -> dict[str, Any] | None:
    """The record's detection from a layer probe made before the run (``probed``: the pre-check's or a
    comparison's, on the same model, the same first ``diagnostics.gradient_batch`` samples and the same seed), its
    findings logged as the runner's own probe logs them; ``None`` where the runner must probe itself: no probe was
    made, or the run's memory ``layout`` is not the model's own (channels-last convolutions round differently, so
    the evidence's numbers could differ from a probe in the run's layout)."""
    if probed is None or layout != "as given":  # kwta_robust.runtime.evaluation_layout's word
        return None
    log_findings(probed)
    return probed.to_dict()
