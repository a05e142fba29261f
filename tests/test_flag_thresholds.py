"""The masking flags over attack results at their thresholds (:class:`kwta_robust.diagnostics_base.Thresholds`):
a record just at and just beyond each bar, the flag's severity and its evidence (mutation-testing round on the
checks of :mod:`kwta_robust.diagnostics`)."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import combined_reference, run_checks
from kwta_robust.diagnostics_base import averages_draws
from kwta_robust.results import AttackResult, EvalRecord, Flag


def flags_by_code(record: EvalRecord, code: str) -> list[Flag]:
    """The flags of ``record`` with ``code``."""
    return [f for f in run_checks(record) if f.code == code]


def survivors_then(n: int, robust: int, broken: int, *, label: str, kind: str, single_step: bool = False,
                   attack: str | None = None) -> tuple[AttackResult, AttackResult]:
    """PGD leaving ``robust`` of ``n`` samples robust, then (cascade) an attack of ``kind`` breaking ``broken`` of
    them."""
    pgd = make_result("pgd", [1] * robust + [0] * (n - robust))
    other = make_result(label, [0] * broken + [1] * (robust - broken) + [-1] * (n - robust), kind=kind,
                        position=1, cumulative=True, single_step=single_step, attack=attack)
    return pgd, other


@pytest.mark.parametrize("code, label, kind, single_step, margin", [
    ("adaptive-beats-pgd", "bpda", "bpda", False, 0.05),
    ("black-box-beats-white-box", "square", "black-box", False, 0.05),
    ("single-step-beats-iterative", "fgsm", "white-box", True, 0.02),
])
def test_a_beating_attack_is_flagged_critical_at_exactly_its_margin(code: str, label: str, kind: str,
                                                                    single_step: bool, margin: float) -> None:
    """``wide_margin`` / ``single_step_margin``: 'break at least this fraction of n' — flagged at the bar (5 or 2 of
    100), silent one sample below it, with the counts and both accuracies as evidence."""
    at = round(margin * 100)
    pgd, other = survivors_then(100, 60, at, label=label, kind=kind, single_step=single_step)
    flag, = flags_by_code(make_record([pgd, other]), code)
    assert flag.severity == "critical"
    assert flag.evidence["reference"] == "pgd" and flag.evidence["attack"] == label
    assert flag.evidence["points"] == [{"norm": "linf", "eps": 0.3, "broken_among_survivors": at, "n": 100,
                                        "reference_accuracy": 0.6, "attack_accuracy": (60 - at) / 100}]
    assert f"{label} broke {at} of the 60 samples pgd left robust ({at}.0% of all 100;" in flag.message
    pgd, below = survivors_then(100, 60, at - 1, label=label, kind=kind, single_step=single_step)
    assert flags_by_code(make_record([pgd, below]), code) == []


def test_the_beating_attack_counts_only_samples_it_attacked() -> None:
    """Cascade pgd → square → bpda: the samples square broke are not attacked by bpda (-1); they are square's kills
    among pgd's survivors, not bpda's."""
    n = 20
    pgd = make_result("pgd", [1] * 10 + [0] * 10)
    square = make_result("square", [0] * 5 + [1] * 5 + [-1] * 10, kind="black-box", position=1, cumulative=True)
    bpda = make_result("bpda", [-1] * 5 + [1] * 5 + [-1] * 10, kind="bpda", position=2, cumulative=True)
    record = make_record([pgd, square, bpda], n=n)
    assert flags_by_code(record, "adaptive-beats-pgd") == []
    assert [f.evidence["attack"] for f in flags_by_code(record, "black-box-beats-white-box")] == ["square"]


def test_two_attacks_in_one_check_are_sorted_by_the_samples_they_broke() -> None:
    """One flag per (reference, attack) pair, its points (threat points) sorted by the samples broken, most first."""
    n = 20
    results = [make_result("pgd", [1] * 10 + [0] * 10, eps=0.1), make_result("pgd", [1] * 10 + [0] * 10, eps=0.2),
               make_result("bpda", [0] * 2 + [1] * 8 + [-1] * 10, kind="bpda", eps=0.1, position=1, cumulative=True),
               make_result("bpda", [0] * 6 + [1] * 4 + [-1] * 10, kind="bpda", eps=0.2, position=1, cumulative=True)]
    flag, = flags_by_code(make_record(results, n=n), "adaptive-beats-pgd")
    assert [(p["eps"], p["broken_among_survivors"]) for p in flag.evidence["points"]] == [(0.2, 6), (0.1, 2)]
    assert flag.message.index("at Linf 0.2 bpda broke 6") < flag.message.index("at Linf 0.1 bpda broke 2")


@pytest.mark.parametrize("kwta_layers, signature", [(1, True), (0, False)])
def test_one_kwta_layer_makes_the_adaptive_gap_the_kwta_signature(kwta_layers: int, signature: bool) -> None:
    pgd, bpda = survivors_then(10, 6, 4, label="bpda", kind="bpda")
    record = make_record([pgd, bpda])
    record.model["num_kwta_layers"] = kwta_layers
    flag, = flags_by_code(record, "adaptive-beats-pgd")
    assert ("gradient masking (the kWTA signature)" in flag.message) is signature


def robust(n: int, k: int) -> list[int]:
    """Flags of ``n`` samples of which the first ``k`` survive."""
    return [1] * k + [0] * (n - k)


@pytest.mark.parametrize("n, low, high", [(100, 12, 14), (50, 6, 7), (100, 30, 32), (150, 5, 8)])
def test_robust_accuracy_rising_by_exactly_the_tolerance_is_not_flagged(n: int, low: int, high: int) -> None:
    """``eps_monotonic_tolerance``: robust accuracy 'may rise with eps by at most this much' (2 points). 12% → 14%
    is a rise of exactly 2 points, yet 0.12 + 0.02 reads 0.13999999999999999 in binary floating point, and the
    check used to flag it; one sample more is beyond the tolerance."""
    record = make_record([make_result("pgd", robust(n, low), eps=0.1), make_result("pgd", robust(n, high), eps=0.2)])
    assert flags_by_code(record, "eps-not-monotonic") == []
    record = make_record([make_result("pgd", robust(n, low), eps=0.1),
                          make_result("pgd", robust(n, high + 1), eps=0.2)])
    flag, = [f for f in flags_by_code(record, "eps-not-monotonic") if f.evidence["attack"] == "pgd"]
    assert flag.severity == "warning" and flag.evidence["norm"] == "linf"
    assert flag.evidence["rises"] == [{"eps_from": 0.1, "acc_from": low / n, "eps_to": 0.2, "acc_to": (high + 1) / n}]


def test_a_worst_case_rising_with_eps_is_flagged_on_its_own() -> None:
    """Other attacks at each eps: every attack falls with eps, but the worst case (bpda at 0.1, pgd alone at 0.3)
    rises from 20% to 50%."""
    results = [make_result("pgd", robust(10, 6), eps=0.1), make_result("bpda", robust(10, 2), kind="bpda", eps=0.1,
                                                                       position=1),
               make_result("pgd", robust(10, 5), eps=0.3)]
    flag, = flags_by_code(make_record(results, mode="independent"), "eps-not-monotonic")
    assert flag.evidence["attack"] == "worst case" and flag.severity == "warning"
    assert flag.evidence["rises"] == [{"eps_from": 0.1, "acc_from": 0.2, "eps_to": 0.3, "acc_to": 0.5}]


def test_a_sanity_attack_leaving_exactly_the_bar_is_not_flagged() -> None:
    """``large_eps_max_accuracy``: the sanity attack 'must leave at most this robust accuracy' (5%)."""
    pgd = make_result("pgd", robust(100, 60))
    at_bar = make_result("sanity-pgd", robust(100, 5), eps=1.0)
    assert flags_by_code(make_record([pgd], sanity=[at_bar]), "large-eps-not-zero") == []
    above = make_result("sanity-pgd", robust(100, 6), eps=1.0)
    flag, = flags_by_code(make_record([pgd], sanity=[above]), "large-eps-not-zero")
    assert flag.severity == "critical"
    assert flag.evidence == {"attack": "sanity-pgd", "norm": "linf", "eps": 1.0, "accuracy": 0.06}
    assert "leaves 6.0% robust (expected <= 5.0%)" in flag.message


def ladder(n: int, robust_small: int, broken: int, large_steps: int = 100) -> EvalRecord:
    """pgd at 10 steps leaving ``robust_small`` of ``n`` robust, then pgd at ``large_steps`` breaking ``broken`` of
    them."""
    small = make_result("pgd-10", robust(n, robust_small), attack="pgd", params={"steps": 10, "loss": "ce"})
    large = make_result("pgd-big", [0] * broken + [1] * (robust_small - broken) + [-1] * (n - robust_small),
                        attack="pgd", position=1, cumulative=True, params={"steps": large_steps, "loss": "ce"})
    return make_record([small, large])


def test_a_larger_budget_breaking_exactly_the_ladder_margin_is_a_warning() -> None:
    """``ladder_margin``: a larger budget 'breaking this fraction' (2%) of n among the smaller one's survivors (and
    ``min_count`` samples) is flagged — at 2 of 100, not at 2 of 150."""
    flag, = flags_by_code(ladder(100, 60, 2), "budget-still-lowering")
    assert flag.severity == "warning"
    assert flag.evidence == {"smaller": "pgd-10", "larger": "pgd-big", "norm": "linf", "eps": 0.3, "broken": 2,
                             "n": 100}
    assert "pgd-big broke 2 of the 60 samples pgd-10 left robust (2.0% of all 100; 60.0% → 58.0%)" in flag.message
    assert flags_by_code(ladder(150, 60, 2), "budget-still-lowering") == []


def test_the_same_budget_twice_is_no_ladder() -> None:
    """Two runs of one attack at the same budget (a second seed): neither budget is larger."""
    assert flags_by_code(ladder(10, 6, 3, large_steps=10), "budget-still-lowering") == []


def test_the_combined_reference_counts_the_survivors_of_every_plain_attack() -> None:
    """Independent mode, pgd leaves 3 robust and fab 4, together 2: the message and evidence count those 2."""
    pgd = make_result("pgd", robust(10, 3))
    fab = make_result("fab", [1, 1, 0, 1, 1, 0, 0, 0, 0, 0], position=1)
    bpda = make_result("bpda", [0] * 10, kind="bpda", position=2)
    flag, = flags_by_code(make_record([pgd, fab, bpda], mode="independent"), "adaptive-beats-pgd")
    assert "bpda broke 2 of the 2 samples pgd + fab left robust (20.0% of all 10; pgd + fab 20.0% vs bpda 0.0%)" \
        in flag.message
    assert flag.evidence["points"][0]["reference_accuracy"] == 0.2


def detection(*layers: tuple[str, list[str], dict]) -> dict:
    """A layer probe's result holding ``(name, kinds, evidence)`` layers (5 leaf modules probed)."""
    return {"n": 8, "probed": 5, "layers": [{"name": n, "module_class": "M", "kinds": k, "native": False,
                                             "evidence": e} for n, k, e in layers]}


