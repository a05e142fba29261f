"""Each masking check fires on constructed evidence (naming it) and stays silent on clean evidence."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from eval_helpers import make_record, make_result, tiny_kwta_data
from kwta_robust.diagnostics import CHECKS, Thresholds, broken_among_survivors, run_checks
from kwta_robust.model_probes import measure_model
from kwta_robust.results import AttackResult, EvalRecord

PGD_FLAGS = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # pgd leaves 6/10 robust


def codes(record) -> list[str]:
    return [f.code for f in run_checks(record)]


def test_every_registered_check_is_exercised_here() -> None:
    """Here or, for the checks over the model probes, in tests/test_probe_checks.py (unranked-gates: tests/
    test_unranked_gates.py; bpda-straight-through: tests/test_straight_through.py; hard-label-outputs:
    tests/test_hard_label_outputs.py; low-precision: tests/test_precision.py; non-finite-logits:
    tests/test_non_finite_logits.py; sanity-not-run: tests/test_ideas_records.py; plugin-not-reproducible:
    tests/test_plugin_repeat.py; checkpoint-accuracy-differs: tests/test_relu52_checkpoint_meta.py)."""
    assert set(CHECKS.names()) == {
        "eps-not-monotonic", "large-eps-not-zero", "single-step-beats-iterative", "black-box-beats-white-box",
        "adaptive-beats-pgd", "budget-still-lowering", "out-of-ball-outputs", "zero-gradients", "saturated-softmax",
        "non-deterministic", "probabilities-not-logits", "bpda-no-layer", "piecewise-constant-layers",
        "gates-without-bpda", "selections-outside-layers", "batch-dependent", "unranked-gates", "bpda-straight-through",
        "hard-label-outputs", "low-precision", "non-finite-logits", "sanity-not-run",
        "plugin-not-reproducible", "checkpoint-accuracy-differs",
    }


def _detection(*layers: tuple[str, str, list[str]]) -> dict:
    return {"n": 8, "probed": 5, "bpda_capable": [], "wall_time_s": 0.1,
            "layers": [{"name": n, "module_class": c, "kinds": k, "grouping": None, "native": False,
                        "evidence": {"shape": [8, 4]}} for n, c, k in layers]}


def _selections_record(selections: list[dict], *results: AttackResult) -> EvalRecord:
    record = make_record(list(results))
    record.detection = {"layers": [], "probed": 2, "selections": selections}
    return record


def test_the_flag_is_critical_unless_bpda_acted_around_it_or_a_gradient_free_attack_ran() -> None:
    inside_gate = [{"op": "topk", "modules": ["", "gate"], "calls": 2}]
    pgd = make_result("pgd", [1] * 8 + [0] * 2)
    flag, = [f for f in run_checks(_selections_record(inside_gate, pgd)) if f.code == "selections-outside-layers"]
    assert flag.severity == "critical" and flag.evidence["selections"] == inside_gate
    assert flag.message.startswith("the model calls topk in the forward of gate (2 call(s) a forward), outside")
    assert "move the selection into a module of its own" in flag.message
    bpda = make_result("bpda", [1] * 6 + [0] * 4, kind="bpda", position=1, bpda_layers={"gate": {"kind": "module"}})
    assert "selections-outside-layers" not in [f.code for f in run_checks(_selections_record(inside_gate, pgd, bpda))]
    in_root = [{"op": "topk", "modules": [""], "calls": 1}]  # BPDA on another module does not cover the root
    assert "selections-outside-layers" in [f.code for f in run_checks(_selections_record(in_root, pgd, bpda))]
    square = make_result("square", [1] * 7 + [0] * 3, kind="black-box", position=1)
    flag, = [f for f in run_checks(_selections_record(in_root, pgd, square)) if f.code == "selections-outside-layers"]
    assert flag.severity == "warning" and flag.evidence["gradient_free"] == ["square"]
    assert [f for f in run_checks(_selections_record([], pgd)) if f.code == "selections-outside-layers"] == []


def test_bpda_that_acted_on_no_layer_is_flagged_per_attack() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    none = make_result("bpda-smooth", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], attack="bpda", kind="bpda", position=1,
                       cumulative=True, params={"inner": "pgd"}, bpda_layers={})
    flags = run_checks(make_record([pgd, none], detection=_detection()))
    assert [f.code for f in flags] == ["bpda-no-layer"]
    assert flags[0].severity == "warning"
    assert "bpda-smooth acted on no layer (at Linf 0.3)" in flags[0].message
    assert "ran its inner attack pgd unchanged" in flags[0].message and "--bpda-layer" in flags[0].message
    assert flags[0].evidence["probed_modules"] == 5
    acted = make_result("bpda-smooth", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], attack="bpda", kind="bpda", position=1,
                        cumulative=True, params={"inner": "pgd"}, bpda_layers={"features.2": "wrapped gate/volume"})
    old = make_result("bpda-smooth", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], attack="bpda", kind="bpda", position=1,
                      cumulative=True, params={"inner": "pgd"})  # a schema-1 record: unknown, not flagged
    assert codes(make_record([pgd, acted])) == []
    assert codes(make_record([pgd, old])) == []


def test_piecewise_constant_layers_are_flagged_critical_unless_bpda_acted_on_them() -> None:
    detection = _detection(("round", "Round", ["piecewise-constant"]), ("gate", "TopK", ["gate"]))
    pgd = make_result("pgd", PGD_FLAGS)
    flags = run_checks(make_record([pgd], detection=detection))
    assert [(f.code, f.severity) for f in flags] == [("gates-without-bpda", "critical"),
                                                     ("piecewise-constant-layers", "critical")]
    flags = flags[1:]
    assert "layer round (Round) has a zero input gradient" in flags[0].message
    assert flags[0].evidence["missed_by_bpda"] == ["round"]
    bpda = make_result("bpda", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True,
                       bpda_layers={"round": "wrapped piecewise-constant", "gate": "wrapped gate"})
    flags = run_checks(make_record([pgd, bpda], detection=detection))
    assert [(f.code, f.severity) for f in flags] == [("piecewise-constant-layers", "warning")]


def test_gates_no_bpda_attack_acted_on_are_flagged() -> None:
    """A kWTA model under a suite without BPDA on its gates (quick, standard): critical; a warning when an attack
    that needs no gradient through the gates ran; nothing once BPDA acted on every gate, or without attacks."""
    detection = _detection(("features.2", "KWTA2d", ["gate"]), ("classifier.2", "KWTA", ["gate"]))
    pgd = make_result("pgd", PGD_FLAGS)
    flags = run_checks(make_record([pgd], detection=detection))
    assert [(f.code, f.severity) for f in flags] == [("gates-without-bpda", "critical")]
    message = flags[0].message
    assert "top-k gate(s) features.2 (KWTA2d), classifier.2 (KWTA) (kWTA: discontinuous gradients) and no BPDA " \
        "attack acted on them, so" in message and "bpda_layers: auto" in message
    assert "only" not in message and flags[0].evidence["missed_by_bpda"] == ["features.2", "classifier.2"]
    square = make_result("square", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="black-box", position=1, cumulative=True)
    flags = run_checks(make_record([pgd, square], detection=detection))
    assert [(f.code, f.severity) for f in flags] == [("gates-without-bpda", "warning")]
    assert "only square attacked without the gates' gradients" in flags[0].message
    assert flags[0].evidence["gradient_free"] == ["square"]
    # a black-box-only suite: no gradient attack's numbers to call upper bounds; the worst case rests on square
    alone = make_result("square", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], kind="black-box")
    (flag,) = run_checks(make_record([alone], detection=detection))
    assert flag.severity == "warning" and "gradient attacks' numbers" not in flag.message and "only" not in flag.message
    assert "no BPDA attack acted on them, so the worst case rests on square alone (no gradient attack ran), and " \
        "attacks without the gates' gradients fall short of BPDA on kWTA; add bpda" in flag.message
    # eot (kind adaptive) follows the gates' gradients, averaged over draws: before, it made the flag a warning
    # ("only eot attacked without the gates' gradients"), as if it were gradient-free
    eot = make_result("eot", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="adaptive", position=1, cumulative=True)
    flags = run_checks(make_record([pgd, eot], detection=detection))
    assert [(f.code, f.severity) for f in flags] == [("gates-without-bpda", "critical")]
    assert "only" not in flags[0].message and flags[0].evidence["gradient_free"] == []
    one = make_result("bpda", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True,
                      bpda_layers={"features.2": "gate/volume"})
    flags = run_checks(make_record([pgd, one], detection=detection))
    assert [f.code for f in flags] == ["gates-without-bpda"] and flags[0].evidence["missed_by_bpda"] == ["classifier.2"]
    assert "no BPDA attack acted on classifier.2 (KWTA), so" in flags[0].message


def test_whether_an_attack_follows_the_gradient_is_its_registration(request: pytest.FixtureRequest) -> None:
    """The gradient-free checks and BPDA's refusal read ``uses_gradient`` from the registry (before: two lists of
    names, ``eot`` in one and ``gradient-estimation`` in the other, which a plug-in could not join). An adaptive
    plug-in must declare it; a record's attack this installation does not register falls back to its kind."""
    from attacks.base import REGISTRY, create_attack, register_attack
    from attacks.errors import AttackConfigError, RegistryError

    with pytest.raises(RegistryError, match="adaptive attack 'my-eot' must say whether it follows the model's input "
                                            "gradient: register it with uses_gradient=True"):
        register_attack("my-eot", kind="adaptive")
    for name, follows in (("my-eot", True), ("my-estimate", False)):
        register_attack(name, kind="adaptive", uses_gradient=follows)(lambda seed=0: None)
        request.addfinalizer(lambda name=name: REGISTRY.unregister(name))
    assert [REGISTRY.get(n).uses_gradient for n in ("pgd", "bpda", "eot", "gradient-estimation", "square",
                                                    "transfer")] == [True, True, True, False, False, False]
    detection = _detection(("features.2", "KWTA2d", ["gate"]))
    pgd = make_result("pgd", PGD_FLAGS)
    severities = {}
    for name in ("my-eot", "my-estimate", "unregistered-adaptive"):
        other = make_result(name, [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="adaptive", position=1, cumulative=True)
        (flag,) = run_checks(make_record([pgd, other], detection=detection))
        severities[name] = (flag.severity, flag.evidence["gradient_free"])
    assert severities == {"my-eot": ("critical", []), "my-estimate": ("warning", ["my-estimate"]),
                          "unregistered-adaptive": ("warning", ["unregistered-adaptive"])}
    with pytest.raises(AttackConfigError, match="inner: 'my-estimate' estimates gradients from the model's outputs"):
        create_attack("bpda", inner="my-estimate")
    both = make_result("bpda", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True,
                       bpda_layers={"features.2": "gate/volume", "classifier.2": "gate/dense"})
    assert codes(make_record([pgd, both], detection=detection)) == []
    assert codes(make_record([], n=10, detection=detection)) == []  # noise probes only: no attack to judge
    assert codes(make_record([pgd])) == []  # no layer probe (a record of schema 1): nothing known


@pytest.mark.parametrize("with_bpda", [False, True])
def test_an_evaluation_without_bpda_on_a_kwta_model_says_so(tmp_path, with_bpda: bool) -> None:
    """End to end: the layer probe of a PGD-only evaluation finds the gate; BPDA (bpda_layers: auto) acts on it."""
    from kwta_robust.config import EvalConfig
    from kwta_robust.evaluate import evaluate

    model, data = tiny_kwta_data()
    attacks = [{"attack": "pgd", "params": {"steps": 2}}] + ([{"attack": "bpda"}] if with_bpda else [])
    cfg = EvalConfig.from_dict({"dataset": "toy", "batch_size": 24, "seed": 0, "attacks": attacks,
                                "threats": [{"norm": "linf", "epsilons": [0.1]}],
                                "diagnostics": {"gradient_batch": 8, "budget_check": {"enabled": False}}})
    record = evaluate(model, data, cfg, {"name": "tiny"}, progress=False)
    flags = {f.code: f for f in record.diagnostics}
    if with_bpda:
        assert "gates-without-bpda" not in flags
    else:
        assert flags["gates-without-bpda"].severity == "critical"
        assert flags["gates-without-bpda"].evidence["missed_by_bpda"] == ["2"]
        assert "top-k gate(s) 2 (KWTA)" in flags["gates-without-bpda"].message


def test_randomized_layers_make_the_model_non_deterministic() -> None:
    detection = _detection(("noise", "GaussianNoise", ["randomized"]))
    flags = run_checks(make_record([make_result("pgd", PGD_FLAGS)], detection=detection))
    assert [f.code for f in flags] == ["non-deterministic"]
    assert "two calls of layer noise (GaussianNoise) on the same input differ" in flags[0].message
    assert flags[0].evidence["randomized_layers"] == ["noise"]


def test_adaptive_beats_pgd_explains_masking_by_a_detected_gate() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    bpda = make_result("bpda", [0, 0, 0, 0, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True)
    record = make_record([pgd, bpda], detection=_detection(("act", "TopK", ["gate"])))
    record.model["num_kwta_layers"] = 0  # a foreign gate: not our layer, but detected
    assert "gradient masking (the kWTA signature)" in run_checks(record)[0].message
    record.detection = {}
    assert "has no kWTA layer or detected gate" in run_checks(record)[0].message
    record.detection = {"layers": [], "selections": [{"op": "topk", "modules": [""], "calls": 2, "kind": "selection"}]}
    (adaptive,) = [f for f in run_checks(record) if f.code == "adaptive-beats-pgd"]
    assert "top-k selections that no layer BPDA acts on holds" in adaptive.message
    # the user named the module holding the topk (bpda_layers: [auto, block]): BPDA acted on it, no
    # selections-outside-layers flag, and the message must not say that no layer BPDA acts on holds it
    bpda.bpda_layers = {"block": "wrapped module"}
    record.detection = {"layers": [], "selections": [{"op": "topk", "modules": ["", "block"], "calls": 2,
                                                      "kind": "selection"}]}
    flags = {f.code: f for f in run_checks(record)}
    assert "selections-outside-layers" not in flags
    assert "gradient masking (the kWTA signature)" in flags["adaptive-beats-pgd"].message


def test_adaptive_beats_pgd_cascade_signature() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    bpda = make_result("bpda", [0, 0, 0, 0, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True)
    flags = run_checks(make_record([pgd, bpda]))
    assert [f.code for f in flags] == ["adaptive-beats-pgd"]
    flag = flags[0]
    assert flag.severity == "critical"
    # the count of pgd's survivors it broke, and what that is of all samples (the threshold's denominator)
    assert "bpda broke 4 of the 6 samples pgd left robust (40.0% of all 10; pgd 60.0% vs bpda after 20.0%)" \
        in flag.message
    assert flag.evidence["points"][0]["broken_among_survivors"] == 4
    # same numbers without the masking: bpda breaks none of pgd's survivors
    clean = make_result("bpda", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True)
    assert codes(make_record([pgd, clean])) == []


def test_adaptive_flag_names_masking_only_for_kwta_models() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    bpda = make_result("bpda", [0, 0, 0, 0, 1, 1, -1, -1, -1, -1], kind="bpda", position=1, cumulative=True)
    kwta_record = make_record([pgd, bpda])
    relu_record = make_record([pgd, bpda])
    relu_record.model.update(activation="relu", num_kwta_layers=0)
    (kwta_flag,) = run_checks(kwta_record)
    (relu_flag,) = run_checks(relu_record)
    assert "the kWTA signature" in kwta_flag.message
    assert "the kWTA signature" not in relu_flag.message
    assert "no kWTA layer" in relu_flag.message


def test_the_reference_is_every_plain_gradient_attack_per_sample() -> None:
    """Independent mode: BPDA breaking what a weak attack (FAB) left but the stronger PGD broke is no masking
    signature; only samples every iterative white-box attack left robust count, and the flag names them all."""
    pgd = make_result("pgd", [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    fab = make_result("fab", [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], position=1)
    weak_win = make_result("bpda", [1, 1, 0, 0, 0, 0, 0, 0, 1, 0], kind="bpda", position=2)
    assert codes(make_record([pgd, fab, weak_win], mode="independent")) == []
    real_win = make_result("bpda", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0], kind="bpda", position=2)
    flag, = run_checks(make_record([pgd, fab, real_win], mode="independent"), Thresholds(min_count=2))
    assert flag.code == "adaptive-beats-pgd" and flag.evidence["reference"] == "pgd + fab"
    assert flag.message.startswith("bpda beats pgd + fab: at Linf 0.3 bpda broke 2 of the 2 samples pgd + fab left")
    assert flag.evidence["points"][0]["reference_accuracy"] == 0.2


def test_adaptive_in_independent_mode_and_below_threshold() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    ge = make_result("gradient-estimation", [0, 0, 1, 1, 1, 1, 0, 0, 0, 0], kind="adaptive", position=1)
    assert codes(make_record([pgd, ge], mode="independent")) == ["adaptive-beats-pgd"]
    one = make_result("gradient-estimation", [0, 1, 1, 1, 1, 1, 0, 0, 0, 0], kind="adaptive", position=1)
    assert codes(make_record([pgd, one], mode="independent")) == []  # 1 sample < min_count
    strict = Thresholds(min_count=1)
    assert [f.code for f in run_checks(make_record([pgd, one]), strict)] == ["adaptive-beats-pgd"]


def test_adaptive_listed_before_pgd_gives_no_evidence() -> None:
    bpda = make_result("bpda", [0, 0, 0, 0, 1, 1, 0, 0, 0, 0], kind="bpda")
    pgd = make_result("pgd", [-1, -1, -1, -1, 1, 1, -1, -1, -1, -1], position=1, cumulative=True)
    assert broken_among_survivors(pgd, bpda) == 0
    assert codes(make_record([bpda, pgd])) == []


def test_single_step_beats_iterative() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    fgsm = make_result("fgsm", [0, 0, 1, 1, 1, 1, -1, -1, -1, -1], single_step=True, position=1, cumulative=True)
    flags = run_checks(make_record([pgd, fgsm]))
    assert [f.code for f in flags] == ["single-step-beats-iterative"]
    assert "fgsm broke 2 of the 6 samples pgd left robust (20.0% of all 10;" in flags[0].message
    ok = make_result("fgsm", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], single_step=True, position=1, cumulative=True)
    assert codes(make_record([pgd, ok])) == []


@pytest.mark.parametrize("kind, label", [("black-box", "square"), ("transfer", "transfer(relu)")])
def test_black_box_or_transfer_beats_white_box(kind: str, label: str) -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    other = make_result(label, [0, 0, 0, 1, 1, 1, -1, -1, -1, -1], kind=kind, position=1, cumulative=True,
                        attack="transfer" if kind == "transfer" else label)
    flags = run_checks(make_record([pgd, other]))
    assert [f.code for f in flags] == ["black-box-beats-white-box"]
    assert f"{label} broke 3 of the 6 samples pgd left robust (30.0% of all 10;" in flags[0].message
    quiet = make_result(label, [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], kind=kind, position=1, cumulative=True)
    assert codes(make_record([pgd, quiet])) == []


def test_budget_ladder() -> None:
    small = make_result("pgd(steps=10)", PGD_FLAGS, attack="pgd", params={"steps": 10, "loss": "ce"})
    large = make_result("pgd(steps=100)", [0, 0, 0, 1, 1, 1, -1, -1, -1, -1], attack="pgd", position=1,
                        cumulative=True, params={"steps": 100, "loss": "ce"})
    flags = run_checks(make_record([small, large]))
    assert [f.code for f in flags] == ["budget-still-lowering"]
    assert "pgd(steps=100) broke 3 of the 6 samples pgd(steps=10) left robust" in flags[0].message and \
        "60.0% → 30.0%" in flags[0].message
    converged = make_result("pgd(steps=100)", [1, 1, 1, 1, 1, 1, -1, -1, -1, -1], attack="pgd", position=1,
                            cumulative=True, params={"steps": 100, "loss": "ce"})
    assert codes(make_record([small, converged])) == []
    other_loss = make_result("pgd(margin)", [0, 0, 0, 1, 1, 1, -1, -1, -1, -1], attack="pgd", position=1,
                             cumulative=True, params={"steps": 100, "loss": "margin"})
    assert codes(make_record([small, other_loss])) == []  # not the same attack at a larger budget


def test_budget_ladder_compares_bpda_inner_and_stage_steps() -> None:
    def bpda(label: str, flags: list[int], position: int, **budget) -> object:
        params = {"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.05, 0.03], **budget}
        return make_result(label, flags, attack="bpda", kind="bpda", position=position, cumulative=position > 0,
                           params=params)

    broken_more = [0, 0, 0, 1, 1, 1, -1, -1, -1, -1]
    short = bpda("bpda-short", PGD_FLAGS, 0, stage_steps=[100, 500])
    flags = run_checks(make_record([short, bpda("bpda-long", broken_more, 1, stage_steps=[300, 1500])]))
    assert [f.code for f in flags] == ["budget-still-lowering"] and \
        "bpda-long broke 3 of the 6 samples bpda-short left robust" in flags[0].message
    inner = [bpda("bpda-40", PGD_FLAGS, 0, inner_params={"steps": 40}),
             bpda("bpda-400", broken_more, 1, inner_params={"steps": 400})]
    assert codes(make_record(inner)) == ["budget-still-lowering"]
    mixed = bpda("bpda-mixed", broken_more, 1, stage_steps=[300, 400])  # the first stage longer, the second shorter
    assert codes(make_record([bpda("bpda-a", PGD_FLAGS, 0, stage_steps=[100, 500]), mixed])) == []
    other = make_result("bpda-t", broken_more, attack="bpda", kind="bpda", position=1, cumulative=True,
                        params={"surrogate": "smooth", "inner": "apgd-ce", "temperature_schedule": [0.1, 0.03],
                                "stage_steps": [300, 1500]})
    assert codes(make_record([short, other])) == []  # other temperatures: not a ladder


def test_eps_not_monotonic() -> None:
    low = make_result("pgd", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], eps=0.1)
    high = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], eps=0.3)
    flags = run_checks(make_record([low, high]))
    assert {f.code for f in flags} == {"eps-not-monotonic"}
    assert any("30.0% at 0.1 → 60.0% at 0.3" in f.message for f in flags)
    falling = make_result("pgd", [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], eps=0.3)
    assert codes(make_record([low, falling])) == []


def test_large_eps_not_zero() -> None:
    pgd = make_result("pgd", PGD_FLAGS)
    stuck = make_result("sanity-pgd", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], eps=1.0)
    flags = run_checks(make_record([pgd], sanity=[stuck]))
    assert [f.code for f in flags] == ["large-eps-not-zero"]
    assert "leaves 30.0% robust" in flags[0].message
    zero = make_result("sanity-pgd", [0] * 10, eps=1.0)
    assert codes(make_record([pgd], sanity=[zero])) == []


