"""Randomized models: verdicts independent of batch-mates, common random numbers, and the edges of the verdicts.

Before: a batch's attacked rows were re-classified on their own, so a randomized model drew other noise for a
sample depending on how many of its batch-mates were still attacked (a cascade and an independent run gave one
sample different verdicts on the same input), and every verdict drew afresh from the clean pass: a survivor whose
draws sat near a tie was "broken" by new draws alone, on the evaluation and on the budget check's re-runs. Now the
whole fixed batch is re-classified under the clean pass's seed (:func:`attacks.verdicts.classify_in_batch`).
Also here: non-finite outputs in the randomness probe and in the draws, the masking flags' cause on randomized
models, a stale record of other draws set aside where the policy says so, and error rates tied to the flags."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel
from attacks.cascade import run_verified
from attacks.verdicts import classify, classify_batches
from eval_helpers import make_record, make_result
from kwta_robust import budget_check
from kwta_robust.attack_plan import model_rng_seed
from kwta_robust.errors import KwtaRobustError
from kwta_robust.evaluate import evaluate
from kwta_robust.randomness import probe_randomness
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record
from kwta_robust.resume import StalePolicy
from test_randomized_models import Linear3, NoisyInput, Scripted, one_hot_logits, toy_config, toy_data


def unchanged(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
    """An attack that returns its input: any change of verdict would come from the draws alone."""
    return x.clone()


unchanged.name = "unchanged"  # type: ignore[attr-defined]


# --- one verdict per input -----------------------------------------------------------------------------------------
def test_a_verdict_depends_on_its_input_not_on_which_batch_mates_are_attacked() -> None:
    data, model = toy_data(), NoisyInput()
    threat, seed_for = ThreatModel("linf", 0.1), (lambda ids: 500 + int(ids[0]))

    def rates(active: list[int]) -> Tensor:
        mask = torch.zeros(24, dtype=torch.bool)
        mask[active] = True
        outcome = run_verified(model, unchanged, data.x, data.y, threat, mask, 8, ids=data.indices, draws=11,
                               rng_seed_for=lambda ids: 7, verdict_seed_for=seed_for)
        return outcome.error_rate[[0, 3]]

    alone, paired, everyone = rates([0, 3]), rates([0, 1, 2, 3, 5]), rates(list(range(24)))
    assert torch.equal(alone, paired) and torch.equal(alone, everyone)
    # with the clean pass's seed an unchanged input gets exactly the clean verdict (common random numbers)
    clean = classify_batches(model, data.x, data.y, draws=11, batch_size=8, ids=data.indices, rng_seed_for=seed_for)
    assert torch.equal(everyone, clean.error_rate[[0, 3]]) and 0.0 < float(clean.error_rate.max()) < 1.0


def test_an_evaluation_shares_the_clean_draws_with_every_verdict(tmp_path) -> None:
    """A perturbation far below the noise leaves every draw's vote as it was: the same error rates and nothing
    broken. Before, fresh draws "broke" survivors near a tie."""
    cfg = toy_config(threats=[{"norm": "linf", "epsilons": [1e-7]}], attacks=[{"attack": "fgsm"}])
    record = evaluate(NoisyInput(), toy_data(), cfg, {}, progress=False, out_path=tmp_path / "r.json")
    fgsm = record.result("fgsm", "linf", 1e-7)
    attacked = [i for i, f in enumerate(fgsm.flags) if f != -1]
    assert attacked and all(fgsm.flags[i] == 1 for i in attacked)
    assert [fgsm.error_rates[i] for i in attacked] == [record.clean_error_rates[i] for i in attacked]
    assert any(0.3 < record.clean_error_rates[i] < 0.5 for i in attacked)  # survivors near a tie were there
    check_record(load_record(tmp_path / "r.json"))


def test_the_budget_checks_re_runs_draw_their_verdicts_as_the_clean_pass(monkeypatch) -> None:
    data = toy_data()
    cfg = toy_config(diagnostics={"enabled": True, "gradient_batch": 8,
                                  "budget_check": {"enabled": True, "min_samples": 4, "samples": 8}})
    jobs = []
    real = budget_check.run_rerun_batch
    monkeypatch.setattr(budget_check, "run_rerun_batch", lambda *a, **k: jobs.append(a[3]) or real(*a, **k))
    record = evaluate(NoisyInput(), data, cfg, {}, progress=False)
    assert jobs and any(f.code.startswith("budget-") for f in record.diagnostics)
    ids = torch.tensor(record.dataset["indices"])  # the evaluated samples, in the order of their batches
    for job in jobs:
        batch = job.positions[0] // cfg.batch_size
        assert job.draws == 11
        assert job.verdict_seed == model_rng_seed(cfg.seed, ids[batch * 8:(batch + 1) * 8])
    jobs.clear()
    evaluate(Linear3(), data, cfg, {}, progress=False)
    assert jobs and all(job.verdict_seed is None and job.draws == 1 for job in jobs)


def test_a_re_run_batch_judges_an_unchanged_survivor_on_the_clean_draws() -> None:
    """A re-run that moves the inputs by far less than the noise breaks nothing when its verdicts draw as the clean
    pass did (``verdict_seed``), however near a tie the survivors' draws are."""
    from kwta_robust.samples import select_samples
    from kwta_robust.rerun_jobs import RerunBatch, run_rerun_batch

    cfg, model = toy_config(), NoisyInput()
    selected = select_samples(toy_data(), cfg)
    record = evaluate(model, toy_data(), cfg, {}, progress=False)
    right = [i for i in range(8) if record.clean_flags[i] == 1]
    assert any(0.3 < record.clean_error_rates[i] < 0.5 for i in right)  # near a tie
    verdict_seed = model_rng_seed(cfg.seed, selected.indices[:8])  # the clean pass's seed of the first batch
    job = RerunBatch("fgsm", "fgsm", {}, 0, "linf", 1e-7, tuple(right), 11, verdict_seed)
    broken, queries = run_rerun_batch(model, selected.x, selected.y, job, cfg.batch_size)
    assert broken == [] and queries is not None and queries > 0
    fresh = run_rerun_batch(model, selected.x, selected.y, dataclasses.replace(job, verdict_seed=None), cfg.batch_size)
    assert fresh[0]  # the same re-run on fresh draws "breaks" survivors near a tie (before the common draws)


