"""Randomized models (noise injection, stochastic activations): seeded draws and plurality verdicts.

Before: the runner's clean pass and re-classifications drew from torch's global RNG as it happened to be, so the
same config gave other numbers on every run, a resumed finished record was refused ("clean predictions that
differ"), and every verdict was one draw (a cascade keeps every lucky draw). Now the global RNG is forked and seeded
per batch from the unit's seed and the samples' ids, a probe finds the randomness, and each verdict is the plurality
of ``verdict_draws`` draws with the per-sample error rates stored (:mod:`attacks.verdicts`,
:mod:`kwta_robust.randomness`)."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.cascade import run_verified
from attacks.errors import AttackConfigError
from attacks.verdicts import classify, classify_batches, global_rng
from eval_helpers import make_record, make_result
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.errors import KwtaRobustError
from kwta_robust.evaluate import evaluate
from kwta_robust.randomness import AUTO_DRAWS, expected_robust_accuracy, probe_randomness
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record


class Linear3(nn.Module):
    """A fixed linear classifier on ``[N, 1, 3, 4]`` inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 3)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            self.fc.weight.copy_(torch.randn(3, 12, generator=gen))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class NoisyInput(Linear3):
    """Gaussian noise on the input in every forward pass, from torch's global RNG (a random-noise defence)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x + 0.6 * torch.randn_like(x)).flatten(1))


class OwnGeneratorNoise(Linear3):
    """The same noise from a generator of its own, which nothing outside the model can seed."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x + 0.6 * torch.randn(x.shape, generator=self.gen)).flatten(1))


class NumpyNoise(Linear3):
    """The same noise drawn from NumPy's global RNG, as many randomized defences written for NumPy do."""

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.from_numpy(np.random.standard_normal(tuple(x.shape))).to(x.dtype)
        return self.fc((x + 0.6 * noise).flatten(1))


class PythonRandomShift(Linear3):
    """A random shift of the whole input drawn from Python's ``random`` (a random-transform defence)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x + random.uniform(-1.0, 1.0)).flatten(1))


class Scripted(nn.Module):
    """Returns the next of a list of prepared logits on each call (draws of a randomized model)."""

    def __init__(self, logits: list[Tensor]) -> None:
        super().__init__()
        self.logits, self.calls = logits, 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.logits[self.calls % len(self.logits)]
        self.calls += 1
        return out


def one_hot_logits(classes: list[int], num_classes: int = 3) -> Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float()


def toy_data(n: int = 24) -> TensorData:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(n, 1, 3, 4, generator=gen)
    with torch.no_grad():
        y = Linear3()(x).argmax(dim=1)
    return TensorData(x, y, "toy", 3, torch.arange(n, dtype=torch.long))


def toy_config(**extra) -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 5}}, {"attack": "fgsm"}],
        "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}, **extra,
    })


# --- the verdict -------------------------------------------------------------------------------------------------
def test_one_draw_is_the_argmax_and_the_logit_margin() -> None:
    logits = torch.tensor([[2.0, 0.5, 0.1], [0.0, 3.0, 1.0]])
    verdict = classify(Scripted([logits]), torch.zeros(2, 1), torch.tensor([0, 0]))
    assert verdict.pred.tolist() == [0, 1]
    assert verdict.margin.tolist() == pytest.approx([-1.5, 3.0])
    assert verdict.error_rate.tolist() == [0.0, 1.0] and verdict.margin.dtype == torch.float64


def test_the_plurality_of_draws_counts_ties_against_the_true_class() -> None:
    # sample 0 (y=0): votes 0,0,1,2 -> plurality 0, margin 1/4 - 2/4; sample 1 (y=1): votes 1,0,1,0 -> a tie with
    # the true class counts as broken (pred 0), margin 0; sample 2 (y=2): votes 1,1,1,2 -> broken, error rate 3/4
    draws = [one_hot_logits(c) for c in ([0, 1, 1], [0, 0, 1], [1, 1, 1], [2, 0, 2])]
    verdict = classify(Scripted(draws), torch.zeros(3, 1), torch.tensor([0, 1, 2]), draws=4)
    assert verdict.pred.tolist() == [0, 0, 1]
    assert verdict.margin.tolist() == pytest.approx([-0.25, 0.0, 0.5])
    assert verdict.error_rate.tolist() == pytest.approx([0.5, 0.5, 0.75])
    with pytest.raises(AttackConfigError, match="draws: must be an integer >= 1"):
        classify(Scripted(draws), torch.zeros(3, 1), torch.tensor([0, 1, 2]), draws=0)


def test_seeded_batches_draw_the_same_noise_whatever_ran_before_and_restore_the_caller_rng() -> None:
    data, model = toy_data(), NoisyInput()
    seed_for = lambda ids: 1000 + int(ids[0])  # noqa: E731 - a per-batch seed from the ids
    first = classify_batches(model, data.x, data.y, draws=5, batch_size=8, ids=data.indices, rng_seed_for=seed_for)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = classify_batches(model, data.x, data.y, draws=5, batch_size=8, ids=data.indices, rng_seed_for=seed_for)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    assert torch.equal(first.pred, second.pred) and torch.equal(first.error_rate, second.error_rate)
    unseeded = [classify(model, data.x, data.y, draws=5).error_rate for _ in range(2)]
    assert not torch.equal(*unseeded)  # the model really is random: without the seeds the draws differ


def test_the_seeded_scope_queues_no_cuda_seed_when_cuda_is_not_initialised() -> None:
    """torch.manual_seed also queues a seed for CUDA's generators until CUDA starts; a scope that called it left its
    own seed queued, replacing the caller's, for a process that starts CUDA later."""
    def queued() -> list[str]:  # where each queued CUDA seed call was made (empty once CUDA has started)
        return [str(call[1]) for call in torch.cuda._lazy_seed_tracker.get_calls() if call is not None]

    torch.manual_seed(123)
    before = queued()
    with global_rng(777):
        torch.rand(1)
    assert queued() == before