def test_violations_are_reported_as_info() -> None:
    flags = run_checks(make_record([make_result("pgd", PGD_FLAGS, violations=3)]))
    assert [(f.code, f.severity) for f in flags] == [("out-of-ball-outputs", "info")]
    assert "pgd at Linf 0.3: 3" in flags[0].message


@pytest.mark.parametrize(
    "probes, expected",
    [
        ({"n": 8, "grad_zero_fraction": 0.5}, ["zero-gradients"]),
        ({"n": 8, "grad_nonfinite_fraction": 0.25}, ["nan-gradients"]),
        ({"n": 8, "max_output_diff": 0.5, "max_abs_output": 3.0}, ["non-deterministic"]),
        ({"n": 8, "prediction_changes": 1}, ["non-deterministic"]),
        ({"n": 8, "outputs_look_like_probabilities": True, "max_row_sum_error": 0.0}, ["probabilities-not-logits"]),
        ({"n": 8, "grad_zero_fraction": 0.05, "max_output_diff": 1e-7, "max_abs_output": 3.0}, []),
    ],
)
def test_probe_checks(probes: dict, expected: list[str]) -> None:
    assert codes(make_record([make_result("pgd", PGD_FLAGS)], probes=probes)) == expected


def test_flags_sorted_by_severity() -> None:
    low = make_result("pgd", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], eps=0.1)
    high = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], eps=0.3, violations=1)
    flags = run_checks(make_record([low, high], probes={"n": 4, "grad_zero_fraction": 1.0}))
    assert [f.severity for f in flags] == ["critical", "warning", "warning", "info"]