# --- non-finite outputs --------------------------------------------------------------------------------------------
class NaNOutputs(Linear3):
    """Logits NaN for the first input (deterministic), or, with ``random``, NaN wherever a draw falls below 0."""

    def __init__(self, random: bool = False) -> None:
        super().__init__()
        self.random = random

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if self.random:
            return torch.where(torch.randn_like(out) < 0, torch.full_like(out, float("nan")), out)
        out[0] = float("nan")
        return out


def test_the_probe_reads_non_finite_outputs() -> None:
    """Before: a NaN made every comparison false: a randomized model passed as deterministic and the record held a
    bare NaN."""
    x = toy_data().x
    steady = probe_randomness(NaNOutputs(), x, 0)
    assert not steady.randomized and steady.max_output_diff == 0.0
    drawn = probe_randomness(NaNOutputs(random=True), x, 0)
    assert drawn.randomized and drawn.seedable and math.isfinite(drawn.max_output_diff)
    json.dumps(drawn.to_dict(), allow_nan=False)


def test_a_draw_with_non_finite_logits_votes_for_no_class() -> None:
    """Before: argmax of a NaN row voted for the class of its first NaN, here the true class 0 of samples 0 and 2."""
    nan = torch.full((1, 3), float("nan"))
    draws = [torch.cat([nan, one_hot_logits([1]), nan]), torch.cat([nan, one_hot_logits([1]), nan]),
             torch.cat([one_hot_logits([0, 2]), nan])]
    verdict = classify(Scripted(draws), torch.zeros(3, 1), torch.tensor([0, 1, 0]), draws=3)
    assert verdict.error_rate.tolist() == pytest.approx([2 / 3, 1 / 3, 1.0])
    # sample 0: one right vote against none (right); sample 2: no vote at all (wrong, a tie at zero)
    assert verdict.pred.tolist()[:2] == [0, 1] and verdict.pred.tolist()[2] != 0
    assert verdict.margin.tolist() == pytest.approx([-1 / 3, -1 / 3, 0.0])