def test_bpda_on_no_layer_counts_gates_and_piecewise_constant_layers_and_names_its_inner_attack() -> None:
    found = detection(("gate", ["gate"], {}), ("round", ["piecewise-constant"], {}), ("noise", ["randomized"], {}))
    none = make_result("bpda", robust(10, 6), kind="bpda", params={"inner": "apgd-ce"}, bpda_layers={})
    flag, = flags_by_code(make_record([none], detection=found), "bpda-no-layer")
    assert flag.severity == "warning"
    assert flag.evidence == {"attack": "bpda", "inner": "apgd-ce", "points": [{"norm": "linf", "eps": 0.3}],
                             "probed_modules": 5, "detected_layers": 2}
    assert "found 2 gate or piecewise-constant layers among 5 leaf modules), so it ran its inner attack apgd-ce " \
        "unchanged" in flag.message


def test_a_layer_without_any_input_gradient_is_named_a_cut_not_a_shattered_gradient() -> None:
    cut = detection(("detached", ["piecewise-constant"], {"input_gradient": "none"}))
    flag, = flags_by_code(make_record([make_result("pgd", robust(10, 6))], detection=cut), "piecewise-constant-layers")
    assert flag.severity == "critical" and flag.evidence["missed_by_bpda"] == ["detached"]
    assert flag.message.startswith("layer detached (M) has no input gradient at all while its output changes")
    assert "shattered" not in flag.message


