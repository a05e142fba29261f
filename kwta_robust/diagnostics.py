"""Gradient-masking diagnostics: the checklist of Carlini et al. 2019 ("On Evaluating Adversarial Robustness",
§5–6) and Athalye, Carlini & Wagner 2018 ("Obfuscated Gradients Give a False Sense of Security", §3).

Each check is a small function over an :class:`~kwta_robust.results.EvalRecord` returning
:class:`~kwta_robust.results.Flag` s whose message names the evidence (which attacks, which numbers). Checks are
found through a registry (:func:`register_check`); thresholds are named parameters (:class:`Thresholds`, settable
from the eval config's ``diagnostics.thresholds``).

"A beats B" is measured per sample, which works in both runner modes: the number of samples that **survived B**
(flag 1) and were **broken by A** (flag 0). In cascade mode, with A listed after B, these are exactly A's kills
among B's survivors (the kWTA signature: BPDA / gradient estimation breaking many samples that plain PGD left
robust — Tramèr et al. 2020, "On Adaptive Attacks to Adversarial Example Defenses", §5.5).

Model probes (:func:`kwta_robust.model_probes.measure_model`, run by the evaluator on one batch) provide the
evidence for the checks over them (:mod:`kwta_robust.probe_checks`: zero, missing or NaN gradients, a saturated
softmax, randomness, batch dependence, low precision, non-finite logits, probabilities or hard labels instead of
logits), registered here in order; the layer probe
(:mod:`kwta_robust.detect`) for the checks on gates, piecewise-constant layers and selections outside them.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from attacks.base import threat_text
from kwta_robust.bpda_checks import check_straight_through
from kwta_robust.detect import POOL_GATE
from kwta_robust.diagnostics_base import (ADAPTIVE_KINDS, AVERAGED_CAUSE, BLACK_BOX_KINDS, BUDGET_PARAMS, CRITICAL,
                                          INFO, RANDOMIZED_CAUSE, SEVERITIES, WARNING, Thresholds, averages_draws,
                                          checked_flags, detected_layers, exceeds, gradient_free_labels, is_randomized,
                                          layer_evidence, layer_names, masking_consequence, pct, run_arguments,
                                          with_budget_defaults)
from kwta_robust.plugin_repeat import check_plugin_repeats
from kwta_robust.checkpoint_checks import CHECKPOINT_ACCURACY, check_checkpoint_accuracy
from kwta_robust.omitted_checks import SANITY_NOT_RUN, check_sanity_not_run
from kwta_robust.probe_checks import (check_batch_dependence, check_determinism, check_gradients, check_hard_labels,
                                      check_non_finite_logits, check_precision, check_probabilities,
                                      check_softmax_saturation, check_unranked_gates)
from kwta_robust.record_index import RecordIndex
from kwta_robust.registry import Registry
from kwta_robust.results import Accuracy, AttackResult, EvalRecord, Flag
from kwta_robust.selection_entries import held_by, is_pool_selection
from kwta_robust.selection_text import (outside_text, pool_advice, pool_gates_text, unread_text,
                                        unrelaxed_pool_gates)

Check = Callable[[EvalRecord, Thresholds], list[Flag]]


@dataclass(frozen=True)
class CheckInfo:
    """A registered diagnostic check: its code, the function and a one-line summary."""
    code: str
    check: Check
    summary: str


#: Registered checks by code (a generic :class:`~kwta_robust.registry.Registry`), run in registration order.
CHECKS: Registry[CheckInfo] = Registry("diagnostic check", field="diagnostics",
                                       entry_point_group="kwta_robust.diagnostics",
                                       decorator="@register_check(code, summary)", unwrap=lambda info: info.check)


def register_check(code: str, summary: str) -> Callable[[Check], Check]:
    """Decorator registering a check under ``code`` with ``summary`` (run in registration order)."""
    def decorator(fn: Check) -> Check:
        CHECKS.add(code, CheckInfo(code, fn, summary), summary=summary, source=getattr(fn, "__module__", None))
        return fn

    return decorator


def run_checks(record: EvalRecord, thresholds: Thresholds | None = None,
               codes: Iterable[str] | None = None) -> list[Flag]:
    """Run every registered check (or those in ``codes``) over ``record``; flags sorted by severity."""
    thresholds, codes = run_arguments(record, thresholds, codes)
    selected = [e.obj for e in CHECKS.entries()] if codes is None else [CHECKS.get(c) for c in codes]
    flags: list[Flag] = []
    for info in selected:
        flags.extend(checked_flags(info.code, info.check, record, thresholds))
    return sorted(flags, key=lambda f: SEVERITIES.index(f.severity))


# ---------------------------------------------------------------------------------------------------------------
# helpers over records
# ---------------------------------------------------------------------------------------------------------------
def _where(r: AttackResult) -> str:
    return threat_text(r.norm, r.eps_text)


def broken_among_survivors(reference: AttackResult, other: AttackResult) -> int:
    """Samples that survived ``reference`` (flag 1) and were broken by ``other`` (flag 0)."""
    return sum(1 for a, b in zip(reference.flags, other.flags) if a == 1 and b == 0)


def _is_iterative_white_box(r: AttackResult) -> bool:
    return r.kind == "white-box" and not r.single_step


def combined_reference(references: Sequence[AttackResult]) -> AttackResult:
    """The per-sample best of several attacks at one threat point as one result labelled ``a + b``: a sample is
    broken (0) if any of them broke it, robust (1) if one attacked it and none broke it, else not attacked (-1)."""
    if len(references) == 1:
        return references[0]
    columns = list(zip(*(r.flags for r in references)))
    flags = [0 if 0 in c else 1 if 1 in c else -1 for c in columns]
    first = references[0]
    return replace(first, label=" + ".join(r.label for r in references), flags=flags,
                   robust=Accuracy.of(flags.count(1), first.robust.n), n_attacked=sum(1 for f in flags if f >= 0),
                   n_broken=flags.count(0), margins=[])


def _pairs_at_points(record: EvalRecord, ref_pred: Callable[[AttackResult], bool],
                     other_pred: Callable[[AttackResult], bool]) -> dict[tuple[str, str],
                                                                         list[tuple[AttackResult, AttackResult, int]]]:
    """For every threat point and every attack matching ``other_pred``, the samples it broke among those that every
    attack matching ``ref_pred`` left robust (their per-sample best, :func:`combined_reference`): a weak reference
    (FAB, a short PGD) beaten where a stronger one of the same family already broke the samples says nothing
    about masking (Carlini et al. 2019: compare with the strongest gradient attack)."""
    found: dict[tuple[str, str], list[tuple[AttackResult, AttackResult, int]]] = {}
    index = RecordIndex(record)  # the results of each threat point looked up, not scanned for
    for norm, eps in record.threat_points():
        at = index.results_at(norm, eps)
        for other in filter(other_pred, at):
            refs = [r for r in at if ref_pred(r) and r.label != other.label]
            if not refs:
                continue
            ref = combined_reference(refs)
            found.setdefault((ref.label, other.label), []).append((ref, other, broken_among_survivors(ref, other)))
    return found


def _beats_flags(record: EvalRecord, thr: Thresholds, code: str, severity: str, margin: float,
                 ref_pred: Callable[[AttackResult], bool], other_pred: Callable[[AttackResult], bool],
                 explanation: str | Callable[[AttackResult], str]) -> list[Flag]:
    """One flag per (reference, other) pair of labels whose other attack broke enough of the reference's survivors;
    ``explanation`` ends its message (a callable: from the other attack's first result)."""
    flags = []
    for (ref_label, other_label), items in _pairs_at_points(record, ref_pred, other_pred).items():
        hits = [(ref, other, k) for ref, other, k in items if k >= thr.kills_needed and k / ref.robust.n >= margin]
        if not hits:
            continue
        hits.sort(key=lambda t: -t[2])
        parts = []
        for ref, other, k in hits:
            after = " after" if other.cumulative else ""
            parts.append(
                f"at {_where(ref)} {other_label} broke {k} of the {ref.robust.correct} samples {ref_label} left "
                f"robust ({pct(k / ref.robust.n)} of all {ref.robust.n}; {ref_label} {pct(ref.robust.accuracy)} vs "
                f"{other_label}{after} {pct(other.robust.accuracy)})"
            )
        why = explanation(hits[0][1]) if callable(explanation) else explanation
        flags.append(Flag(
            code, severity, f"{other_label} beats {ref_label}: " + "; ".join(parts) + f" — {why}",
            {
                "reference": ref_label, "attack": other_label,
                "points": [
                    {"norm": r.norm, "eps": r.eps, "broken_among_survivors": k, "n": r.robust.n,
                     "reference_accuracy": r.robust.accuracy, "attack_accuracy": o.robust.accuracy}
                    for r, o, k in hits
                ],
            },
        ))
    return flags


# ---------------------------------------------------------------------------------------------------------------
# checks over attack results
# ---------------------------------------------------------------------------------------------------------------
@register_check("eps-not-monotonic", "robust accuracy does not fall with growing eps")
def check_eps_monotonic(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag attacks whose robust accuracy rises with growing eps."""
    flags, cause = [], f"; {RANDOMIZED_CAUSE}" if is_randomized(record, thr) else ""
    series: dict[tuple[str, str], list[tuple[float, str, float]]] = {}
    for r in record.results:
        series.setdefault((r.label, r.norm), []).append((r.eps, r.eps_text, r.robust.accuracy))
    for w in record.worst_case:
        series.setdefault(("worst case", w.norm), []).append((w.eps, w.eps_text, w.robust.accuracy))
    for (label, norm), points in series.items():
        points.sort()
        rises = [(a, b) for a, b in zip(points, points[1:]) if exceeds(b[2] - a[2], thr.eps_monotonic_tolerance)]
        if rises:
            text = "; ".join(f"{pct(a[2])} at {a[1]} → {pct(b[2])} at {b[1]}" for a, b in rises)
            flags.append(Flag(
                "eps-not-monotonic", WARNING,
                f"{label} ({norm}): robust accuracy rises with eps ({text}) — the attack is not finding the optimum"
                + cause,
                {"attack": label, "norm": norm, "rises": [{"eps_from": a[0], "acc_from": a[2], "eps_to": b[0],
                                                            "acc_to": b[2]} for a, b in rises]},
            ))
    return flags


@register_check("large-eps-not-zero", "robust accuracy does not reach ~0 at a very large eps")
def check_large_eps(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag sanity attacks at a very large eps that leave robust accuracy above ~0."""
    flags, randomized = [], is_randomized(record, thr)
    for r in record.sanity:
        if r.robust.accuracy > thr.large_eps_max_accuracy:
            flags.append(Flag(
                "large-eps-not-zero", CRITICAL,
                f"{r.label} at {_where(r)} (sanity check) leaves {pct(r.robust.accuracy)} robust "
                f"(expected <= {pct(thr.large_eps_max_accuracy)}): "
                + (RANDOMIZED_CAUSE if randomized and not averages_draws(r)
                   else "gradients do not lead out of the class"),
                {"attack": r.label, "norm": r.norm, "eps": r.eps, "accuracy": r.robust.accuracy},
            ))
    return flags


@register_check("single-step-beats-iterative", "a single-step attack beats an iterative one")
def check_single_step(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag single-step attacks that beat an iterative white-box attack."""
    explanation = "an iterative attack should dominate a single step; its gradients are unreliable"
    return _beats_flags(
        record, thr, "single-step-beats-iterative", CRITICAL, thr.single_step_margin,
        _is_iterative_white_box, lambda r: r.single_step,
        f"{RANDOMIZED_CAUSE}; {explanation}" if is_randomized(record, thr) else explanation,
    )


@register_check("black-box-beats-white-box", "black-box or transfer attacks beat white-box gradient attacks")
def check_black_box(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag black-box or transfer attacks that beat the white-box gradient attacks."""
    return _beats_flags(
        record, thr, "black-box-beats-white-box", CRITICAL, thr.wide_margin,
        _is_iterative_white_box, lambda r: r.kind in BLACK_BOX_KINDS,
        "gradient-free attacks should not beat gradient attacks unless gradients are masked",
    )


@register_check("adaptive-beats-pgd", "BPDA or gradient-estimation attacks beat plain PGD by a wide margin")
def check_adaptive(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag BPDA, EOT or gradient-estimation attacks (kinds ``bpda``, ``adaptive``) that beat the iterative
    white-box attacks (plain PGD, APGD, ...; their per-sample best) by a wide margin."""
    relaxed, outside = top_k_selections(record)
    # a selection inside a module BPDA acted on (named in bpda_layers): BPDA relaxed that top-k, as it does a gate
    if int(record.model.get("num_kwta_layers") or 0) > 0 or detected_layers(record, "gate", "piecewise-constant") \
            or relaxed:
        explanation = ("gradient masking (the kWTA signature): plain gradient attacks overstate robustness; "
                       "use the worst case")
    elif outside:  # outside every module BPDA acted on: the selections-outside-layers flag names them
        explanation = ("the model makes top-k selections that no layer BPDA acts on holds (selections-outside-layers): "
                       "likely gradient masking, the kWTA signature; plain gradient attacks overstate robustness; use "
                       "the worst case")
    else:  # BPDA switches no layer here, so it ran its inner attack (other loss/steps) unchanged
        explanation = ("the model has no kWTA layer or detected gate, so the adaptive attack's edge comes from its "
                       "inner attack (loss, steps) or from masking elsewhere: the plain attack is too weak; use the "
                       "worst case")
    randomized = is_randomized(record, thr)  # single draws, not masking, may explain the gap

    def explain(other: AttackResult) -> str:  # an attack that did average over the draws is not told to add eot
        if not randomized:
            return explanation
        return (AVERAGED_CAUSE if averages_draws(other) else RANDOMIZED_CAUSE) + "; " + explanation

    return _beats_flags(
        record, thr, "adaptive-beats-pgd", CRITICAL, thr.wide_margin,
        _is_iterative_white_box, lambda r: r.kind in ADAPTIVE_KINDS, explain,
    )


def _flat_params(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(path, name, value)`` of every parameter: nested ones (BPDA's ``inner_params``) by their path, each entry of
    a list-valued budget (BPDA's ``stage_steps``) by its index."""
    for name, value in params.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _flat_params(value, f"{path}.")
        elif name in BUDGET_PARAMS and isinstance(value, (list, tuple)):
            yield from ((f"{path}.{i}", name, v) for i, v in enumerate(value))
        else:
            yield path, name, value


def _budget_key(r: AttackResult) -> tuple[str, str]:
    rest = {path: v for path, name, v in _flat_params(r.params) if name not in BUDGET_PARAMS}
    return (r.attack, json.dumps(rest, sort_keys=True, default=str))


def _budget(r: AttackResult) -> dict[str, float]:
    return {path: float(v) for path, name, v in _flat_params(with_budget_defaults(r.attack, r.params))
            if name in BUDGET_PARAMS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _memo(cache: dict[int, Any], i: int, fn: Callable[[AttackResult], Any], r: AttackResult) -> Any:
    """``fn(r)``, computed once per ``i`` (``r``'s place in the results of a threat point) in ``cache``."""
    if i not in cache:
        cache[i] = fn(r)
    return cache[i]


def _larger_budget(small: dict[str, float], large: dict[str, float]) -> bool:
    keys = set(small) | set(large)
    if not keys or set(small) != set(large):
        return False
    return all(large[k] >= small[k] for k in keys) and any(large[k] > small[k] for k in keys)


@register_check("budget-still-lowering", "more steps or restarts still lower robust accuracy a lot")
def check_budget_ladder(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag attacks whose larger budgets (steps, restarts) still lower robust accuracy a lot."""
    flags, index = [], RecordIndex(record)  # each threat point's results looked up, not scanned for
    for norm, eps in record.threat_points():
        at = index.results_at(norm, eps)
        keys: dict[int, Any] = {}  # per result, once where a pair needs it, not once per pair (a budget reads the
        budgets: dict[int, dict[str, float]] = {}  # attack's signature: 20 attacks x 50 eps made 18,000 reads)
        for (i, small), (j, large) in itertools.product(enumerate(at), repeat=2):
            if small.label == large.label or _memo(keys, i, _budget_key, small) != _memo(keys, j, _budget_key, large):
                continue
            if not _larger_budget(_memo(budgets, i, _budget, small), _memo(budgets, j, _budget, large)):
                continue
            k = broken_among_survivors(small, large)
            n = small.robust.n
            if k >= thr.kills_needed and k / n >= thr.ladder_margin:
                flags.append(Flag(
                    "budget-still-lowering", WARNING,
                    f"at {_where(small)} {large.label} broke {k} of the {small.robust.correct} samples "
                    f"{small.label} left robust ({pct(k / n)} of all {n}; {pct(small.robust.accuracy)} → "
                    f"{pct(large.robust.accuracy)}): the attack has "
                    "not converged; raise the budget until accuracy stops falling",
                    {"smaller": small.label, "larger": large.label, "norm": norm, "eps": eps, "broken": k, "n": n},
                ))
    return flags


@register_check("out-of-ball-outputs", "attacks returned inputs outside the threat model (projected before scoring)")
def check_violations(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag attacks that returned inputs outside the threat model."""
    bad = [r for r in list(record.results) + list(record.sanity) if r.violations > 0]
    if not bad:
        return []
    text = "; ".join(f"{r.label} at {_where(r)}: {r.violations} (max excess {r.max_violation:.3g})" for r in bad)
    nan = [r.label for r in bad if r.max_violation == math.inf]  # the runner put the clean input's entries there
    note = (f"; {', '.join(dict.fromkeys(nan))} returned NaN/inf entries, replaced by the clean input's (an attack "
            "setting overflowed: lower its step size, constant or temperature)") if nan else ""
    return [Flag(
        "out-of-ball-outputs", INFO,
        f"outputs outside the threat model were projected before re-classification ({text}); reported numbers use "
        f"the projected inputs{note}",
        {"attacks": [{"attack": r.label, "norm": r.norm, "eps": r.eps, "violations": r.violations,
                      "max_violation": r.max_violation} for r in bad]},
    )]


# ---------------------------------------------------------------------------------------------------------------
# checks over model probes (kwta_robust.probe_checks)
# ---------------------------------------------------------------------------------------------------------------
register_check("zero-gradients", "zero, missing or NaN input gradients")(check_gradients)
register_check("saturated-softmax", "the softmax saturates: cross-entropy has no gradient where the margin has")(
    check_softmax_saturation)
register_check("non-deterministic", "two forward passes on the same inputs differ (or randomized layers)")(
    check_determinism)
register_check("batch-dependent", "a sample's output depends on the other samples of its batch")(check_batch_dependence)
register_check("low-precision", "the model computes in float16 or bfloat16 (rounded logits and gradients)")(
    check_precision)
register_check("plugin-not-reproducible", "a plug-in attack gives other inputs for one seed")(check_plugin_repeats)
register_check("non-finite-logits", "NaN or infinite logits on clean, attacked or noisy inputs (counted as "
                                    "misclassified)")(check_non_finite_logits)


# ---------------------------------------------------------------------------------------------------------------
# checks over the layer probe (kwta_robust.detect) and the layers BPDA acted on
# ---------------------------------------------------------------------------------------------------------------
@register_check("bpda-no-layer", "a BPDA attack acted on no layer, so it ran its inner attack unchanged")
def check_bpda_no_layer(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag BPDA attacks that acted on no layer (their inner attack ran unchanged); where the layer probe found
    max-pool gates (``auto`` leaves them out), or noted one built inline, name them and the fix, not a gate the probe
    missed (naming a module around an inline one for the smooth surrogate is refused); where it saw one-winner
    operations no gate followed (an LWTA that never fires on the clean batch: :mod:`kwta_robust.unread_winners`),
    name their modules and the fix."""
    empty: dict[str, list[AttackResult]] = {}
    for r in record.results:
        if r.kind == "bpda" and r.bpda_layers is not None and not r.bpda_layers:
            empty.setdefault(r.label, []).append(r)
    detection = record.detection or {}
    found = len(detected_layers(record, "gate", "piecewise-constant"))
    pooled = unrelaxed_pool_gates(detection, detected_layers(record, POOL_GATE))
    inline = [s for s in detection.get("selections") or () if is_pool_selection(s)]
    unread = detection.get("unread_winners") or []  # an LWTA whose inputs all tied (a ReLU that never fires)
    advice = pool_gates_text(pooled) if pooled else "; ".join(pool_advice(inline)) if inline else (
        unread_text(unread) or "if the model has a gate the probe missed, name it (bpda_layers: [NAME] or "
                               "--bpda-layer NAME)")
    flags = []
    for label, results in empty.items():
        inner = results[0].params.get("inner", "pgd")
        flags.append(Flag(
            "bpda-no-layer", WARNING,
            f"{label} acted on no layer (at {', '.join(_where(r) for r in results)}): its bpda_layers selected no "
            f"module (the layer probe found {found} gate or piecewise-constant layers among "
            f"{detection.get('probed', 0)} leaf modules), so it ran its inner attack {inner} unchanged (once, with "
            f"the first temperature stage's budget) and its column is a plain {inner} result; {advice}",
            {"attack": label, "inner": inner, "points": [{"norm": r.norm, "eps": r.eps} for r in results],
             "probed_modules": detection.get("probed", 0), "detected_layers": found,
             **({"pool_gates": [l["name"] for l in pooled]} if pooled else {}),
             **({"unread_winners": unread} if unread and not pooled and not inline else {})},
        ))
    return flags


def bpda_acted_on(record: EvalRecord) -> set[str]:
    """The modules some BPDA attack of ``record`` acted on."""
    return {name for r in record.results if r.bpda_layers for name in r.bpda_layers}


def missed_by_bpda(record: EvalRecord, layers: list[dict]) -> list[dict]:
    """The detected ``layers`` that no BPDA attack of ``record`` acted on."""
    acted = bpda_acted_on(record)
    return [l for l in layers if l["name"] not in acted]


def top_k_selections(record: EvalRecord) -> tuple[list[dict], list[dict]]:
    """The top-k selection calls of ``record.detection`` (step functions aside) made inside a module some BPDA attack
    acted on, and those outside every such module."""
    acted = bpda_acted_on(record)
    inline = {name for r in record.results if r.bpda_layers for name, how in r.bpda_layers.items()
              if how == "wrapped inline"}
    selections = [s for s in (record.detection or {}).get("selections", [])
                  if s.get("kind", "selection") in ("selection", "sparsity")]
    relaxed = [held_by(acted, s, inline) for s in selections]
    return ([s for s, r in zip(selections, relaxed) if r], [s for s, r in zip(selections, relaxed) if not r])


@register_check("gates-without-bpda", "top-k gates (kWTA) that no BPDA attack acted on")
def check_gates_without_bpda(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Top-k gates make kWTA's gradients discontinuous (Xiao et al., ICLR 2020; adaptive attacks took it near 0%,
    Tramèr et al., NeurIPS 2020): a suite without BPDA on them (``quick``, ``standard``) measures the masking.
    Critical; a warning when gradient estimation or a black-box attack (not a transfer) ran: on kWTA, short of BPDA."""
    gates = detected_layers(record, "gate")
    missed = missed_by_bpda(record, gates) if record.results else []
    if not missed:
        return []
    free = gradient_free_labels(record)
    which = "them" if len(missed) == len(gates) else layer_names(missed)
    consequence = masking_consequence(record, free, "the gates' gradients")
    found = (f"the layer probe found top-k gate(s) {layer_names(gates)} (kWTA: discontinuous gradients) and no "
             f"BPDA attack acted on {which}, so {consequence}")
    advice = "; add bpda (bpda_layers: auto) or run the quickstart or kwta-adaptive suite"
    return [Flag("gates-without-bpda", WARNING if free else CRITICAL, found + advice, {
        "layers": layer_evidence(gates), "missed_by_bpda": [l["name"] for l in missed], "gradient_free": free,
    })]


@register_check("selections-outside-layers", "top-k selections (topk, sort, ...) outside every layer BPDA acted on")
def check_selections_outside(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """A kWTA written as a function call, inside a module with children or in a module called with keyword
    arguments is invisible to the layer probe, so ``bpda_layers: auto`` does not replace it (unless the probe read it
    as a gate built inline, ``gate``: ``auto`` then acts on the module building it) and plain gradient
    attacks meet its discontinuous gradients (:mod:`kwta_robust.detect_selections`). Critical, as for gates the
    probe found; a warning when gradient estimation or a black-box attack ran (not a transfer attack)."""
    missed = top_k_selections(record)[1]
    if not missed or not record.results:
        return []
    free = gradient_free_labels(record)
    gates = [l["name"] for l in unrelaxed_pool_gates(record.detection, detected_layers(record, POOL_GATE))]
    (does, advice), consequence = outside_text(missed, gates), masking_consequence(record, free, "its gradients")
    message = (f"the model {does}, so no BPDA attack replaced it: if it selects winners (kWTA), {consequence}; "
               f"{'; '.join(advice)}")
    return [Flag("selections-outside-layers", WARNING if free else CRITICAL, message,
                 {"selections": missed, "gradient_free": free})]


@register_check("piecewise-constant-layers", "layers with zero gradient almost everywhere (rounding, quantization)")
def check_piecewise_constant(record: EvalRecord, thr: Thresholds) -> list[Flag]:
    """Flag layers with zero gradient almost everywhere: critical where no BPDA attack acted on one of them, a
    warning where BPDA acted on every one (its column and the gradient-free ones are then the evidence)."""
    layers = detected_layers(record, "piecewise-constant")
    if not layers:
        return []
    missed = missed_by_bpda(record, layers)
    cut = [l for l in layers if l.get("evidence", {}).get("input_gradient") == "none"]
    shattered = [l for l in layers if l not in cut]
    parts = ([f"layer {layer_names(shattered)} has a zero input gradient while its output changes with its input "
              "(rounding, quantization or a threshold: shattered gradients)"] if shattered else []) + \
        ([f"layer {layer_names(cut)} has no input gradient at all while its output changes with its input (computed "
          "outside autograd: under torch.no_grad(), detached or through NumPy — the gradient is cut)"] if cut else [])
    found = "; ".join(parts) + ", so gradient attacks get no signal through it"
    if missed:
        severity, advice = CRITICAL, (f"; no BPDA attack acted on {layer_names(missed)}: add one (bpda with "
                                      "bpda_layers: auto) — plain gradient attacks overstate robustness here")
    else:
        severity, advice = WARNING, "; BPDA acted on it: trust the BPDA and gradient-free columns, not plain gradients"
    return [Flag("piecewise-constant-layers", severity, found + advice, {
        "layers": layer_evidence(layers), "missed_by_bpda": [l["name"] for l in missed],
    })]


register_check("probabilities-not-logits", "the model outputs probabilities instead of logits")(check_probabilities)
register_check("hard-label-outputs", "the model outputs one-hot hard labels (decision-only)")(check_hard_labels)
register_check("unranked-gates", "BPDA relaxed gates on raw values that do not rank their winners")(
    check_unranked_gates)
register_check("bpda-straight-through", "BPDA passed the gradient straight through a named module it cannot relax")(
    check_straight_through)
register_check(SANITY_NOT_RUN, "no large-eps sanity attack ran (the config has no diagnostics.sanity)")(
    check_sanity_not_run)
register_check(CHECKPOINT_ACCURACY, "the checkpoint's own accuracy is far from the clean accuracy measured")(
    check_checkpoint_accuracy)