# --- flags, stale records, record checks ---------------------------------------------------------------------------
def test_every_masking_flag_names_randomness_on_a_randomized_model() -> None:
    from kwta_robust.diagnostics import run_checks

    pgd_low = make_result("pgd", [1] * 4 + [0] * 6, eps=0.1)
    pgd_high = make_result("pgd", [1] * 7 + [0] * 3, eps=0.2)  # robust accuracy rises with eps
    fgsm = make_result("fgsm", [1] * 2 + [0] * 8, eps=0.1, position=1)
    fgsm.single_step = True
    for randomized in (False, True):
        record = make_record([pgd_low, fgsm, pgd_high])
        record.model = {"label": "m", "activation": "none"}
        if randomized:
            record.provenance["randomness"] = {"randomized": True, "seedable": True, "max_output_diff": 0.4,
                                               "draws": 11}
        flags = {f.code: f.message for f in run_checks(record, toy_config().diagnostics.thresholds)}
        for code in ("eps-not-monotonic", "single-step-beats-iterative"):
            assert ("the model is randomized: gradient attacks followed" in flags[code]) is randomized, code


def test_a_record_of_other_draws_is_set_aside_where_the_policy_says_so(tmp_path) -> None:
    """Before: the quickstart's and the sweeps' policy (set stale records aside) was bypassed: a one-line error."""
    data, path = toy_data(), tmp_path / "r.json"
    evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path)
    old = json.loads(path.read_text())
    del old["provenance"]["randomness"]  # written before the probe: one draw per verdict
    path.write_text(json.dumps(old))
    policy = StalePolicy(option="--out-dir", restart="--retrain", set_aside=True)
    record = evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path, resume=True, stale=policy)
    assert record.status == "complete" and record.provenance["randomness"]["draws"] == 11
    assert "resumed_at" not in record.provenance and record.provenance["layout"]
    assert [p.name for p in (tmp_path / "superseded").iterdir()] == [f"r.{old['config_hash'][:12]}.json"]
    check_record(load_record(path))


def test_error_rates_agree_with_the_plurality_verdicts() -> None:
    result = make_result("pgd", [1, 0, -1, 1], eps=0.1)
    record = make_record([result], clean_flags=[1, 1, 0, 1])
    record.clean_error_rates = [0.0, 0.1, 0.7, 0.2]
    result.error_rates = [0.2, 0.3, None, 0.4]  # broken with 7 of 10 draws right: no plurality verdict does that
    with pytest.raises(RecordError, match=r"error_rates: entry 1 \(0.3\) contradicts the verdict \(wrong\)"):
        check_record(record)
    result.error_rates = [1.0, 0.5, None, 0.4]  # survived with no draw right
    with pytest.raises(RecordError, match=r"entry 0 \(1\) contradicts the verdict \(right\)"):
        check_record(record)
    result.error_rates = [0.2, 0.5, None, 0.4]
    record.clean_error_rates = [0.0, 0.1, 0.4, 0.2]  # clean wrong with 6 of 10 right
    with pytest.raises(RecordError, match=r"clean_error_rates: entry 2 \(0.4\) contradicts the verdict \(wrong\)"):
        check_record(record)


# --- shards --------------------------------------------------------------------------------------------------------
class NoisyOnBrightInputs(Linear3):
    """Input noise only on inputs whose first pixel exceeds 0.85: one sample of the toy set (its last batch)."""

    def forward(self, x: Tensor) -> Tensor:
        bright = (x.flatten(1)[:, :1] > 0.85).to(x.dtype)
        return self.fc((x + 0.6 * bright[:, :, None, None] * torch.randn_like(x)).flatten(1))


def noisy_on_bright_inputs_factory() -> nn.Module:
    """``--model-factory test_common_draws:noisy_on_bright_inputs_factory``."""
    return NoisyOnBrightInputs()


