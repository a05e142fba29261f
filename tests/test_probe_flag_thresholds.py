"""The masking flags over the model probes (:mod:`kwta_robust.probe_checks`) at their bars: just at and just beyond
each, with the flag's severity and evidence (mutation-testing round on the probe checks)."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import run_checks
from kwta_robust.results import AttackResult, Flag

PGD = make_result("pgd", [1] * 6 + [0] * 4)


def flags_of(probes: dict, *results: AttackResult, detection: dict | None = None) -> dict[str, Flag]:
    """The flags, by code, of a record with ``probes`` and ``results`` (default: one pgd)."""
    record = make_record(list(results) or [PGD], probes=probes, detection=detection)
    return {f.code: f for f in run_checks(record)}


def test_one_sample_in_twenty_with_a_nan_gradient_is_critical() -> None:
    """``nan-gradients``: any non-finite gradient is flagged (no fraction bar)."""
    flag = flags_of({"n": 20, "grad_nonfinite_fraction": 0.05})["nan-gradients"]
    assert flag.severity == "critical" and flag.evidence == {"grad_nonfinite_fraction": 0.05, "n": 20}
    assert "nan-gradients" not in flags_of({"n": 20, "grad_nonfinite_fraction": 0.0})


def test_a_missing_gradient_names_the_cut_in_its_evidence() -> None:
    cut = {"modules": ["", "blur"], "no_grad": True, "op": "add"}
    flag = flags_of({"n": 8, "grad_missing": True, "grad_zero_fraction": 1.0, "grad_cut": cut})["zero-gradients"]
    assert flag.severity == "critical"
    assert flag.evidence == {"grad_zero_fraction": 1.0, "grad_missing": True, "n": 8, "grad_cut": cut}


@pytest.mark.parametrize("fraction, flagged", [(0.1, False), (0.2, True)])
def test_the_softmax_saturates_beyond_the_zero_gradient_bar_only(fraction: float, flagged: bool) -> None:
    """``zero_gradient_fraction``: 'more than this fraction' — 1 of 10 samples (exactly 0.1) is not flagged."""
    probes = {"n": 10, "ce_grad_zero_fraction": fraction, "max_abs_output": 1e4}
    assert ("saturated-softmax" in flags_of(probes)) is flagged


def test_no_saturated_softmax_is_claimed_where_the_gradient_is_missing_altogether() -> None:
    """A cut graph zeroes both losses' gradients: zero-gradients says so, not saturated-softmax."""
    probes = {"n": 10, "ce_grad_zero_fraction": 1.0, "grad_zero_fraction": 1.0, "grad_missing": True}
    assert set(flags_of(probes)) == {"zero-gradients"}


def test_a_bpda_attack_climbing_cross_entropy_counts_among_the_gradient_attacks() -> None:
    bpda = make_result("bpda", PGD.flags, kind="bpda", params={"inner": "pgd", "inner_params": {"loss": "ce"}})
    flag = flags_of({"n": 10, "ce_grad_zero_fraction": 0.5, "max_abs_output": 1e4}, bpda)["saturated-softmax"]
    assert flag.severity == "critical" and flag.evidence["cross_entropy_attacks"] == ["bpda"]


def test_outputs_differing_by_exactly_the_tolerance_are_not_called_different() -> None:
    """``output_rtol``: two passes 'may differ by this much' relative to the largest logit; a model randomized by a
    layer is flagged for the layer, not for passes that differ by exactly the tolerance."""
    noisy = {"n": 8, "probed": 3, "layers": [{"name": "noise", "module_class": "Noise", "kinds": ["randomized"],
                                              "native": False, "evidence": {}}]}
    flag = flags_of({"n": 8, "max_output_diff": 1e-5, "max_abs_output": 1.0}, detection=noisy)["non-deterministic"]
    assert flag.message.startswith("two calls of layer noise (Noise) on the same input differ")
    assert "two forward passes" not in flag.message


def test_the_logit_resolution_is_the_spacing_at_the_largest_logit() -> None:
    """float16 at |logit| 3: eps 2**-10 times 2 (the power of two below 3)."""
    flag = flags_of({"n": 8, "output_dtype": "float16", "max_abs_output": 3.0})["low-precision"]
    assert flag.severity == "warning" and flag.evidence["logit_resolution"] == 2.0 ** -9
    assert flag.evidence["low_precision_dtypes"] == ["float16"]  # the logits alone (no parameter dtypes recorded)
    zero = flags_of({"n": 8, "output_dtype": "float16", "max_abs_output": 0.0})["low-precision"]
    assert zero.evidence["logit_resolution"] is None  # no largest logit: no spacing (not a math domain error)


def test_a_float16_model_with_float32_logits_has_no_logit_resolution() -> None:
    record = make_record([PGD], probes={"n": 8, "output_dtype": "float32", "max_abs_output": 3.0})
    record.model["parameter_dtypes"] = ["float16"]
    flag, = [f for f in run_checks(record) if f.code == "low-precision"]
    assert flag.evidence["logit_resolution"] is None and flag.evidence["low_precision_dtypes"] == ["float16"]
    assert "in steps of" not in flag.message


