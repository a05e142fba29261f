"""The gradient-masking checks over the model probes (:func:`kwta_robust.model_probes.measure_model`): vanishing,
missing or non-finite input gradients, a saturated softmax, randomness, batch dependence, low precision,
probabilities or hard labels instead of logits, non-finite logits on the evaluated inputs, and unranked gates BPDA
relaxed (Carlini et al. 2019, "On Evaluating Adversarial Robustness", §5; Athalye, Carlini &
Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", §3: shattered and stochastic gradients).
:mod:`kwta_robust.diagnostics` registers them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from attacks.base import REGISTRY, available_attacks, create_attack, threat_text
from attacks.errors import AttackConfigError
from attacks.precision import is_low_precision_dtype
from kwta_robust.grad_cut import cut_text
from kwta_robust.diagnostics_base import (CRITICAL, WARNING, Thresholds, averages_draws, detected_layers,
                                          is_randomized, layer_evidence, layer_names, pct)
from kwta_robust.randomness import record_draws
from kwta_robust.results import AttackResult, EvalRecord, Flag
from kwta_robust.selection_entries import step_calls, where_called

#: Attack kinds that follow the model's input gradient (``attacks.base.AttackInfo.kind``), for a record's attack this
#: installation does not register; registered attacks say it themselves (``AttackInfo.uses_gradient``: ``eot`` does,
#: gradient estimation does not).
GRADIENT_KINDS: tuple[str, ...] = ("white-box", "bpda")


def maximises_cross_entropy(attack: str, params: Mapping[str, Any]) -> bool:
    """Whether the attack ``attack`` with ``params`` (as a record holds them) climbs the cross-entropy loss (PGD /
    FGSM / EOT with ``loss: ce``, APGD-CE, BPDA around one of them), read from the attack the registry builds."""
    if attack not in available_attacks():
        return False
    try:
        built = create_attack(attack, **dict(params))
    except (AttackConfigError, TypeError, ValueError):
        return False
    inner = getattr(built, "inner", None)
    if isinstance(inner, str):
        return maximises_cross_entropy(inner, getattr(built, "inner_params", {}) or {})
    return getattr(built, "loss", None) == "ce"


def cut_advice(cut: dict) -> str:
    """Where the graph is cut (:func:`kwta_robust.grad_cut.locate_cut`) and what to do about it."""
    if cut.get("no_grad"):
        fix = ("no surrogate restores a gradient under torch.no_grad(): remove that block, or trust the gradient-free "
               "attacks")
    elif cut.get("modules") and cut["modules"][-1]:
        fix = f"BPDA can replace that module (bpda_layers: [{cut['modules'][-1]}], surrogate: identity)"
    else:
        fix = ("a call no BPDA can replace: move it into a module of its own called with the tensor, or trust the "
               "gradient-free attacks")
    return f"{cut_text(cut)} — {fix}"


def check_gradients(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag zero, missing or NaN input gradients found by the probes."""
    p = record.probes
    if not p:
        return []
    flags = []
    n = int(p.get("n", 0))
    zero = float(p.get("grad_zero_fraction", 0.0))
    nonfinite = float(p.get("grad_nonfinite_fraction", 0.0))
    if p.get("grad_missing"):
        cut = p.get("grad_cut")
        where = f"; the last operation that received a gradient is {cut_advice(cut)}" if isinstance(cut, dict) else ""
        flags.append(Flag(
            "zero-gradients", CRITICAL,
            f"the model's logits have no input gradient at all on the {n} probed samples (the autograd graph is cut: "
            "a module computes under torch.no_grad(), detaches its input, leaves torch, e.g. through NumPy, or "
            "compares it, x > t): every gradient attack ran with a zero gradient and its numbers are not evidence; "
            "attack through the cut with bpda (surrogate: identity, bpda_layers: [NAME] naming the module) or rely on "
            "gradient-free attacks (square, gradient-estimation)" + where,
            {"grad_zero_fraction": zero, "grad_missing": True, "n": n, "grad_cut": cut},
        ))
    elif zero > thr.zero_gradient_fraction:
        steps = step_calls((record.detection or {}).get("selections", []))
        where = ("; the forward calls " + "; ".join(f"{where_called(s)} ({s['calls']} call(s))" for s in steps)
                 + ", outside every layer BPDA can act on: move it into a module of its own called with the tensor "
                 "(bpda_layers: auto then replaces it; surrogate: identity is the straight-through estimator)"
                 if steps else "")
        flags.append(Flag(
            "zero-gradients", CRITICAL,
            f"{pct(zero)} of {n} probed samples have an all-zero input gradient of the margin loss "
            "(shattered/vanishing gradients): gradient attacks cannot make progress there" + where,
            {"grad_zero_fraction": zero, "n": n, "step_calls": steps},
        ))
    if nonfinite > 0:
        flags.append(Flag(
            "nan-gradients", CRITICAL,
            f"{pct(nonfinite)} of {n} probed samples have NaN/inf input gradients: gradient attacks are unreliable",
            {"grad_nonfinite_fraction": nonfinite, "n": n},
        ))
    return flags