def test_every_shard_takes_the_drivers_randomness_probe(tmp_path) -> None:
    """Before: each shard probed its own first samples, so shards that hold no noisy input took one draw per verdict
    while the driver took 11, and the merge refused ("the parts took different draws per verdict")."""
    from kwta_robust.cli import main

    data = toy_data()
    torch.save({"x": data.x, "y": data.y}, tmp_path / "toy.pt")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**toy_config().to_dict(), "dataset": {"file": str(tmp_path / "toy.pt")}}))
    base = ["evaluate", "--model-factory", "test_common_draws:noisy_on_bright_inputs_factory", "--config",
            str(config), "--no-progress", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "one.json")]) == 0
    assert main([*base, "--out", str(tmp_path / "two.json"), "--shards", "2", "--executor", "inline"]) == 0
    one, two = load_record(tmp_path / "one.json"), load_record(tmp_path / "two.json")
    assert one.provenance["randomness"]["draws"] == 11 == two.provenance["randomness"]["draws"]
    assert one.clean_error_rates == two.clean_error_rates and sum(0 < r < 1 for r in one.clean_error_rates) <= 1
    assert [(r.label, r.flags, r.error_rates) for r in one.results] == [(r.label, r.flags, r.error_rates)
                                                                         for r in two.results]


def test_the_noise_probes_of_a_randomized_model_take_its_plurality_verdicts() -> None:
    """Before: one draw per noisy input, so the noise curve's level 0 (the clean inputs) was one draw's accuracy,
    not the clean accuracy the tables print; now it is exactly that, and every level is the plurality classifier's."""
    cfg = toy_config(noise=[{"kind": "gaussian", "levels": [0.0, 0.2], "draws": 2}])
    record = evaluate(NoisyInput(), toy_data(48), cfg, {}, progress=False)  # before: 66.7% at level 0, 83.3% clean
    [probe] = record.noise
    assert probe.result["accuracy"][0] == record.clean.accuracy
    assert probe.result["draw_accuracy"][0] == [record.clean.accuracy] * 2
    again = evaluate(NoisyInput(), toy_data(48), cfg, {}, progress=False)
    assert again.noise[0].result == probe.result
    plain = evaluate(Linear3(), toy_data(), cfg, {}, progress=False)  # a deterministic model: one pass, as before
    assert plain.noise[0].result["accuracy"][0] == plain.clean.accuracy


def test_a_record_of_other_clean_predictions_is_set_aside_whole(tmp_path) -> None:
    """A model drawing from a generator of its own gives other clean predictions on the second run: the error says
    why. Set aside, the fresh record keeps this run's clean margins (they were written to the record being set
    aside)."""
    from test_randomized_models import OwnGeneratorNoise

    data, path, model = toy_data(), tmp_path / "r.json", OwnGeneratorNoise()
    cfg = toy_config(verdict_draws=3)
    first = evaluate(model, data, cfg, {}, progress=False, out_path=path)
    # the error names the cause (before: only "differ from this model's", the model's draws unmentioned)
    with pytest.raises(KwtaRobustError, match=r"holds clean predictions that differ from this model's \(the model "
                                              r"draws from a generator the harness cannot seed") as caught:
        evaluate(model, data, cfg, {}, progress=False, out_path=path, resume=True)
    assert "\n" not in str(caught.value)
    policy = StalePolicy(option="--out-dir", restart="--retrain", set_aside=True)
    second = evaluate(model, data, cfg, {}, progress=False, out_path=path, resume=True, stale=policy)
    assert second.clean_flags != first.clean_flags and len(second.clean_margins) == 24
    assert second.provenance["randomness"]["draws"] == 3 and len(second.clean_error_rates) == 24  # kept too
    assert (tmp_path / "superseded").is_dir()
    check_record(load_record(path))


def test_a_sharded_budget_check_draws_its_verdicts_as_the_unsharded_one(tmp_path) -> None:
    """The re-run batches carry the clean pass's verdict seed (RerunBatch.verdict_seed), computed by the driver from
    the samples' ids: the workers' re-runs judge survivors on the draws one process would."""
    from kwta_robust.cli import main

    data = toy_data()
    torch.save({"x": data.x, "y": data.y}, tmp_path / "toy.pt")
    cfg = toy_config(diagnostics={"enabled": True, "gradient_batch": 8,
                                  "budget_check": {"enabled": True, "min_samples": 4, "samples": 8}})
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**cfg.to_dict(), "dataset": {"file": str(tmp_path / "toy.pt")}}))
    base = ["evaluate", "--model-factory", "test_randomized_models:noisy_input_factory", "--config", str(config),
            "--no-progress", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "one.json")]) == 0
    assert main([*base, "--out", str(tmp_path / "two.json"), "--shards", "2", "--executor", "inline"]) == 0
    flags = [[(f.code, f.message, f.evidence) for f in load_record(tmp_path / name).diagnostics
              if f.code.startswith("budget")] for name in ("one.json", "two.json")]
    assert flags[0] and flags[0] == flags[1]