def test_hard_labels_name_the_decision_based_attacks_in_the_evidence() -> None:
    hsj = make_result("hopskipjump", PGD.flags, kind="black-box", position=1)
    flag = flags_of({"n": 8, "outputs_look_like_hard_labels": True}, PGD, hsj)["hard-label-outputs"]
    assert flag.severity == "warning" and flag.evidence == {"n": 8, "labels_only_attacks": ["hopskipjump"]}


def test_outputs_moving_by_exactly_the_batch_tolerance_are_not_batch_dependence() -> None:
    """``BATCH_RTOL`` (1e-2 of the largest logit): outputs may differ by this much."""
    probes = {"n": 8, "batch_half": 4, "batch_max_output_diff": 0.02, "batch_prediction_changes": 0,
              "max_abs_output": 2.0}
    assert "batch-dependent" not in flags_of(probes)
    flag = flags_of({**probes, "batch_max_output_diff": 0.03, "batch_statistics_layers": ["bn"]})["batch-dependent"]
    assert flag.severity == "critical" and flag.evidence["batch_statistics_layers"] == ["bn"]


def gate(name: str, best: float, native: bool = False) -> dict:
    """A detected gate whose winners are the largest by value in ``best`` of its groups (by magnitude or smallest
    value in none)."""
    return {"name": name, "module_class": "Gate", "kinds": ["gate"], "native": native,
            "evidence": {"ordered_fraction": best, "magnitude_ordered_fraction": 0.0,
                         "smallest_ordered_fraction": 0.0}}


@pytest.mark.parametrize("best, native, flagged", [(0.5, False, False), (0.49, False, True), (0.2, True, False)])
def test_a_gate_is_unranked_below_half_its_groups_and_never_when_native(best: float, native: bool,
                                                                        flagged: bool) -> None:
    """``UNRANKED_FRACTION``: unranked when no score orders its winners 'in even this fraction' (0.5) of its
    groups; a native kWTA layer ranks by value by construction."""
    bpda = make_result("bpda", PGD.flags, kind="bpda", params={"surrogate": "smooth"}, bpda_layers={"g": "gate"})
    found = {"n": 8, "probed": 3, "layers": [gate("g", best, native)]}
    flag = flags_of({}, bpda, detection=found).get("unranked-gates")
    assert (flag is not None) is flagged
    if flag is not None:
        assert flag.severity == "warning" and [l["name"] for l in flag.evidence["layers"]] == ["g"]


def test_two_passes_differing_by_exactly_the_tolerance_are_deterministic() -> None:
    assert "non-deterministic" not in flags_of({"n": 8, "max_output_diff": 1e-5, "max_abs_output": 1.0})
    flag = flags_of({"n": 8, "max_output_diff": 2e-5, "max_abs_output": 1.0})["non-deterministic"]
    assert flag.severity == "critical" and flag.evidence["max_output_diff"] == 2e-5


def test_the_per_unit_factors_of_a_boosted_gate_stay_out_of_a_flag() -> None:
    """The record's detection holds a boosted gate's per-unit factors once; the flags name the layer without them."""
    boosted = {"name": "g", "module_class": "Gate", "kinds": ["gate"], "native": False,
               "evidence": {"boosted_ordered_fraction": 1.0, "score_factors": [1.0, 2.0]}}
    flag = flags_of({}, detection={"n": 8, "probed": 3, "layers": [boosted]})["gates-without-bpda"]
    assert flag.evidence["layers"] == [{"name": "g", "module_class": "Gate",
                                        "evidence": {"boosted_ordered_fraction": 1.0}}]


def test_changed_predictions_alone_are_named_as_differing_passes() -> None:
    flag = flags_of({"n": 8, "max_output_diff": 0.0, "max_abs_output": 1.0, "prediction_changes": 1})[
        "non-deterministic"]
    assert flag.message.startswith("two forward passes on the same 8 inputs differ (max logit difference 0, 1 "
                                   "predictions changed)")


def test_a_batch_probe_without_its_prediction_count_flags_nothing() -> None:
    """A record whose probe stopped before counting changed predictions: not evidence enough."""
    assert "batch-dependent" not in flags_of({"n": 8, "batch_half": 4, "batch_max_output_diff": 1.0,
                                              "max_abs_output": 1.0})


def test_randomness_found_by_two_seeds_is_named_with_its_logit_difference() -> None:
    record = make_record([PGD], probes={"n": 8, "max_output_diff": 0.0, "max_abs_output": 1.0})
    record.provenance["randomness"] = {"randomized": True, "max_output_diff": 0.25, "seedable": True}
    flag, = [f for f in run_checks(record) if f.code == "non-deterministic"]
    assert flag.message.startswith("two seeds of torch's global RNG change the logits by up to 0.25")


def test_no_zero_cross_entropy_gradients_in_the_models_precision_say_nothing_about_them() -> None:
    probes = {"n": 8, "output_dtype": "float16", "max_abs_output": 3.0, "low_precision_ce_grad_zero_fraction": 0.0}
    assert "cross-entropy gradient is all zero" not in flags_of(probes)["low-precision"].message
    probes["low_precision_ce_grad_zero_fraction"] = 0.25
    assert "in float16 itself the cross-entropy gradient is all zero on 25.0% of the 8 probed samples" in \
        flags_of(probes)["low-precision"].message