def _gradient_attacks(record: EvalRecord) -> list[AttackResult]:
    """The first result of each attack of ``record`` that follows the model's input gradient."""
    seen: dict[str, AttackResult] = {}
    for r in record.results:
        if REGISTRY.get(r.attack).uses_gradient if r.attack in REGISTRY else r.kind in GRADIENT_KINDS:
            seen.setdefault(r.label, r)
    return list(seen.values())


def check_softmax_saturation(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Logits so large that the softmax rounds to one-hot in float32 zero the cross-entropy's input gradient while
    the margin's stays (logits scaled up, a temperature below 1; Carlini & Wagner 2017 §V on defensive
    distillation): an attack climbing cross-entropy stands still and the model looks robust. Critical when every
    gradient attack of the record climbs cross-entropy; a warning when one with another objective (margin, DLR,
    CW, FAB, DeepFool) ran, whose column does not have the problem, or when no gradient attack ran at all."""
    p = record.probes
    saturated = float(p.get("ce_grad_zero_fraction", 0.0)) if p else 0.0
    if saturated <= thr.zero_gradient_fraction or p.get("grad_missing"):
        return []
    gradient = _gradient_attacks(record)
    ce = sorted(r.label for r in gradient if maximises_cross_entropy(r.attack, r.params))
    other = sorted(r.label for r in gradient if r.label not in ce)
    message = (f"the cross-entropy loss has an all-zero input gradient on {pct(saturated)} of the {p.get('n', 0)} "
               "probed samples where the margin loss has none (the softmax rounds to one-hot: largest |logit| "
               f"{float(p.get('max_abs_output', 0.0)):.4g}), so attacks climbing cross-entropy"
               + (f" ({', '.join(ce)})" if ce else "") + " stand still there")
    if other:
        severity, advice = WARNING, f"; trust the attacks with another objective ({', '.join(other)})"
    elif not ce:  # no gradient attack ran (Square, gradient estimation, transfer): no column stood still
        severity, advice = WARNING, ("; no gradient attack of this record follows it, so none of its columns did, "
                                     "but one added later would: use a margin- or DLR-loss attack (pgd with loss: "
                                     "margin, apgd-dlr, apgd-t, cw)")
    else:
        severity, advice = CRITICAL, ("; their numbers overstate robustness: add a margin- or DLR-loss attack (pgd "
                                      "with loss: margin, apgd-dlr, apgd-t, cw) or divide the logits by a temperature")
    return [Flag("saturated-softmax", severity, message + advice, {
        "ce_grad_zero_fraction": saturated, "n": p.get("n", 0), "max_abs_output": p.get("max_abs_output"),
        "cross_entropy_attacks": ce, "other_gradient_attacks": other,
    })]


def check_determinism(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """A randomized model needs expectation over transformation (Athalye et al. 2018, §4.2): critical when no
    attack averaged over the draws (``eot``, or ``bpda`` with ``inner: eot``), a warning when one did; either way
    the message says how the verdicts were taken (one draw or the plurality of ``verdict_draws``,
    :mod:`kwta_robust.randomness`) and whether the numbers can be reproduced."""
    p = record.probes
    randomized = detected_layers(record, "randomized")
    randomness = record.provenance.get("randomness") if isinstance(record.provenance.get("randomness"), dict) else {}
    diff = float(p.get("max_output_diff", 0.0))
    scale = max(float(p.get("max_abs_output", 0.0)), 1e-12)
    changes = int(p.get("prediction_changes", 0))
    if not is_randomized(record, thr):
        return []
    found = []
    if p and (diff > thr.output_rtol * scale or changes):
        found.append(f"two forward passes on the same {p.get('n', 0)} inputs differ (max logit difference "
                     f"{diff:.3g}, {changes} predictions changed)")
    elif randomness.get("randomized"):
        found.append(f"two seeds of torch's global RNG change the logits by up to "
                     f"{float(randomness.get('max_output_diff', 0.0)):.3g}")
    if randomized:
        found.append(f"two calls of layer {layer_names(randomized)} on the same input differ")
    eot = sorted({r.label for r in record.results if averages_draws(r)})
    draws = record_draws(record)
    verdicts = (f"every clean and adversarial verdict is the plurality of {draws} draws (its tables give the expected "
                "accuracy)" if draws > 1 else "every clean and adversarial verdict is one draw of its randomness (set "
                "verdict_draws: auto to take the plurality of several)")
    if randomness and not randomness.get("seedable", True):
        verdicts += ("; its outputs change under one seed of torch's global RNG too (a generator of its own), so its "
                     "numbers are not reproducible: draw from torch's global RNG or seed its generator")
    if eot:
        severity = WARNING
        advice = f": the model is randomized; {', '.join(eot)} attacked its expectation, and {verdicts}"
    else:
        severity, advice = CRITICAL, (": the model is randomized and no attack averaged over its randomness, so the "
                                      f"gradient attacks followed single noisy draws; add expectation over "
                                      f"transformation (attack: eot); {verdicts}")
    return [Flag(
        "non-deterministic", severity, "; ".join(found) + advice,
        {"max_output_diff": diff, "prediction_changes": changes, "randomized_layers": [l["name"] for l in randomized],
         "eot_attacks": eot, "verdict_draws": draws, "seedable": bool(randomness.get("seedable", True))},
    )]


def check_probabilities(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag a model whose outputs look like probabilities instead of logits (one-hot rows:
    :func:`check_hard_labels`)."""
    p = record.probes
    if not p or not p.get("outputs_look_like_probabilities", False) or p.get("outputs_look_like_hard_labels"):
        return []
    return [Flag(
        "probabilities-not-logits", CRITICAL,
        f"outputs lie in [0, 1] and rows sum to 1 (max |sum-1| = {float(p.get('max_row_sum_error', 0.0)):.2g}): "
        "the model returns probabilities; cross-entropy attacks then get vanishing gradients — return logits",
        {"max_row_sum_error": p.get("max_row_sum_error")},
    )]