def test_selections_outside_layers_need_an_attack_and_a_resized_module_is_not_told_to_go_into_bpda_layers() -> None:
    resized = [{"op": "topk", "kind": "selection", "modules": ["", "top"], "calls": 1, "probed": True,
                "keeps_shape": False}]
    record = make_record([make_result("pgd", robust(10, 6))])
    record.detection = {"layers": [], "probed": 3, "selections": resized}
    flag, = flags_by_code(record, "selections-outside-layers")
    assert flag.severity == "critical" and flag.evidence["selections"] == resized
    assert "top: a module the probe saw, whose output is not shaped like its input" in flag.message
    assert "BPDA cannot replace top without a backward map of your own" in flag.message
    assert "in bpda_layers" not in flag.message and "whose outputs did not show a top-k gate" not in flag.message
    unattacked = make_record([], n=10)
    unattacked.detection = {"layers": [], "probed": 3, "selections": resized}
    assert flags_by_code(unattacked, "selections-outside-layers") == []


def straight_through_record(surrogate: str, calls: int, relaxed: int, masks_input: bool,
                            *extra: AttackResult) -> EvalRecord:
    """BPDA (``surrogate``) named module ``m``, which the straight-through probe saw ``calls`` times, ``relaxed``
    of them as a top-k gate, and whose output is (``masks_input``) or is not its input times a 0/1 mask."""
    bpda = make_result("bpda", robust(10, 6), kind="bpda", params={"surrogate": surrogate}, bpda_layers={"m": "x"})
    record = make_record([bpda, *extra])
    record.detection = {"layers": [], "probed": 3, "straight_through": {"m": {
        "module_class": "M", "calls": calls, "relaxed_calls": relaxed, "masks_input": masks_input,
        "keeps_elements": True, "parameters": 0}}}
    return record


