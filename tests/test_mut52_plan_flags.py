"""Mutation review 52 of kwta_robust.plan_flags: the placeholder results a dry run hands the run's layer checks
(one per planned unit, the sanity attack left out, every field the checks read copied from the plan) and the checks
it runs over them. No model and no attack runs: the plan and the config are stand-ins with the fields read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from eval_helpers import make_record
from kwta_robust import plan_flags
from kwta_robust.plan_flags import LAYER_CHECKS, layer_flags, planned_results


def unit(label: str, attack: str, points: tuple, **extra: object) -> SimpleNamespace:
    fields = {"kind": "white-box", "params": {"steps": 1}, "source": None, "bpda_layers": None, "settings": None}
    return SimpleNamespace(label=label, attack=attack, points=points, **{**fields, **extra})


def config(mode: str = "cascade", enabled: bool = True) -> SimpleNamespace:
    threats = [SimpleNamespace(norm="linf", epsilons=[0.1, 0.2], eps_text=["0.1", "2/10"]),
               SimpleNamespace(norm="l2", epsilons=[0.5], eps_text=["0.5"])]
    diagnostics = SimpleNamespace(sanity=SimpleNamespace(label="sanity-pgd"), enabled=enabled, thresholds="THR")
    return SimpleNamespace(threats=threats, mode=mode, seed=7, diagnostics=diagnostics)


ALL = (("linf", "0.1"), ("linf", "2/10"), ("l2", "0.5"))
UNITS = [unit("sanity-pgd", "pgd", ALL),
         unit("fgsm", "fgsm", (("linf", "2/10"),), params={"eps_step": 1.0}, settings={"steps": 1}),
         unit("bpda", "bpda", ALL, kind="adaptive", bpda_layers={"norm": "wrapped module"}),
         unit("tr", "pgd", (("l2", "0.5"),), kind="transfer", source="relu-twin")]


def test_one_placeholder_per_planned_unit_threat_point_by_threat_point_without_the_sanity_attack() -> None:
    results = planned_results(UNITS, config())
    assert [(r.label, r.norm, r.eps, r.eps_text, r.position) for r in results] == [
        ("bpda", "linf", 0.1, "0.1", 1), ("fgsm", "linf", 0.2, "2/10", 0), ("bpda", "linf", 0.2, "2/10", 1),
        ("bpda", "l2", 0.5, "0.5", 1), ("tr", "l2", 0.5, "0.5", 2)]
    fgsm, bpda, transfer = results[1], results[2], results[4]
    assert (fgsm.attack, fgsm.kind, fgsm.single_step, fgsm.params, fgsm.settings) == (
        "fgsm", "white-box", True, {"eps_step": 1.0}, {"steps": 1})
    assert fgsm.params is not UNITS[1].params  # a copy: the plan is not changed through the record
    assert (bpda.attack, bpda.kind, bpda.single_step, bpda.bpda_layers, bpda.source) == (
        "bpda", "adaptive", False, {"norm": "wrapped module"}, None)
    assert bpda.bpda_layers is not UNITS[2].bpda_layers
    assert (transfer.source, transfer.kind, transfer.bpda_layers) == ("relu-twin", "transfer", None)
    assert all(r.seed == 7 and r.cumulative and r.n_attacked == 0 and r.flags == [] for r in results)
    assert not any(r.cumulative for r in planned_results(UNITS, config(mode="independent")))


def test_without_a_sanity_attack_every_unit_is_planned() -> None:
    cfg = config()
    cfg.diagnostics.sanity = None
    assert [r.label for r in planned_results(UNITS, cfg) if r.eps == 0.1] == ["sanity-pgd", "bpda"]


def test_the_layer_checks_run_over_the_record_with_the_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LAYER_CHECKS == ("gates-without-bpda", "selections-outside-layers", "piecewise-constant-layers",
                            "bpda-straight-through")
    seen = []
    monkeypatch.setattr(plan_flags, "run_checks", lambda rec, thr, codes: seen.append((rec, thr, codes)) or ["F"])
    record = make_record([])
    assert layer_flags(record, UNITS, config()) == ["F"]
    (checked, thresholds, codes), = seen
    assert thresholds == "THR" and codes == LAYER_CHECKS and record.results == []
    assert [(r.label, r.eps) for r in checked.results] == [(r.label, r.eps) for r in planned_results(UNITS, config())]


def test_no_flag_with_the_diagnostics_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_flags, "run_checks", lambda *a: pytest.fail("checks ran with the diagnostics off"))
    assert layer_flags(make_record([]), UNITS, config(enabled=False)) == []