def _low_precision(name: object) -> bool:
    """Whether ``name`` (a dtype as records write it, ``"float16"``) is a floating-point type narrower than float32
    (:func:`attacks.precision.is_low_precision_dtype`)."""
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return isinstance(dtype, torch.dtype) and is_low_precision_dtype(dtype)


def check_precision(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """A model that computes in float16 or bfloat16 (its parameters, ``record.model["parameter_dtypes"]``, or the
    logits the probe saw, ``probes.output_dtype``) rounds its logits and gradients: low precision is a known source
    of false robustness (Carlini et al. 2019, "On Evaluating Adversarial Robustness", §5: vanishing gradients,
    quantised logits). The attacks take their losses in float32 (:mod:`attacks.precision`), yet the model's own
    forward and backward stay rounded; a warning with the evidence (dtypes, the logits' resolution at the largest
    logit, the samples whose cross-entropy gradient is all zero in the logits' own precision) and the fix:
    evaluate in float32. Never raised for float32 or float64 models."""
    p = record.probes or {}
    params = [d for d in record.model.get("parameter_dtypes") or [] if isinstance(d, str)]
    output = p.get("output_dtype")
    low = sorted({d for d in (*params, output) if _low_precision(d)})
    if not low:
        return []
    scale = float(p.get("max_abs_output") or 0.0)
    step = _resolution(output, scale) if _low_precision(output) else None
    native = p.get("low_precision_ce_grad_zero_fraction")
    evidence = [f"parameters {'/'.join(params)}" if params else "", f"logits {output}" if output else "",
                f"in steps of {step:.2g} at its largest |logit| {scale:.4g}" if step else ""]
    zeros = (f"; in {output} itself the cross-entropy gradient is all zero on {pct(float(native))} of the "
             f"{p.get('n', 0)} probed samples (what an attack taking its loss in the model's precision sees)"
             if native else "")
    message = (f"the model computes in {' and '.join(low)} ({', '.join(e for e in evidence if e)}): low precision "
               "rounds its logits and gradients, a known source of false robustness (vanishing gradients, "
               "quantised scores); the attacks take their losses in float32 and rescale each sample's gradient, but "
               f"the model's own forward and backward keep their rounding{zeros}: re-evaluate it in float32 "
               "(model.float(), without input casts or autocast in forward) and compare before citing these numbers")
    return [Flag("low-precision", WARNING, message, {
        "low_precision_dtypes": low, "parameter_dtypes": params, "output_dtype": output, "logit_resolution": step,
        "max_abs_output": p.get("max_abs_output"), "low_precision_ce_grad_zero_fraction": native,
        "n": p.get("n", 0)})]


def _resolution(dtype_name: str, magnitude: float) -> float | None:
    """The spacing of ``dtype_name`` floats at ``magnitude`` (its epsilon times the power of two below it)."""
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype) or magnitude <= 0 or not math.isfinite(magnitude):
        return None
    return torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(magnitude))