def test_run_verified_seeds_the_attack_and_the_reclassification_per_batch() -> None:
    data, model = toy_data(), NoisyInput().requires_grad_(False)
    threat = ThreatModel("linf", 0.1)

    def run() -> object:
        torch.manual_seed(int(torch.randint(0, 10_000, (1,))))  # whatever state the caller left
        return run_verified(model, create_attack("pgd", steps=3, seed=1), data.x, data.y, threat, batch_size=8,
                            ids=data.indices, draws=3, rng_seed_for=lambda ids: int(ids.sum()))

    a, b = run(), run()
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.pred, b.pred)
    assert torch.equal(a.error_rate, b.error_rate) and a.draws == 3
    assert all(r is not None and 0.0 <= r <= 1.0 for r in a.error_rates())


# --- the probe -----------------------------------------------------------------------------------------------------
def test_the_probe_finds_randomness_and_whether_it_can_be_seeded() -> None:
    x = toy_data().x
    assert probe_randomness(Linear3(), x, 0).to_dict() == {"randomized": False, "seedable": True,
                                                           "max_output_diff": 0.0, "draws": 1}
    noisy = probe_randomness(NoisyInput(), x, 0)
    assert noisy.randomized and noisy.seedable and noisy.draws == AUTO_DRAWS
    own = probe_randomness(OwnGeneratorNoise(), x, 0)
    assert own.randomized and not own.seedable
    for model in (NumpyNoise(), PythonRandomShift()):  # NumPy's and Python's global RNGs are seeded as torch's
        found = probe_randomness(model, x, 0)
        assert found.randomized and found.seedable, type(model).__name__
    assert probe_randomness(NoisyInput(), x, 0, setting=4).draws == 4
    assert probe_randomness(Linear3(), x, 0, setting=3).draws == 1  # a deterministic model's draws would all agree


def test_the_seeded_scope_restores_numpy_and_python_generators() -> None:
    np.random.seed(7)
    random.seed(7)
    numpy_next, python_next = np.random.random(), random.random()
    np.random.seed(7)
    random.seed(7)
    with global_rng(123):
        drawn = (np.random.random(), random.random())
    with global_rng(123):
        assert (np.random.random(), random.random()) == drawn  # seeded inside
    assert (np.random.random(), random.random()) == (numpy_next, python_next)  # the caller's streams go on