def test_a_smooth_surrogate_that_relaxed_every_call_passed_nothing_straight_through() -> None:
    assert flags_by_code(straight_through_record("smooth", 2, 2, False), "bpda-straight-through") == []
    flag, = flags_by_code(straight_through_record("smooth", 2, 1, False), "bpda-straight-through")
    assert flag.severity == "critical" and flag.evidence["wrong"] == {"m": ["bpda"]}


def test_the_identity_surrogate_passes_every_call_straight_through_even_where_the_probe_relaxed_it() -> None:
    flag, = flags_by_code(straight_through_record("identity", 2, 2, False), "bpda-straight-through")
    assert flag.severity == "critical" and flag.evidence["wrong"] == {"m": ["bpda"]}


def test_a_learned_surrogate_is_not_a_straight_through_pass() -> None:
    assert flags_by_code(straight_through_record("learned", 2, 0, False), "bpda-straight-through") == []


def test_a_straight_through_pass_beside_a_black_box_attack_is_a_warning_naming_it() -> None:
    square = make_result("square", robust(10, 5), kind="black-box", position=1)
    flag, = flags_by_code(straight_through_record("identity", 2, 0, False, square), "bpda-straight-through")
    assert flag.severity == "warning" and flag.evidence["gradient_free"] == ["square"]
    assert flag.message.endswith("; square attacked without gradients")


