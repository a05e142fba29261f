"""Pins of the evaluation runner's docstrings (kwta_robust/evaluate.py, kwta_robust/attack_plan.py,
attacks/cascade.py): eval mode in every forward, the order of the steps, the samples each mode attacks, the sanity
unit, and an attack that writes to its own input."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import kwta_robust.evaluate as runner
from attacks.base import ThreatModel
from attacks.cascade import run_verified
from kwta_robust.config import derive_seed
from kwta_robust.evaluate import evaluate
from test_cascade import PairModel, make_data
from test_bpda_stages import TrainingSpy  # an identity noting the training flag of every forward
from test_evaluate import Stateful, config, linear_problem, three_class_data

SANITY = {"norm": "linf", "eps": 1, "attack": "pgd", "params": {"steps": 2}}


def test_every_forward_of_an_evaluation_runs_in_eval_mode_and_the_flags_come_back() -> None:
    """evaluate.py: the runner owns eval mode, for the clean pass, probes, attacks, sanity attack and noise."""
    model, spy = Stateful(), TrainingSpy()
    model.bn = nn.Sequential(model.bn, spy)
    model.train()
    model.fc2.eval()  # mixed flags must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=[{"attack": "pgd", "params": {"steps": 2}}],
                 noise=[{"kind": "gaussian", "levels": [0.0, 0.1], "draws": 1}],
                 diagnostics={"enabled": True, "gradient_batch": 8, "sanity": SANITY})
    record = evaluate(model, three_class_data(16), cfg, {}, progress=False)
    assert len(spy.seen) > 10 and not any(spy.seen)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert [r.label for r in record.sanity] == ["sanity-pgd"] and record.noise  # those steps ran too


def test_model_probes_run_before_the_attacks_and_the_noise_probes_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate.py: the model probes after the clean pass, before any attack; the noise probes after the attacks."""
    steps: list[str] = []

    def spying(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            steps.append(name)
            return real(*args, **kwargs)
        return call

    for name in ("measure_model", "detect_layers", "worst_case", "run_noise_probe", "run_checks"):
        monkeypatch.setattr(runner, name, spying(name, getattr(runner, name)))
    model, data = linear_problem(24)
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.02, 0.04]}], attacks=["fgsm"],
                 noise=[{"kind": "gaussian", "levels": [0.0, 0.1], "draws": 1}])
    evaluate(model, data, cfg, {}, progress=False)
    assert steps == ["measure_model", "detect_layers", "worst_case", "worst_case", "run_noise_probe", "run_checks"]


def test_cascade_attacks_exactly_the_survivors_and_independent_every_clean_correct_sample() -> None:
    """cascade.py / evaluate.py: which samples each mode hands to each attack, read back from the record."""
    model, data = linear_problem(40)
    attacks = ["fgsm", {"attack": "pgd", "params": {"steps": 3}}]
    threats = [{"norm": "linf", "epsilons": [0.02]}]
    cascade = evaluate(model, data, config(attacks=attacks, threats=threats, mode="cascade"), {}, progress=False)
    clean = cascade.clean_flags
    first, second = (cascade.result(label, "linf", 0.02) for label in ("fgsm", "pgd"))
    assert [f != -1 for f in first.flags] == [bool(ok) for ok in clean]  # the first: every clean-correct sample
    assert first.n_attacked == sum(clean) and 0 < first.n_broken < first.n_attacked  # informative
    assert [f != -1 for f in second.flags] == [f == 1 for f in first.flags]  # fgsm's survivors, no one else
    assert second.n_attacked == first.flags.count(1) and second.cumulative
    assert cascade.worst("linf", 0.02).robust.correct == second.robust.correct == second.flags.count(1)
    independent = evaluate(model, data, config(attacks=attacks, threats=threats, mode="independent"), {},
                           progress=False)
    for result in independent.results:
        assert [f != -1 for f in result.flags] == [bool(ok) for ok in clean] and not result.cumulative
        assert result.n_attacked == sum(clean)


def test_the_sanity_attack_runs_alone_on_every_clean_correct_sample_with_its_derived_seed() -> None:
    """attack_plan.sanity_unit: seed ``derive_seed(seed, label, norm, repr(eps))``; evaluate.sanity: independent."""
    model, data = linear_problem(30)
    cfg = config(seed=5, threats=[{"norm": "linf", "epsilons": [0.03]}], attacks=["fgsm"],
                 diagnostics={"enabled": True, "gradient_batch": 8, "sanity": SANITY})
    record = evaluate(model, data, cfg, {}, progress=False)
    (sanity,) = record.sanity
    assert (sanity.label, sanity.norm, sanity.eps) == ("sanity-pgd", "linf", 1.0)
    assert sanity.seed == derive_seed(5, "sanity-pgd", "linf", "1.0") != record.results[0].seed
    assert not sanity.cumulative and sanity.n_attacked == record.clean.correct < record.dataset["n"]
    assert [f != -1 for f in sanity.flags] == [bool(ok) for ok in record.clean_flags]
    assert sanity.n_broken == record.clean.correct  # Linf 1 reaches any input of a linear model


class WritesItsInput:
    """Adds ``3 eps`` to its input in place and returns that tensor (an attack may not modify ``x``)."""

    name = "writes-its-input"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        x.add_(3 * threat.eps)
        return x


def test_an_attack_writing_to_its_input_is_verified_against_the_clean_batch(caplog: pytest.LogCaptureFixture) -> None:
    """cascade._clean_batch: warned; the output's violation, projection and verdict are taken from the clean x."""
    x, y = make_data(6)
    clean = x.clone()
    threat = ThreatModel("linf", 0.1)
    with caplog.at_level(logging.WARNING, logger="attacks.cascade"):
        out = run_verified(PairModel(), WritesItsInput(), x, y, threat, batch_size=4)
    assert "attack 'writes-its-input' at Linf 0.1 changed its input x in place; its output is verified against the " \
        "clean batch" in caplog.text
    assert torch.equal(x, clean)  # the runner's own inputs are untouched
    assert out.n_violations == 6 and out.max_violation == pytest.approx(0.2, abs=1e-6)  # 3 eps - eps, from clean x
    assert torch.allclose(out.x_adv, (clean + 0.1).clamp(0, 1))  # projected around the clean inputs
    assert float((out.x_adv - clean).abs().max()) <= 0.1 + 1e-6