# --- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [NoisyInput, NumpyNoise, PythonRandomShift])
def test_a_randomized_model_gives_the_same_record_twice_and_resumes(build, tmp_path, caplog) -> None:
    """Before: two runs of one config differed, and the finished record was refused on resume (a model drawing
    from NumPy's or Python's global RNG: until those were seeded too)."""
    data, cfg = toy_data(), toy_config()
    caplog.set_level(logging.INFO, logger="kwta_robust.randomness")
    first = evaluate(build(), data, cfg, {}, progress=False, out_path=tmp_path / "a.json")
    torch.manual_seed(99)  # another global state between the runs
    np.random.seed(99)
    random.seed(99)
    second = evaluate(build(), data, cfg, {}, progress=False, out_path=tmp_path / "b.json")
    randomness = first.provenance["randomness"]
    assert randomness["randomized"] and randomness["seedable"] and randomness["draws"] == AUTO_DRAWS
    assert f"plurality of {AUTO_DRAWS} draws" in caplog.text
    assert first.clean_flags == second.clean_flags and first.clean_error_rates == second.clean_error_rates
    assert [(r.label, r.flags, r.error_rates) for r in first.results] == \
        [(r.label, r.flags, r.error_rates) for r in second.results]
    assert first.probes == second.probes and first.probes["max_output_diff"] > 0  # the model probes are seeded too
    assert [f.to_dict() for f in first.diagnostics] == [f.to_dict() for f in second.diagnostics]
    assert len(first.clean_error_rates) == 24 and any(0.0 < e < 1.0 for e in first.clean_error_rates)
    pgd = first.result("pgd", "linf", 0.1)
    assert [e is None for e in pgd.error_rates] == [f == -1 for f in pgd.flags]
    check_record(load_record(tmp_path / "a.json"))
    again = evaluate(build(), data, cfg, {}, progress=False, out_path=tmp_path / "a.json", resume=True)
    assert again.status == "complete" and again.clean_flags == first.clean_flags


def test_a_deterministic_model_takes_one_draw_and_stores_no_error_rates(tmp_path) -> None:
    record = evaluate(Linear3(), toy_data(), toy_config(), {}, progress=False)
    assert record.provenance["randomness"] == {"randomized": False, "seedable": True, "max_output_diff": 0.0,
                                               "draws": 1}
    assert record.clean_error_rates == [] and all(r.error_rates == [] for r in record.results)
    assert "verdict_draws" not in record.config  # auto: the config (and its hash) as before


def test_a_record_written_with_one_draw_per_verdict_is_not_resumed_with_more(tmp_path) -> None:
    """A record of this randomized model written before the probe (one draw per verdict, no
    ``provenance.randomness``) cannot be continued with plurality verdicts: the units would mix both."""
    data, path = toy_data(), tmp_path / "r.json"
    evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path)
    old = json.loads(path.read_text())
    del old["provenance"]["randomness"]
    path.write_text(json.dumps(old))
    with pytest.raises(KwtaRobustError, match=r"took 1 draw per verdict and this run takes 11"):
        evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path, resume=True)


def test_one_draw_on_a_randomized_model_and_an_unseedable_one_are_warned(caplog) -> None:
    data = toy_data()
    caplog.set_level(logging.WARNING, logger="kwta_robust.randomness")
    record = evaluate(NoisyInput(), data, toy_config(verdict_draws=1), {}, progress=False)
    assert record.provenance["randomness"]["draws"] == 1 and record.clean_error_rates == []
    assert "verdict_draws is 1: every clean and adversarial verdict is one draw" in caplog.text
    caplog.clear()
    own = evaluate(OwnGeneratorNoise(), data, toy_config(), {}, progress=False)
    assert own.provenance["randomness"]["seedable"] is False
    assert "which the harness cannot seed" in caplog.text


# --- records -------------------------------------------------------------------------------------------------------
def test_error_rates_are_checked_against_the_flags() -> None:
    result = make_result("pgd", [1, 0, -1, 1], eps=0.1)
    result.error_rates = [0.2, 0.9, None, 0.4]
    record = make_record([result], clean_flags=[1, 1, 0, 1])
    record.clean_error_rates = [0.0, 0.1, 0.7, 0.2]
    check_record(record)
    result.error_rates = [0.2, 0.9, 0.5, 0.4]
    with pytest.raises(RecordError, match=r"error_rates: entry 2 is 0.5 but the sample was not attacked"):
        check_record(record)
    result.error_rates = [0.2, 1.5, None, 0.4]
    with pytest.raises(RecordError, match=r"entry 1 is not a fraction in \[0, 1\]"):
        check_record(record)