def check_hard_labels(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """A model whose every output row is one-hot returns only its decision (Brendel, Rauber & Bethge, ICLR 2018:
    the decision-based threat model): its input gradient is zero or missing, and a score-based attack's margin is a
    constant 1 until the label flips, so gradient attacks, Square and gradient estimation search blind and their
    numbers are no evidence. Critical unless an attack that needs only labels (``AttackInfo.labels_only``:
    HopSkipJump, Boundary, transfer) ran; a warning naming them when one did."""
    p = record.probes
    if not p or not p.get("outputs_look_like_hard_labels", False):
        return []
    decision = sorted({r.label for r in record.results if r.attack in REGISTRY and REGISTRY.get(r.attack).labels_only})
    message = (f"every output row of the {p.get('n', 0)} probed samples is one-hot: the model returns hard labels "
               "(decision-only), so gradient attacks get no gradient and score-based attacks (square, "
               "gradient-estimation) see a constant margin until the label flips — their columns are no evidence")
    if decision:
        severity, advice = WARNING, f"; trust the decision-based attacks ({', '.join(decision)})"
    else:
        severity, advice = CRITICAL, ("; add a decision-based attack (hopskipjump; boundary for L2) or a transfer "
                                      "attack, or evaluate the model's logits")
    return [Flag("hard-label-outputs", severity, message + advice,
                 {"n": p.get("n", 0), "labels_only_attacks": decision})]


#: Outputs for the same inputs in a batch half as large may differ by this much relative to the largest logit
#: (kernels chosen per batch size round differently; TF32 on a GPU more so) before a model counts as batch-dependent;
#: batch statistics move them by the order of the logits. A constant, not a config threshold: a new key in
#: ``diagnostics.thresholds`` would change every config's hash, and no run could resume across this change.
BATCH_RTOL = 1e-2


def check_batch_dependence(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """A model whose output for a sample depends on the other samples of its batch (batch norm with batch statistics
    in eval mode, any layer mixing samples): every number depends on ``batch_size`` and on which samples an attack
    happened to attack together (a cascade attacks the survivors), so none describes the model. Critical."""
    p = record.probes
    diff, changes = p.get("batch_max_output_diff"), p.get("batch_prediction_changes")
    norms = list(p.get("batch_statistics_layers") or [])
    if diff is None or changes is None:  # not measured: one probed sample or a randomized model; the layers tell
        return [] if not norms else [Flag("batch-dependent", CRITICAL, (
            f"{', '.join(norms)} normalize with batch statistics in eval mode (track_running_stats=False): a sample's "
            "prediction depends on the rest of its batch (not measured: the probe batch had "
            f"{int(p.get('n', 0))} sample(s) or the model is randomized), so every number here depends on "
            "batch_size and on which samples each attack ran together; give the model per-sample inference in eval "
            "mode (running statistics) before evaluating it"), {
            "batch_half": None, "batch_max_output_diff": None, "batch_prediction_changes": None,
            "max_abs_output": p.get("max_abs_output"), "batch_statistics_layers": norms})]
    scale = max(float(p.get("max_abs_output", 0.0)), 1e-12)
    # a prediction that flips on rounding alone (a near tie) is no evidence; with batch-statistics layers it is
    if float(diff) <= BATCH_RTOL * scale and not (changes and norms):
        return []
    cause = (f" — {', '.join(norms)} normalize with batch statistics in eval mode (track_running_stats=False)"
             if norms else "")
    message = (f"the outputs for {p.get('batch_half')} inputs change when they run without the other "
               f"{int(p.get('n', 0)) - int(p.get('batch_half') or 0)} of the batch (max logit difference "
               f"{float(diff):.3g} of {scale:.3g}, {changes} predictions changed){cause}: a sample's prediction "
               "depends on the rest of its batch, so every number here depends on batch_size and on which samples "
               "each attack ran together; give the model per-sample inference in eval mode (running statistics) "
               "before evaluating it")
    return [Flag("batch-dependent", CRITICAL, message, {
        "batch_half": p.get("batch_half"), "batch_max_output_diff": diff, "batch_prediction_changes": changes,
        "max_abs_output": p.get("max_abs_output"), "batch_statistics_layers": norms,
    })]


#: A gate is *unranked* when no score (value, magnitude, smallest value) orders its winners in even this fraction of
#: its groups: most of its decisions follow another rule. (The probe reads a gate's score at 0.9,
#: :data:`attacks.gates.MAGNITUDE_ORDERED_FRACTION`; between the two a score explains most of the gate's decisions
#: and relaxing it is close to the gate's rule.)
UNRANKED_FRACTION = 0.5
#: The evidence keys of those three fractions (:class:`attacks.gates.GateFit`).
ORDER_KEYS: tuple[str, ...] = ("ordered_fraction", "magnitude_ordered_fraction", "smallest_ordered_fraction")


def unranked(layer: dict) -> bool:
    """Whether the probe's evidence on a foreign gate (not our own layer) names no rule for its winners: measured
    (``ordered_fraction`` present) and not the largest of their groups by value, magnitude or smallest value in
    :data:`UNRANKED_FRACTION` of them, no channel statistic, no fitted per-unit factors
    (``boosted_ordered_fraction``)."""
    ev = layer.get("evidence", {})
    best = max(_fraction(layer, key) for key in ORDER_KEYS)
    return not layer.get("native") and "ordered_fraction" in ev and ev.get("statistic") is None \
        and "boosted_ordered_fraction" not in ev and best < UNRANKED_FRACTION


def _fraction(layer: dict, key: str) -> float:
    return float(layer.get("evidence", {}).get(key) or 0.0)


def check_unranked_gates(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """BPDA's smooth surrogate relaxes a gate around its threshold on the score its winners are the largest by
    (:func:`attacks.gates.relaxed_gate`). For a gate whose winners no score of the probe explains, it falls back to
    the raw values, a rule the gate does not follow: its gradient can point away from the gate's decision, and the
    BPDA column is then a loose upper bound (Athalye et al. 2018, §4.1: BPDA needs ``g(x) ≈ f(x)``). A warning,
    naming the gates and the fix, where a smooth BPDA attack acted on such a gate."""
    smooth = {name for r in record.results if r.kind == "bpda" and r.bpda_layers
              and r.params.get("surrogate", "smooth") == "smooth" for name in r.bpda_layers}
    gates = [l for l in detected_layers(record, "gate") if l["name"] in smooth and unranked(l)]
    if not gates:
        return []
    orders = "; ".join(f"{l['name']}: {' / '.join(pct(_fraction(l, key)) for key in ORDER_KEYS)}" for l in gates)
    return [Flag("unranked-gates", WARNING,
                 f"the winners of gate(s) {layer_names(gates)} are in most groups not the largest by value, magnitude "
                 f"or smallest value (by value / magnitude / smallest in {orders} of the groups) and no per-unit "
                 "factors explained them, so BPDA's smooth surrogate relaxed their raw values, a rule these gates do "
                 "not follow: the BPDA numbers may be loose upper bounds; add bpda with surrogate: learned (fitted to "
                 "each layer's outputs) and the gradient-free attacks (gradient estimation, square)",
                 {"layers": layer_evidence(gates)})]


def _noise_non_finite(record: EvalRecord) -> tuple[list[dict[str, Any]], list[str]]:
    """Where the noise probes met NaN or infinite logits, ``{"kind", "level", "inputs"}`` per level (any draw, of
    the noise or of a plurality verdict), and the probes that did not count them (no ``non_finite_inputs``: a record
    written before, or a verdict that returned bare bools): unknown, not none."""
    hits: list[dict[str, Any]] = []
    uncounted: list[str] = []
    for probe in record.noise:
        counts = probe.result.get("non_finite_inputs") if isinstance(probe.result, dict) else None
        if not isinstance(counts, list):
            uncounted.append(probe.kind)
            continue
        hits += [{"kind": probe.kind, "level": level, "inputs": k} for level, k in zip(probe.levels, counts) if k]
    return hits, uncounted


def check_non_finite_logits(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Inputs on which the model returned NaN or infinite logits: their verdict counts as wrong (an attacked input
    as broken, a noisy one as misclassified, :func:`attacks.verdicts.finite_predictions`). Clean and attacked ones
    have a ``null`` margin, which is how this check finds them (with one forward pass per verdict; a plurality of
    draws counts such a draw as a vote for no class, and its margins are vote shares); the noise probes count them
    per level (``non_finite_inputs``, plurality verdicts included). A model that outputs no number there has
    failed, yet an attack that reaches such inputs may exploit a numerical fault — an overflow, a division by a zero
    variance — rather than the decision boundary (Carlini et al. 2019, §5: check that the numbers are not
    artefacts), and a noise score may be made of such failures rather than of misclassifications: a warning naming
    where."""
    one_draw = record_draws(record) == 1
    clean = sum(m is None for m in record.clean_margins or []) if one_draw else 0
    hits = [(r, sum(m is None and f != -1 for m, f in zip(r.margins, r.flags)))
            for r in (*record.results, *record.sanity) if r.margins and one_draw]
    hits = [(r, k) for r, k in hits if k]
    noise, uncounted = _noise_non_finite(record)
    if not clean and not hits and not noise:
        return []
    parts = [f"{clean} clean inputs"] if clean else []
    parts += [f"{k} inputs of {r.label} at {threat_text(r.norm, r.eps_text)}" for r, k in hits]
    parts += [f"{n['inputs']} inputs of noise probe {n['kind']} at level {n['level']:g}" for n in noise]
    evidence: dict[str, Any] = {"clean": clean, "attacks": [{"attack": r.label, "norm": r.norm, "eps": r.eps,
                                                             "inputs": k} for r, k in hits]}
    if noise:
        evidence["noise"] = noise
    if uncounted:
        evidence["noise_uncounted"] = uncounted
    return [Flag(
        "non-finite-logits", WARNING,
        f"the model returned NaN or infinite logits on {'; '.join(parts)}, counted as misclassified (an attacked one "
        "as broken): a model that outputs no number has not classified the input, but an attack reaching such "
        "inputs may exploit a numerical fault (an overflow, a division by zero) rather than the decision boundary"
        + (", and a noise score is then partly made of such failures" if noise else "")
        + (f" (noise probe(s) {', '.join(uncounted)}: not counted in this record, unknown)" if uncounted else "")
        + "; check the model's numerics on them (the adversarial inputs: evaluate --save-adversarial, "
          "kwta_robust.evaluate.evaluate's save_adversarial=)",
        evidence,
    )]