def test_each_norm_is_its_own_eps_series() -> None:
    """Linf at 0.1 leaves 20%, L2 at 0.5 leaves 80%: two series, no rise."""
    results = [make_result("pgd", robust(10, 2), eps=0.1), make_result("pgd", robust(10, 8), norm="l2", eps=0.5)]
    assert flags_by_code(make_record(results), "eps-not-monotonic") == []


def test_out_of_ball_outputs_name_each_attack_with_its_largest_excess() -> None:
    sanity = make_result("sanity-pgd", robust(10, 0), eps=1.0, violations=1)
    flag, = flags_by_code(make_record([make_result("pgd", robust(10, 6))], sanity=[sanity]), "out-of-ball-outputs")
    assert flag.severity == "info"
    assert flag.evidence == {"attacks": [{"attack": "sanity-pgd", "norm": "linf", "eps": 1.0, "violations": 1,
                                          "max_violation": 0.01}]}


def test_a_ladder_is_stage_by_stage() -> None:
    """BPDA stages [300, 500] then [100, 1500]: the second has the longer last stage but a shorter first one."""
    def bpda(label: str, flags: list[int], position: int, stages: list[int]) -> AttackResult:
        return make_result(label, flags, attack="bpda", kind="bpda", position=position, cumulative=position > 0,
                           params={"surrogate": "smooth", "stage_steps": stages})

    record = make_record([bpda("a", robust(10, 6), 0, [300, 500]),
                          bpda("b", [0, 0, 0, 1, 1, 1, -1, -1, -1, -1], 1, [100, 1500])])
    assert flags_by_code(record, "budget-still-lowering") == []


@pytest.mark.parametrize("found, explanation", [
    ({"layers": [{"name": "round", "module_class": "Round", "kinds": ["piecewise-constant"], "evidence": {}}]},
     "gradient masking (the kWTA signature): plain gradient attacks overstate robustness"),
    ({"layers": [], "selections": [{"op": "topk", "modules": [""], "calls": 1}]},
     "the model makes top-k selections that no layer BPDA acts on holds (selections-outside-layers): likely "
     "gradient masking"),
    ({"layers": []}, "the model has no kWTA layer or detected gate, so the adaptive attack's edge comes from its "
                     "inner attack"),
])
def test_the_adaptive_gap_is_explained_by_what_the_layer_probe_found(found: dict, explanation: str) -> None:
    """A model without kWTA layers: a piecewise-constant layer, a selection outside every layer, or nothing."""
    pgd, bpda = survivors_then(10, 6, 4, label="bpda", kind="bpda")
    record = make_record([pgd, bpda], detection=found)
    record.model["num_kwta_layers"] = 0
    flag, = flags_by_code(record, "adaptive-beats-pgd")
    assert flag.message.split(" — ", 1)[1].startswith(explanation)


@pytest.mark.parametrize("samples, averages", [(None, True), ("auto", True), (1, False), (8, True)])
def test_an_eot_attack_averages_unless_it_took_one_draw(samples: object, averages: bool) -> None:
    """``averages_draws``: the default eot_samples (not recorded) and a value that is not a number average."""
    params = {} if samples is None else {"eot_samples": samples}
    assert averages_draws(make_result("eot", robust(10, 6), kind="adaptive", params=params)) is averages


def test_the_combined_reference_is_the_per_sample_best_with_its_counts() -> None:
    """Broken if any broke it, robust if one attacked it and none broke it, else not attacked; counts to match."""
    a = make_result("pgd", [1, 0, -1, 1, -1])
    b = make_result("fab", [0, -1, -1, 1, 1], position=1)
    both = combined_reference([a, b])
    assert both.label == "pgd + fab" and both.flags == [0, 0, -1, 1, 1]
    assert (both.robust.correct, both.robust.n, both.n_attacked, both.n_broken) == (2, 5, 4, 2)
    assert combined_reference([a]) is a