def test_expected_robust_accuracy_takes_each_samples_worst_input() -> None:
    clean = [0.0, 0.2, 0.6, 0.1]
    units = [[0.4, None, None, 0.1], [None, 0.9, None, 0.3]]
    # per sample the worst of clean and every unit: 0.4, 0.9, 0.6, 0.3 -> correct 0.6, 0.1, 0.4, 0.7
    mean, se = expected_robust_accuracy(clean, units)
    assert mean == pytest.approx(0.45)
    assert se == pytest.approx(torch.tensor([0.6, 0.1, 0.4, 0.7]).std().item() / 2, rel=1e-6)
    assert expected_robust_accuracy([], []) is None and expected_robust_accuracy(clean, [[0.1]]) is None


# --- what the tables and flags say ---------------------------------------------------------------------------------
def test_the_notes_give_the_expected_accuracy_beside_the_plurality(tmp_path) -> None:
    from kwta_robust.html_report import build_report
    from kwta_robust.narrow import detail_tables
    from kwta_robust.report import detail_table, evidence_notes

    record = evaluate(NoisyInput(), toy_data(), toy_config(), {}, progress=False)
    [note] = [n for n in evidence_notes([record]) if "randomized model" in n]
    rates = record.clean_error_rates
    clean = 100 * (1 - sum(rates) / len(rates))
    assert f"every verdict is the plurality of {AUTO_DRAWS} draws" in note
    assert f"clean {clean:.1f} (" in note and "95% normal intervals" in note
    worst = record.worst("linf", 0.1)
    assert f"(plurality {100 * worst.robust.accuracy:.1f}%)" in note
    assert any("randomized model" in n for n in detail_table(record).notes)
    # the expected accuracy is a column of the long table and of the narrow per-threat tables (numbers, not text)
    long = detail_table(record)
    worst_row = next(r for r in long.rows if r[2].value == "worst case")
    assert long.headers[-1] == "expected" and worst_row[-1].value == pytest.approx(
        expected_robust_accuracy(rates, [r.error_rates for r in record.results])[0])
    assert all(t.headers[-1] == "expected" for t in detail_tables(record))
    assert all("expected" not in t.headers for t in detail_tables(evaluate(Linear3(), toy_data(), toy_config(), {},
                                                                           progress=False)))
    flag = next(f for f in record.diagnostics if f.code == "non-deterministic")
    assert flag.severity == "critical" and f"the plurality of {AUTO_DRAWS} draws" in flag.message
    assert flag.evidence["verdict_draws"] == AUTO_DRAWS and flag.evidence["seedable"] is True
    one = evaluate(NoisyInput(), toy_data(), toy_config(verdict_draws=1), {}, progress=False)
    assert any("every verdict is one draw (verdict_draws: 1)" in n for n in evidence_notes([one]))
    assert "set verdict_draws: auto" in next(f for f in one.diagnostics if f.code == "non-deterministic").message
    plain = evaluate(Linear3(), toy_data(), toy_config(), {}, progress=False)
    assert not any("randomized" in n for n in evidence_notes([plain]))
    page = build_report([record, plain])
    assert f"the plurality of {AUTO_DRAWS} draws" in page and "Clean error rates" not in page  # a note, not a dump


def test_masking_flags_name_randomness_on_a_randomized_model() -> None:
    """large-eps-not-zero and adaptive-beats-pgd blamed a discontinuous gradient; on a randomized model the
    gradients of single draws are the likelier cause, and the fix is an attack on the expectation."""
    from kwta_robust.diagnostics import run_checks

    pgd = make_result("pgd", [1] * 8 + [0] * 2, eps=0.1)
    ge = make_result("ge", [-1] * 8 + [0] * 2, kind="adaptive", eps=0.1, position=1, cumulative=True)
    ge.flags = [0] * 6 + [1] * 2 + [-1] * 2
    ge.robust, ge.n_attacked, ge.n_broken = make_result("x", ge.flags).robust, 8, 6
    sanity = make_result("sanity-pgd", [1] * 5 + [0] * 5, eps=1.0)
    for randomized in (False, True):
        record = make_record([pgd, ge], sanity=[sanity])
        record.model = {"label": "m", "activation": "none"}
        if randomized:
            record.provenance["randomness"] = {"randomized": True, "seedable": True, "max_output_diff": 0.4,
                                               "draws": 11}
        flags = {f.code: f.message for f in run_checks(record, toy_config().diagnostics.thresholds)}
        assert ("the model is randomized: gradient attacks followed the gradients of single draws" in
                flags["large-eps-not-zero"]) is randomized
        assert ("gradients do not lead out of the class" in flags["large-eps-not-zero"]) is not randomized
        assert ("attack its expectation (attack: eot)" in flags["adaptive-beats-pgd"]) is randomized
        assert ("non-deterministic" in flags) is randomized