# --- probes measured on real modules ----------------------------------------------------------------------------
class Linear(nn.Module):
    def __init__(self, out: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 3)
        self.out = out or nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.fc(x.flatten(1)))


class Rounded(Linear):
    def forward(self, x: Tensor) -> Tensor:  # a step function: zero gradient almost everywhere
        return self.fc(torch.round(x.flatten(1) * 4))


class Noisy(Linear):
    def forward(self, x: Tensor) -> Tensor:  # randomized in eval mode
        return self.fc(x.flatten(1) + 0.5 * torch.randn_like(x.flatten(1)))


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        return g * float("nan")


class NanGrad(Linear):
    def forward(self, x: Tensor) -> Tensor:
        return self.fc(_NanGrad.apply(x.flatten(1)))


@pytest.fixture()
def batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 3, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)


@pytest.mark.parametrize(
    "model, expected",
    [
        (Linear(), []),
        (Linear(nn.Softmax(dim=1)), ["probabilities-not-logits"]),
        (Linear(nn.LogSoftmax(dim=1)), []),
        (Rounded(), ["zero-gradients"]),
        (Noisy(), ["non-deterministic"]),
        (NanGrad(), ["nan-gradients"]),
    ],
    ids=["logits", "softmax", "log-softmax", "step", "random", "nan"],
)
def test_measure_model(model: nn.Module, expected: list[str], batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    model.train()
    probes = measure_model(model, x, y)
    assert probes["n"] == 8
    assert model.training  # flags restored
    assert all(p.grad is None for p in model.parameters())  # no gradient leaked into the parameters
    assert codes(make_record([make_result("pgd", PGD_FLAGS)], probes=probes)) == expected


def test_an_eot_run_averages_draws_unless_it_took_one() -> None:
    """``eot_samples`` not recorded means the attack's own default (read from its signature, > 1)."""
    from kwta_robust.diagnostics_base import averages_draws

    def run(attack: str, params: dict) -> AttackResult:
        return make_result(attack, [1, 0], kind="adaptive", params=params)

    assert averages_draws(run("eot", {})) and not averages_draws(run("eot", {"eot_samples": 1}))
    assert averages_draws(run("bpda", {"inner": "eot"})) and not averages_draws(run("bpda", {"inner": "pgd"}))
    assert not averages_draws(run("bpda", {"inner": "eot", "inner_params": {"eot_samples": 1}}))