def test_the_budget_check_ranks_tied_vote_margins_by_error_rate() -> None:
    """Vote-share margins of 11 draws move in steps of 1/11, so many survivors tie; the larger error rate an attack
    reached goes first (before: the lower index)."""
    pgd = make_result("pgd", [1] * 6, eps=0.1)
    pgd.margins = [-3 / 11, -1 / 11, -1 / 11, -1 / 11, -5 / 11, -1 / 11]
    pgd.error_rates = [3 / 11, 4 / 11, 5 / 11, 2 / 11, 1 / 11, 4 / 11]
    record = make_record([pgd], clean_flags=[1] * 6)
    assert budget_check.by_closeness(record, list(range(6)), "linf", 0.1) == [2, 1, 5, 3, 0, 4]
    pgd.error_rates = []  # a deterministic model's record: ties to the lower index, as before
    assert budget_check.by_closeness(record, list(range(6)), "linf", 0.1) == [1, 2, 3, 5, 0, 4]


def test_a_record_whose_verdicts_drew_afresh_is_not_continued_with_shared_draws(tmp_path) -> None:
    """A partial record of a randomized model written before the common draws (same draws per verdict, same clean
    pass) would mix both kinds of verdicts: refused, or set aside where the policy says so."""
    data, path = toy_data(), tmp_path / "r.json"
    first = evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path)
    assert first.provenance["randomness"]["common_draws"] is True
    old = json.loads(path.read_text())
    del old["provenance"]["randomness"]["common_draws"]  # as the earlier version wrote it
    path.write_text(json.dumps(old))
    with pytest.raises(KwtaRobustError, match="holds verdicts that drew afresh"):
        evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path, resume=True)
    policy = StalePolicy(option="--out-dir", restart="--retrain", set_aside=True)
    again = evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path, resume=True, stale=policy)
    assert again.clean_flags == first.clean_flags and "resumed_at" not in again.provenance
    assert evaluate(NoisyInput(), data, toy_config(), {}, progress=False, out_path=path, resume=True).status == \
        "complete"  # a record with the marker resumes


def test_one_draw_per_verdict_shares_the_clean_draws_too(tmp_path) -> None:
    """verdict_draws: 1 on a randomized model (warned) re-classified the attacked rows alone on fresh draws, so a
    perturbation far below the noise "broke" samples; now its one draw is the clean pass's, as with several."""
    cfg = toy_config(verdict_draws=1, threats=[{"norm": "linf", "epsilons": [1e-7]}], attacks=[{"attack": "fgsm"}])
    record = evaluate(NoisyInput(), toy_data(), cfg, {}, progress=False)
    fgsm = record.result("fgsm", "linf", 1e-7)
    assert fgsm.n_attacked > 0 and fgsm.n_broken == 0
    assert record.provenance["randomness"]["common_draws"] is True


def test_an_old_complete_record_is_stale_with_shards_as_without(tmp_path) -> None:
    """A complete record whose verdicts drew afresh was kept by a sharded run ("nothing to do") and refused by an
    unsharded one; both refuse it now (or set it aside where the policy says so)."""
    from kwta_robust.cli import main

    data = toy_data()
    torch.save({"x": data.x, "y": data.y}, tmp_path / "toy.pt")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**toy_config().to_dict(), "dataset": {"file": str(tmp_path / "toy.pt")}}))
    base = ["evaluate", "--model-factory", "test_randomized_models:noisy_input_factory", "--config", str(config),
            "--no-progress", "--threads", "1", "--out", str(tmp_path / "r.json")]
    assert main(base) == 0
    old = json.loads((tmp_path / "r.json").read_text())
    del old["provenance"]["randomness"]["common_draws"]
    (tmp_path / "r.json").write_text(json.dumps(old))
    assert main([*base, "--shards", "2", "--executor", "inline"]) == 2
    assert main(base) == 2