def test_masking_flags_do_not_ask_for_eot_where_it_ran() -> None:
    """An attack that averaged over the draws (``eot``, ``bpda`` with ``inner: eot``) beating PGD, or leaving a
    sanity point above zero, was told to "attack its expectation (attack: eot)" — the attack it was."""
    from kwta_robust.diagnostics import run_checks

    pgd = make_result("pgd", [1] * 8 + [0] * 2, eps=0.1)
    record = make_record([pgd], sanity=[make_result("sanity-bpda", [1] * 5 + [0] * 5, attack="bpda", kind="bpda",
                                                    eps=1.0, params={"inner": "eot", "surrogate": "smooth"})])
    for position, (label, attack, kind, inner) in enumerate([("eot", "eot", "adaptive", None),
                                                             ("bpda-eot", "bpda", "bpda", "eot"),
                                                             ("bpda-pgd", "bpda", "bpda", "pgd")], start=1):
        other = make_result(label, [0] * 6 + [1] * 2 + [-1] * 2, attack=attack, kind=kind, eps=0.1,
                            position=position, params={"inner": inner} if inner else {})
        record.results.append(other)
    record.provenance["randomness"] = {"randomized": True, "seedable": True, "max_output_diff": 0.4, "draws": 11}
    flags = run_checks(record, toy_config().diagnostics.thresholds)
    beats = {f.evidence["attack"]: f.message for f in flags if f.code == "adaptive-beats-pgd"}
    assert sorted(beats) == ["bpda-eot", "bpda-pgd", "eot"]
    for label, message in beats.items():
        averaged = label != "bpda-pgd"
        assert ("attack its expectation (attack: eot)" in message) is not averaged, label
        assert ("this attack averaged its gradients over the draws (EOT)" in message) is averaged, label
        assert "gradient masking (the kWTA signature)" in message
    large = next(f for f in flags if f.code == "large-eps-not-zero").message
    assert "gradients do not lead out of the class" in large and "attack: eot" not in large
    assert next(f for f in flags if f.code == "non-deterministic").severity == "warning"


def noisy_input_factory() -> nn.Module:
    """``--model-factory test_randomized_models:noisy_input_factory``: the noisy toy model, its weights fixed."""
    return NoisyInput()


def test_sharded_runs_of_a_randomized_model_equal_the_unsharded_one(tmp_path) -> None:
    """Each batch's draws are seeded from its samples' ids, so shards (whole batches) draw what one process draws."""
    from kwta_robust.cli import main

    data = toy_data()
    torch.save({"x": data.x, "y": data.y}, tmp_path / "toy.pt")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**toy_config().to_dict(), "dataset": {"file": str(tmp_path / "toy.pt")}}))
    base = ["evaluate", "--model-factory", "test_randomized_models:noisy_input_factory", "--config", str(config),
            "--no-progress", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "one.json")]) == 0
    assert main([*base, "--out", str(tmp_path / "two.json"), "--shards", "2", "--executor", "inline"]) == 0
    one, two = load_record(tmp_path / "one.json"), load_record(tmp_path / "two.json")
    assert two.provenance["shards"]["count"] == 2 and one.provenance["randomness"]["draws"] == AUTO_DRAWS
    assert one.clean_flags == two.clean_flags and one.clean_error_rates == two.clean_error_rates
    assert [(r.label, r.flags, r.error_rates, r.margins) for r in one.results] == \
        [(r.label, r.flags, r.error_rates, r.margins) for r in two.results]
