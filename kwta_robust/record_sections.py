"""The descriptive sections of an evaluation record that tables, reports and notes read — ``model`` (and its
``training.pruning``), ``dataset``, ``detection.layers``, ``diagnostics`` (and a budget check's re-run evidence),
``noise`` (and its score against its accuracies per level, its per-level lists against its levels, its samples
against the record's), ``provenance.randomness`` and each worst case's names —
checked for the types those renderers rely on;
and the plain fields of each attack result (:data:`RESULT_RULES`, which :mod:`kwta_robust.record_checks` applies
with the result's counts and per-sample lists).

:func:`kwta_robust.record_checks.check_record` calls :func:`check_sections` first, so a hand-edited or damaged
record is one :class:`~kwta_robust.results.RecordError` line naming the field and what it must be
(``r.json: noise[0].result.accuracy[3] must be a number in [0, 1], got None``) instead of a ``TypeError`` deep
inside a Markdown, LaTeX or HTML renderer. Only the fields a renderer reads are checked, and a field left out is
fine (renderers read them with defaults); every other key of these sections is free-form provenance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from attacks.errors import SEED_LIMIT
from kwta_robust.errors import is_finite_number, is_whole_number
from kwta_robust.numbers import count_text
from kwta_robust.record_values import shown
from kwta_robust.results import EvalRecord, RecordError


@dataclass(frozen=True)
class Rule:
    """What a field must be: ``expected`` (for the message), the predicate that accepts it and, for a list, the
    rule of its entries (:func:`check_fields` names the first entry that breaks it)."""

    expected: str
    accepts: Callable[[Any], bool]
    entry: Rule | None = None


def optional(rule: Rule) -> Rule:
    """``rule``, or ``null`` (JSON's ``None``: what a record writes for "not measured")."""
    return Rule(f"{rule.expected} or null", lambda v: v is None or rule.accepts(v), rule.entry)


def list_of(entry: Rule, entries: str) -> Rule:
    """A list of ``entries`` (plural text), each obeying ``entry``."""
    return Rule(f"a list of {entries}", lambda v: isinstance(v, list), entry)


TEXT = Rule("a string", lambda v: isinstance(v, str))
BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
REAL = Rule("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))  # NaN: not measured
COUNT = Rule("an integer >= 0", lambda v: is_whole_number(v, 0))
DRAWS = Rule("an integer >= 1", lambda v: is_whole_number(v, 1))
NUMBER = Rule("a finite number", is_finite_number)
FRACTION = Rule("a number in [0, 1]", lambda v: is_finite_number(v) and 0 <= v <= 1)
MAPPING = Rule("a JSON object", lambda v: isinstance(v, dict))
#: A query count the report divides (per sample): past float range it raised ``OverflowError`` in the HTML page.
QUERIES = Rule("an integer >= 0", lambda v: is_whole_number(v, 0) and is_finite_number(v))
TEXTS = list_of(TEXT, "strings")
#: A duration the evaluation measured: finite and >= 0 (a negative or infinite one, edited in, was rendered as
#: written; the record checks now refuse it); NaN (``null`` in the file) is "not measured".
SECONDS = Rule("a finite number >= 0 (null in the file: not measured)", lambda v: REAL.accepts(v) and (
    math.isnan(v) or (is_finite_number(v) and v >= 0)))
#: A unit's seed: :func:`~kwta_robust.config.derive_seed` writes one in [0, 2**31), a config's ``seed`` is at most
#: 2**63 - 1 (what torch takes); anything else was edited into the record.
SEED = Rule(f"an integer in [0, {SEED_LIMIT - 1}]", lambda v: is_whole_number(v, 0) and v < SEED_LIMIT)

#: The other activations one forward applied, by kind (``{"gelu": 12}``): the kinds that ran, each at least once.
ACTIVATION_COUNTS = Rule("a JSON object of integers >= 1", lambda v: isinstance(v, dict) and all(
    isinstance(k, str) and is_whole_number(n, 1) for k, n in v.items()))


def _weight_sparsity(value: Any) -> bool:
    """What :func:`kwta_robust.models.describe` writes (``overall`` and its ``layers``), a bare fraction, or null."""
    if value is None or FRACTION.accepts(value):
        return True
    layers = value.get("layers") if isinstance(value, dict) else None  # each layer's fraction decides a grid flag
    return isinstance(value, dict) and optional(FRACTION).accepts(value.get("overall")) and optional(
        MAPPING).accepts(layers) and all(FRACTION.accepts(v) for v in (layers or {}).values())


WEIGHT_SPARSITY = Rule("a number in [0, 1] or an object whose overall is one (and layers an object of such fractions)",
                       _weight_sparsity)

MODEL_RULES: Mapping[str, Rule] = {
    "activation": optional(TEXT), "kwta_mode": optional(TEXT), "num_kwta_layers": optional(COUNT),
    "kwta_ratio": optional(NUMBER), "kwta_k": optional(COUNT), "weight_sparsity": WEIGHT_SPARSITY,
    "training": optional(MAPPING),
    # what the layer probe found in a kWTA model of one's own (kwta_robust.fresh_record.probed_model)
    "activation_layers": optional(TEXT), "detected_kwta_ratio": optional(FRACTION),
    "detected_kwta_mode": optional(TEXT), "relu_calls": optional(COUNT),  # the ReLUs the probe saw applied
    "other_activations": optional(ACTIVATION_COUNTS),  # and the other activations, by kind
}
TRAINING_RULES: Mapping[str, Rule] = {"pruning": optional(MAPPING)}
PRUNING_RULES: Mapping[str, Rule] = {"target_sparsity": optional(NUMBER)}
#: A sample's index in its split, as :class:`~kwta_robust.data.TensorData` holds it (int64).
SAMPLE_INDEX = Rule(f"an integer in [0, {2 ** 63 - 1}]", lambda v: is_whole_number(v, 0) and v < 2 ** 63)
#: ``samples_sha256`` and ``sha256``: the digests a resumed run compares its samples and data with (a number edited in
#: was worded by resume as data that "cannot be checked" instead of being refused where the record is read);
#: ``indices``: the samples the HTML report names (its worst-case survivors) and resume compares (a ``"44"``, ``true``
#: or ``-1`` edited in was shown as written, and worded by resume as "other samples"); ``n`` (``200.0`` passed the
#: record check's comparison with the sample count) and ``num_classes`` (a sweep builds its attack settings with it).
DATASET_RULES: Mapping[str, Rule] = {"name": optional(TEXT), "split": optional(TEXT), "samples_sha256": optional(TEXT),
                                     "sha256": optional(TEXT), "n": COUNT, "num_classes": optional(DRAWS),
                                     "indices": optional(list_of(SAMPLE_INDEX, f"integers in [0, {2 ** 63 - 1}]"))}
LAYER_RULES: Mapping[str, Rule] = {
    "name": optional(TEXT), "module_class": optional(TEXT), "grouping": optional(TEXT),
    "kinds": TEXTS, "evidence": optional(MAPPING),
}
FLAG_RULES: Mapping[str, Rule] = {"code": TEXT, "severity": TEXT, "message": TEXT, "evidence": MAPPING}
INDICES = list_of(COUNT, "integers >= 0")
#: The evidence of a budget check's re-run (``source: rerun``, :func:`kwta_robust.budget_check.judge`) that the
#: report's budget-check notes read, and of the first sample it settled (``first_sample``).
RERUN_RULES: Mapping[str, Rule] = {"eps": NUMBER, "broken_indices": INDICES, "first_sample": optional(MAPPING)}
FIRST_SAMPLE_RULES: Mapping[str, Rule] = {"broken_indices": INDICES}
#: A probe's ``seed`` is :func:`~kwta_robust.attack_plan.noise_seed`'s (a ``-1`` or a seed past 2**63 was kept);
#: its result's ``num_samples``: the samples probed, shown in the HTML report (a ``"200"`` was shown as written).
NOISE_RULES: Mapping[str, Rule] = {
    "kind": TEXT, "levels": list_of(NUMBER, "finite numbers"), "draws": DRAWS, "seed": SEED, "result": MAPPING,
    "wall_time_s": Rule("a finite number >= 0", lambda v: is_finite_number(v) and v >= 0),
}
NOISE_RESULT_RULES: Mapping[str, Rule] = {
    "num_samples": COUNT, "accuracy": list_of(FRACTION, "numbers in [0, 1]"), "noise_score": optional(NUMBER),
    "noise_score_normalized": optional(NUMBER), "params": optional(MAPPING),
    "non_finite_inputs": optional(list_of(COUNT, "integers >= 0")),  # absent (older records) or null: unknown
}
#: The evaluation's seed, which ``table --protocol`` prints (a ``"12"`` or ``-1`` edited in was printed as written).
PROVENANCE_RULES: Mapping[str, Rule] = {"seed": optional(SEED)}
RANDOMNESS_RULES: Mapping[str, Rule] = {"draws": DRAWS, "max_output_diff": NUMBER, "randomized": BOOLEAN,
                                        "seedable": BOOLEAN, "common_draws": BOOLEAN}
WORST_CASE_RULES: Mapping[str, Rule] = {"norm": TEXT, "eps": NUMBER, "eps_text": TEXT, "attacks": TEXTS}
#: An attack result's (``results`` and ``sanity`` entries) plain fields; its ``eps``, counts and per-sample lists
#: have checks of their own (:mod:`kwta_robust.record_checks`). A wall time or ``max_violation`` may be NaN (``null``
#: in the file, as :func:`~kwta_robust.results.save_record` writes it); ``position`` counts from 0 (the attack's place
#: in the cascade).
RESULT_RULES: Mapping[str, Rule] = {
    "label": TEXT, "attack": TEXT, "kind": TEXT, "norm": TEXT, "eps_text": TEXT, "single_step": BOOLEAN,
    "cumulative": BOOLEAN, "params": MAPPING, "position": COUNT, "seed": SEED, "wall_time_s": SECONDS,
    "violations": COUNT, "max_violation": REAL, "queries": optional(QUERIES), "source": optional(TEXT),
    "bpda_layers": optional(MAPPING),
}


def check_fields(fields: Mapping[str, Any], rules: Mapping[str, Rule], where: str) -> None:
    """Each field of ``fields`` that ``rules`` names (and the record has) obeys its rule, else one line."""
    for key, rule in rules.items():
        if key not in fields:
            continue
        value = fields[key]
        if not rule.accepts(value):
            raise RecordError(f"{where}.{key} must be {rule.expected}, got {shown(value)}")
        entry = rule.entry
        bad = None if entry is None or value is None else next(
            (i for i, v in enumerate(value) if not entry.accepts(v)), None)
        if bad is not None:
            raise RecordError(f"{where}.{key}[{bad}] must be {entry.expected}, got {shown(value[bad])}")


_RESTORE = "restore the value the evaluation wrote"


def _objects(items: Any, where: str) -> Sequence[Mapping[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise RecordError(f"{where} must be a list of JSON objects, got {shown(items)}")
    return items


def _check_noise_score(result: Mapping[str, Any], where: str) -> None:
    """The noise score a table prints against the accuracies per level it sums (:mod:`attacks.noise`: ``noise_score``
    = Σ accuracy × ``num_samples``, normalized ÷ (levels × samples)): a hand-edited score was shown as written. A
    record without ``num_samples`` has nothing to recompute it from."""
    accuracy, n = result.get("accuracy"), result.get("num_samples")
    if not (isinstance(accuracy, list) and is_whole_number(n, 0)):
        return
    if not is_finite_number(n):  # an int past float range: no count of samples
        raise RecordError(f"{where}.num_samples must be the number of samples probed, got {shown(n)}")
    score = sum(accuracy) * n
    normalized = score / (len(accuracy) * n) if accuracy and n else 0.0
    for key, expected in (("noise_score", score), ("noise_score_normalized", normalized)):
        value = result.get(key)
        if value is not None and abs(value - expected) > 1e-6 * max(1.0, abs(expected)):
            raise RecordError(f"{where}.{key} = {shown(value)} but its accuracy per level over {n} samples gives "
                              f"{expected:.6g}; {_RESTORE}")


def _check_noise_levels(levels: list, result: Mapping[str, Any], where: str) -> None:
    """A probe's per-level lists against its ``levels``: the report pairs ``accuracy[l]`` (and the non-finite-logits
    flag ``non_finite_inputs[l]``) with ``levels[l]``; a list of another length was paired with the wrong levels, or
    cut short without a word."""
    for key in ("accuracy", "non_finite_inputs"):
        values = result.get(key)
        if isinstance(values, list) and len(values) != len(levels):
            raise RecordError(f"{where}.{key} holds {count_text(len(values), 'value')} for the probe's "
                              f"{count_text(len(levels), 'noise level')} (one per level); {_RESTORE}")


def _check_noise_samples(result: Mapping[str, Any], n: int, where: str) -> None:
    """A probe's result against the record's ``n`` samples: the probe ran on the evaluated samples (``num_samples``,
    which its score counts and the HTML report shows), and no level has more non-finite inputs than that."""
    if not is_whole_number(n, 0):  # the record checks name it
        return
    count = result.get("num_samples")
    if count is not None and count != n:
        raise RecordError(f"{where}.num_samples = {shown(count)} but {n} samples were evaluated; {_RESTORE}")
    over = next((i for i, k in enumerate(result.get("non_finite_inputs") or []) if k > n), None)
    if over is not None:
        raise RecordError(f"{where}.non_finite_inputs[{over}] = {shown(result['non_finite_inputs'][over])} but "
                          f"{n} samples were probed; {_RESTORE}")


def check_sections(record: EvalRecord, source: str = "record") -> None:
    """Raise :class:`RecordError` (one line starting with ``source``) at the first field of the record's
    descriptive sections that is not what the renderers read (see the module docstring)."""
    check_fields(record.model, MODEL_RULES, f"{source}: model")
    training = record.model.get("training") or {}
    check_fields(training, TRAINING_RULES, f"{source}: model.training")
    check_fields(training.get("pruning") or {}, PRUNING_RULES, f"{source}: model.training.pruning")
    check_fields(record.dataset, DATASET_RULES, f"{source}: dataset")
    if "layers" in record.detection:
        for i, layer in enumerate(_objects(record.detection["layers"], f"{source}: detection.layers")):
            check_fields(layer, LAYER_RULES, f"{source}: detection.layers[{i}]")
    for i, flag in enumerate(record.diagnostics):
        check_fields(vars(flag), FLAG_RULES, f"{source}: diagnostics[{i}]")
        if flag.evidence.get("source") == "rerun":
            check_fields(flag.evidence, RERUN_RULES, f"{source}: diagnostics[{i}].evidence")
            check_fields(flag.evidence.get("first_sample") or {}, FIRST_SAMPLE_RULES,
                   f"{source}: diagnostics[{i}].evidence.first_sample")
    for i, probe in enumerate(record.noise):
        check_fields(vars(probe), NOISE_RULES, f"{source}: noise[{i}]")
        check_fields(probe.result, NOISE_RESULT_RULES, f"{source}: noise[{i}].result")
        _check_noise_levels(probe.levels, probe.result, f"{source}: noise[{i}].result")
        _check_noise_score(probe.result, f"{source}: noise[{i}].result")
        _check_noise_samples(probe.result, record.clean.n, f"{source}: noise[{i}].result")
    check_fields(record.provenance, PROVENANCE_RULES, f"{source}: provenance")
    randomness = record.provenance.get("randomness")
    if randomness is not None:
        if not isinstance(randomness, dict):
            raise RecordError(f"{source}: provenance.randomness must be a JSON object or null, got "
                              f"{shown(randomness)}")
        check_fields(randomness, RANDOMNESS_RULES, f"{source}: provenance.randomness")
    for i, worst in enumerate(record.worst_case):
        check_fields(vars(worst), WORST_CASE_RULES, f"{source}: worst_case[{i}]")
