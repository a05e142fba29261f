"""The runner on scripted attacks: every number computed by hand.

The model classifies an image by its mean pixel ``m``: class 0 iff ``m > 0.5`` (logits ``[10(m - 0.5), -10(m - 0.5)]``,
so the margin of a class-0 sample is ``-20(m - 0.5)``). Each sample is a constant image of value ``c``; two scripted
"attacks" map ``c`` to a constant output image (inside or outside the Linf ball of radius 0.1, inside or outside
[0, 1], misclassified or not before and after projection). The runner must project, re-classify and combine them;
the expected flags, counts, violations and worst cases below are worked out by hand from the table.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.errors import ConfigError
from kwta_robust.eval_part import EvalPart
import kwta_robust.evaluate as evaluate_module
from kwta_robust.evaluate import ModelChangedError, evaluate
from kwta_robust.matrix_checks import GRID_CELL_FLAG
from kwta_robust.results import Flag, load_record
from kwta_robust.resume import StalePolicy
from kwta_robust.runs import check_sharding, declare_grid_cell, flag_grid_cell, record_path
from kwta_robust.samples import select_samples
from kwta_robust.shards import Sharding
from test_evaluate import register  # fixture

# sample id: (clean value c, label y)
SAMPLES = [(0.55, 0), (0.58, 0), (0.70, 0), (0.98, 0), (0.45, 0), (0.42, 1), (0.30, 1), (0.02, 1)]
# attack "a": c -> raw output value.
#   0: 0.47 inside the ball, class 1           -> broken
#   1: 0.30 outside (excess 0.18) -> 0.48       -> broken (violation)
#   2: 0.30 outside (excess 0.30) -> 0.60       -> raw would be wrong, projected is right: survives (violation)
#   3: 1.05 inside the ball, above 1 by 0.05 -> 1.0: survives (violation)
#   4: clean wrong, never attacked
#   5: 0.42 (unchanged)                         -> survives
#   6: 0.65 outside (excess 0.25) -> 0.40       -> survives (violation)
#   7: -0.03 inside the ball, below 0 by 0.03 -> 0.0: survives (violation)
SCRIPT_A = {55: 0.47, 58: 0.30, 70: 0.30, 98: 1.05, 42: 0.42, 30: 0.65, 2: -0.03}
# attack "b" (all outputs inside the ball and [0, 1]): breaks 0 (0.49) and 5 (0.51), leaves the others
SCRIPT_B = {55: 0.49, 58: 0.60, 70: 0.62, 98: 0.90, 42: 0.51, 30: 0.35, 2: 0.11}
HOSTILE: dict[int, float] = {}
SCRIPTS = {"a": SCRIPT_A, "b": SCRIPT_B, "hostile": HOSTILE}
A, B = "test-scripted(script=a)", "test-scripted(script=b)"
CALLS: list[dict[str, Any]] = []


class MeanModel(nn.Module):
    """Class 0 iff the mean pixel exceeds 0.5; in train mode the logits are negated (the runner must use eval())."""

    def forward(self, x: Tensor) -> Tensor:
        s = 10.0 * (x.flatten(1).mean(dim=1) - 0.5)
        logits = torch.stack([s, -s], dim=1)
        return -logits if self.training else logits


class Scripted:
    """Returns the scripted constant image for each input (the input itself where the script has no entry)."""

    def __init__(self, script: str = "a", seed: int = 0) -> None:
        self.name, self.script = f"scripted-{script}", SCRIPTS[script]

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        keys = [round(float(v) * 100) for v in x.flatten(1)[:, 0]]
        CALLS.append({"keys": keys, "training": model.training, "eps": threat.eps})
        if self.script is HOSTILE:
            model.count.add_(1)  # type: ignore[operator]  # an attack that changes the model
        out = x.clone()
        for row, key in enumerate(keys):
            if key in self.script:
                out[row] = self.script[key]
        return out


@pytest.fixture(autouse=True)
def scripted(register: Any) -> None:
    register("test-scripted", Scripted)
    CALLS.clear()


def data() -> TensorData:
    x = torch.tensor([c for c, _ in SAMPLES]).view(-1, 1, 1, 1).expand(-1, 1, 4, 5).contiguous()
    y = torch.tensor([label for _, label in SAMPLES])
    return TensorData(x, y, "toy", 2, torch.arange(len(SAMPLES), dtype=torch.long))


def config(**extra: Any) -> EvalConfig:
    cfg = {"dataset": "toy", "batch_size": 3, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
           "attacks": [{"attack": "test-scripted", "params": {"script": "a"}},
                       {"attack": "test-scripted", "params": {"script": "b"}}],
           "diagnostics": {"enabled": False}}
    cfg.update(extra)
    return EvalConfig.from_dict(cfg)


def by_id(record: Any, values: list) -> list:
    """Per-sample values in selection order -> in sample-id order."""
    order = record.dataset["indices"]
    out: list = [None] * len(order)
    for pos, sid in enumerate(order):
        out[sid] = values[pos]
    return out


def run(cfg: EvalConfig, model: nn.Module | None = None, **kw: Any) -> Any:
    return evaluate(MeanModel() if model is None else model, data(), cfg, {"name": "mean"}, progress=False, **kw)


def test_cascade_flags_counts_violations_and_worst_case_by_hand() -> None:
    record = run(config())
    assert record.clean.correct == 7 and record.clean.n == 8
    assert by_id(record, record.clean_flags) == [1, 1, 1, 1, 0, 1, 1, 1]
    a, b = record.result(A, "linf", 0.1), record.result(B, "linf", 0.1)
    assert by_id(record, a.flags) == [0, 0, 1, 1, -1, 1, 1, 1]
    assert (a.robust.correct, a.robust.n, a.n_attacked, a.n_broken) == (5, 8, 7, 2)
    assert a.violations == 5 and a.max_violation == pytest.approx(0.30, abs=1e-5)
    assert a.position == 0 and a.cumulative and a.eps == 0.1
    # the cascade attacks b only on the clean-correct survivors of a: 2, 3, 5, 6, 7
    assert by_id(record, b.flags) == [-1, -1, 1, 1, -1, 0, 1, 1]
    assert (b.robust.correct, b.n_attacked, b.n_broken, b.violations, b.position) == (4, 5, 1, 0, 1)
    assert b.max_violation == 0.0
    worst = record.worst("linf", 0.1)
    assert worst.attacks == [A, B]
    assert (worst.robust.correct, worst.robust.n, worst.robust.accuracy) == (4, 8, 0.5)
    assert by_id(record, worst.first_broken_by) == [0, 0, -1, -1, -2, 1, -1, -1]


def test_the_runner_reclassifies_the_projected_inputs() -> None:
    record = run(config())
    margins = by_id(record, record.result(A, "linf", 0.1).margins)
    # margin -20(m - 0.5) for class 0, +20(m - 0.5) for class 1, on the projected input m
    expected = [0.6, 0.4, -2.0, -10.0, None, -1.6, -2.0, -10.0]
    for got, want in zip(margins, expected):
        assert (got is None) if want is None else got == pytest.approx(want, abs=1e-4)
    assert by_id(record, record.clean_margins) == pytest.approx([-1.0, -1.6, -4.0, -9.6, 1.0, -1.6, -4.0, -9.6],
                                                                abs=1e-4)


def test_independent_mode_attacks_every_clean_correct_sample() -> None:
    record = run(config(mode="independent"))
    a, b = record.result(A, "linf", 0.1), record.result(B, "linf", 0.1)
    assert by_id(record, a.flags) == [0, 0, 1, 1, -1, 1, 1, 1]
    assert by_id(record, b.flags) == [0, 1, 1, 1, -1, 0, 1, 1]
    assert (b.robust.correct, b.n_attacked, b.n_broken) == (5, 7, 2)
    assert not a.cumulative and not b.cumulative
    worst = record.worst("linf", 0.1)
    assert worst.robust.correct == 4  # 2, 3, 6, 7: the per-sample worst case, not the best attack's 5
    assert by_id(record, worst.first_broken_by) == [0, 0, -1, -1, -2, 1, -1, -1]


def test_saved_adversarial_inputs_are_the_projections(tmp_path: Any) -> None:
    path = tmp_path / "adv.pt"
    record = run(config(), save_adversarial=path)
    saved = torch.load(path, weights_only=True)
    order = record.dataset["indices"]
    adv = saved["adv/" + A + "|linf|0.1"]
    values = [float(adv[order.index(sid)].mean()) for sid in range(8)]
    # projected: clip to [c - 0.1, c + 0.1] and to [0, 1]; the clean input where not attacked (4)
    assert values == pytest.approx([0.47, 0.48, 0.60, 1.0, 0.45, 0.42, 0.40, 0.0], abs=1e-5)
    assert float(adv.max()) <= 1.0 and float(adv.min()) >= 0.0
    pred = saved["pred/" + A + "|linf|0.1"]
    assert [int(pred[order.index(sid)]) for sid in range(8)] == [1, 1, 0, 0, -1, 1, 1, 1]


def test_eval_mode_for_attacks_and_verdicts_and_the_train_flag_restored() -> None:
    model = MeanModel().train()  # in train mode its logits are negated: every verdict would flip
    record = run(config(), model)
    assert model.training
    assert record.clean.correct == 7
    assert CALLS and not any(c["training"] for c in CALLS)
    assert record.worst("linf", 0.1).robust.correct == 4


def test_a_wider_ball_and_each_eps_is_its_own_threat_point() -> None:
    record = run(config(threats=[{"norm": "linf", "epsilons": [0.1, 0.3]}]))
    assert {c["eps"] for c in CALLS} == {0.1, 0.3}
    a = record.result(A, "linf", 0.3)
    # eps 0.3: 1 -> 0.30 inside (broken); 2 -> 0.30 outside by 0.1 -> 0.40 broken; 6 -> 0.65 outside by 0.05 -> 0.60
    assert by_id(record, a.flags) == [0, 0, 0, 1, -1, 1, 0, 1]
    assert a.violations == 4 and a.max_violation == pytest.approx(0.10, abs=1e-5)
    assert record.worst("linf", 0.3).robust.correct == 2  # b breaks 5 of the survivors 3, 5, 7
    assert record.worst("linf", 0.1).robust.correct == 4


def test_a_shard_runs_its_positions_and_only_its_threat_point() -> None:
    cfg = config(threats=[{"norm": "linf", "epsilons": [0.1, 0.3]}])
    full = run(cfg)
    part = run(cfg, part=EvalPart("attacks", 3, 6, threat=("linf", 0.1)))
    assert part.dataset["indices"] == full.dataset["indices"][3:6] and part.dataset["n"] == 3
    assert part.status == "complete" and part.dataset["part"] == {"scope": "attacks", "start": 3, "stop": 6,
                                                                   "threat": ["linf", 0.1]}
    assert [(r.label, r.eps) for r in part.results] == [(A, 0.1), (B, 0.1)]
    assert part.result(A, "linf", 0.1).flags == full.result(A, "linf", 0.1).flags[3:6]
    assert part.worst("linf", 0.1).first_broken_by == full.worst("linf", 0.1).first_broken_by[3:6]
    assert {c["eps"] for c in CALLS} == {0.1, 0.3}  # the full run's; the part's only 0.1
    other = run(cfg, part=EvalPart("attacks", 0, 3, threat=("linf", 0.3)))
    assert [r.eps for r in other.results] == [0.3, 0.3]


def test_which_parts_run_what() -> None:
    assert EvalPart("sanity", 0, 2).samples and EvalPart("attacks", 0, 2).samples
    assert not EvalPart("whole-set").samples and not EvalPart("layer-probe").samples
    assert EvalPart("attacks", 0, 2).sanity and EvalPart("sanity", 0, 2).sanity
    assert not EvalPart("attacks", 0, 2, threat=("linf", 0.1)).sanity and not EvalPart("whole-set").sanity
    assert EvalPart("whole-set").whole_set and not EvalPart("layer-probe").whole_set
    assert not EvalPart("attacks", 0, 2).whole_set and not EvalPart("sanity", 0, 2).whole_set
    part = EvalPart("attacks", 0, 2, threat=("linf", 0.1))
    assert part.attacks_at("linf", 0.1) and not part.attacks_at("linf", 0.3) and not part.attacks_at("l2", 0.1)
    assert EvalPart("attacks", 0, 2).attacks_at("l2", 0.5) and not EvalPart("sanity", 0, 2).attacks_at("linf", 0.1)
    assert EvalPart("attacks", 0, 1).stop == 1
    for scope in ("whole-set", "layer-probe", "sanity"):
        with pytest.raises(ConfigError, match="threat .* belongs to an attacks part"):
            EvalPart(scope, 0, 2, threat=("linf", 0.1))
    for start, stop in ((3, 3), (4, 3), (-1, 2)):
        with pytest.raises(ConfigError, match="a shard needs 0 <= start < stop"):
            EvalPart("attacks", start, stop)
    assert EvalPart("attacks", 0, 2, threat=("linf", 0.1)).to_dict() == {
        "scope": "attacks", "start": 0, "stop": 2, "threat": ["linf", 0.1]}


def test_a_model_not_put_back_as_handed_over_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def eval_for_good(model: nn.Module) -> Iterator[nn.Module]:  # a broken restore: train flags never come back
        model.eval()
        yield model

    monkeypatch.setattr(evaluate_module, "eval_mode", eval_for_good)
    model = MeanModel().train()
    with pytest.raises(ModelChangedError, match="the evaluation .*train"):
        run(config(), model)


def test_the_sanity_attack_runs_independently_on_the_clean_correct_samples() -> None:
    sanity = {"norm": "linf", "eps": 0.3, "attack": "test-scripted", "params": {"script": "a"}}
    record = run(config(mode="cascade", diagnostics={"enabled": True, "sanity": sanity, "gradient_batch": 4}))
    assert len(record.sanity) == 1
    s = record.sanity[0]
    # a at its own eps 0.3 (see the wider-ball test), on every clean-correct sample
    assert by_id(record, s.flags) == [0, 0, 0, 1, -1, 1, 0, 1]
    assert (s.robust.correct, s.n_attacked, s.n_broken, s.cumulative, s.position) == (3, 7, 4, False, 0)
    assert s.violations == 4 and s.eps == 0.3
    assert run(config(diagnostics={"enabled": False, "sanity": sanity})).sanity == []


def test_n_examples_may_be_the_whole_split_but_not_one_more() -> None:
    assert len(select_samples(data(), config(n_examples=8))) == 8
    assert sorted(select_samples(data(), config(n_examples=8)).indices.tolist()) == list(range(8))
    assert len(select_samples(data(), config(n_examples=1))) == 1
    with pytest.raises(ConfigError, match="n_examples: 9 requested but toy"):
        select_samples(data(), config(n_examples=9))


def test_sharding_with_saved_inputs_is_refused_and_record_paths(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="--save-adversarial: not with --shards"):
        check_sharding(Sharding(2), "adv.pt")
    check_sharding(Sharding(2), None)
    check_sharding(None, "adv.pt")
    monkeypatch.chdir(tmp_path)
    assert record_path("given.json", "m", "cfgs/x.yaml") == Path("given.json")
    assert record_path(None, "m", "cfgs/x.yaml") == Path("runs/eval/m__x.json")
    (tmp_path / "runs").write_text("a file where the folder would go")
    with pytest.raises(ConfigError, match="--out"):
        record_path(None, "m", "cfgs/x.yaml")


def test_a_grid_cell_flag_alone_is_saved(tmp_path: Any) -> None:
    record = run(config())
    record.model["weight_sparsity"] = {"overall": 0.0, "layers": {"fc": 0.0}}
    record.model["grid_cell"] = {"weight_sparsity": 0.5}  # declared already: only the flag is new
    out = tmp_path / "rec.json"
    declare_grid_cell(record, {"weight_sparsity": 0.5}, out)
    assert [(f.code, f.severity) for f in record.diagnostics] == [(GRID_CELL_FLAG, "warning")]
    assert record.diagnostics[0].evidence == {"declared": 0.5, "measured_overall": 0.0}
    assert [f.code for f in load_record(out).diagnostics] == [GRID_CELL_FLAG]
    assert not flag_grid_cell(record)  # nothing new the second time
    record.model["grid_cell"] = {"weight_sparsity": 0.0}  # no conflict: the flag goes
    assert flag_grid_cell(record) and record.diagnostics == []


class Jittery(MeanModel):
    """Randomized (tiny noise on the logits) but every draw gives the same verdict."""

    def forward(self, x: Tensor) -> Tensor:
        logits = super().forward(x)
        return logits + 1e-3 * torch.rand_like(logits)


def test_a_randomized_model_records_error_rates_of_its_draws() -> None:
    record = run(config(verdict_draws=2), Jittery())
    assert record.provenance["randomness"]["randomized"] and record.provenance["randomness"]["draws"] == 2
    assert by_id(record, record.clean_error_rates) == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    a = record.result(A, "linf", 0.1)
    assert by_id(record, a.error_rates) == [1.0, 1.0, 0.0, 0.0, None, 0.0, 0.0, 0.0]
    assert record.worst("linf", 0.1).robust.correct == 4


class Threshold(MeanModel):
    """Class 0 iff the mean exceeds ``threshold`` (a plain attribute: no state that the record's digest sees)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x + 0.5 - self.threshold)


def test_resume_keeps_finished_units_and_refuses_other_clean_predictions(tmp_path: Any) -> None:
    sanity = {"norm": "linf", "eps": 0.3, "attack": "test-scripted", "params": {"script": "b"}}
    cfg = config(diagnostics={"enabled": True, "sanity": sanity, "gradient_batch": 4},
                 noise=[{"kind": "gaussian", "levels": [0.0, 0.1], "draws": 1}])
    out = tmp_path / "rec.json"
    first = run(cfg, out_path=out)
    CALLS.clear()
    again = run(cfg, out_path=out)
    assert CALLS == []  # both attack units and the sanity attack were kept
    assert (len(again.results), len(again.sanity), len(again.noise)) == (2, 1, 1)
    assert again.worst("linf", 0.1).robust.correct == first.worst("linf", 0.1).robust.correct == 4
    # 0.45 is classified 0 under a threshold of 0.44: other clean predictions, same state digest
    with pytest.raises(ConfigError, match="clean predictions that differ"):
        evaluate(Threshold(0.44), data(), cfg, {"name": "mean"}, out_path=out, progress=False)
    CALLS.clear()
    fresh = evaluate(Threshold(0.44), data(), cfg, {"name": "mean"}, out_path=out, progress=False,
                     stale=StalePolicy(set_aside=True))
    assert len(list((tmp_path / "superseded").iterdir())) == 1
    assert CALLS and fresh.clean.correct == 8  # evaluated afresh: 0.45 is now class 0, as labelled
    assert by_id(fresh, fresh.result(A, "linf", 0.1).flags)[4] == 1  # 0.45 -> 0.45: attacked, survives
    assert load_record(out).clean.correct == 8


def test_parts_run_the_sanity_attack_and_budget_check_as_their_scope_says(monkeypatch: pytest.MonkeyPatch) -> None:
    budget: list[int] = []

    def fake_budget(model: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> list:
        budget.append(int(x.shape[0]))
        return []

    monkeypatch.setattr(evaluate_module, "run_budget_check", fake_budget)
    sanity = {"norm": "linf", "eps": 0.3, "attack": "test-scripted", "params": {"script": "b"}}
    cfg = config(diagnostics={"enabled": True, "sanity": sanity, "gradient_batch": 4})
    part = run(cfg, part=EvalPart("sanity", 0, 6))
    assert part.results == [] and len(part.sanity) == 1 and part.dataset["n"] == 6
    assert budget == []  # a part has no budget check
    threat_part = run(cfg, part=EvalPart("attacks", 0, 3, threat=("linf", 0.1)))
    assert threat_part.sanity == [] and len(threat_part.results) == 2
    noisy = cfg.with_overrides(noise=[{"kind": "gaussian", "levels": [0.0, 0.1], "draws": 1}])
    attacks_part = run(noisy, part=EvalPart("attacks", 0, 3))
    assert attacks_part.noise == [] and not attacks_part.probes  # only the whole-set part looks at every sample
    whole_part = run(noisy, part=EvalPart("whole-set"))
    assert len(whole_part.noise) == 1 and whole_part.probes and whole_part.results == []
    whole = run(cfg)
    assert len(whole.sanity) == 1 and budget == [8]


class Noisy(MeanModel):
    """Randomized with noise that decides many verdicts: only common random numbers make two verdicts agree."""

    def forward(self, x: Tensor) -> Tensor:
        logits = super().forward(x)
        return logits + 3.0 * torch.randn_like(logits)


def test_an_attack_returning_the_clean_input_breaks_nothing_under_common_draws() -> None:
    """A sample's adversarial verdicts draw as its clean one did: an identity attack changes no verdict."""
    SCRIPTS["none"] = {}
    none = {"attack": "test-scripted", "params": {"script": "none"}}
    sanity = {"norm": "linf", "eps": 0.5, **none}
    record = run(config(verdict_draws=3, attacks=[none], diagnostics={"enabled": True, "sanity": sanity}), Noisy())
    assert record.provenance["randomness"]["randomized"]
    result = record.results[0]
    correct = [i for i, f in enumerate(record.clean_flags) if f == 1]
    assert 0 < len(correct) < 8  # the noise decides verdicts: some clean ones are wrong
    assert [result.flags[i] for i in correct] == [1] * len(correct) and result.n_broken == 0
    assert [result.error_rates[i] for i in correct] == [record.clean_error_rates[i] for i in correct]
    assert [record.sanity[0].flags[i] for i in correct] == [1] * len(correct)


def test_the_worst_case_writes_its_eps_as_the_results_do() -> None:
    SCRIPTS["none"] = {}
    record = run(config(threats=[{"norm": "linf", "epsilons": [8 / 255]}],
                        attacks=[{"attack": "test-scripted", "params": {"script": "none"}}]))
    assert record.worst("linf", 8 / 255).eps_text == "8/255" == record.results[0].eps_text
    assert record.worst("linf", 8 / 255).robust.correct == 7  # nothing broken: the clean-correct samples


class Counting(MeanModel):
    """A buffer that only a hostile step changes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(()))


def test_a_change_is_blamed_on_the_step_that_made_it(monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = {"norm": "linf", "eps": 0.5, "attack": "test-scripted", "params": {"script": "hostile"}}
    cfg = config(attacks=[{"attack": "test-scripted", "params": {"script": "a"}}],
                 diagnostics={"enabled": True, "sanity": hostile})
    with pytest.raises(ModelChangedError, match="^sanity attack 'sanity-test-scripted.*' changed the model's 'count'"):
        run(cfg, Counting())
    real_noise = evaluate_module.run_noise_probe

    def hostile_noise(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        model.count.add_(1)
        return real_noise(model, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "run_noise_probe", hostile_noise)
    noisy = config(noise=[{"kind": "gaussian", "levels": [0.0], "draws": 1}])
    with pytest.raises(ModelChangedError, match="^noise probe 'gaussian' changed the model's 'count'"):
        run(noisy, Counting())

    def hostile_budget(model: nn.Module, *args: Any, **kwargs: Any) -> list:
        model.count.add_(1)
        return []

    monkeypatch.setattr(evaluate_module, "run_budget_check", hostile_budget)
    with pytest.raises(ModelChangedError, match="^the budget check changed the model's 'count'"):
        run(config(diagnostics={"enabled": True}), Counting())


def test_no_probes_without_diagnostics_and_flags_sorted_by_severity(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = run(config())
    assert not plain.probes and not plain.detection and plain.diagnostics == []
    flags = [Flag("c-info", "info", "i"), Flag("a-critical", "critical", "c"), Flag("b-warning", "warning", "w")]
    monkeypatch.setattr(evaluate_module, "run_checks", lambda record, thresholds: list(flags))
    record = run(config(diagnostics={"enabled": True}))
    assert [f.code for f in record.diagnostics if f.code in ("a-critical", "b-warning", "c-info")] == [
        "a-critical", "b-warning", "c-info"]
    assert record.probes


def test_the_noise_probe_of_a_randomized_model_votes_as_the_clean_pass() -> None:
    """Noise level 0 leaves the inputs as they are: with the clean pass's draws, its accuracy is the clean one."""
    cfg = config(verdict_draws=3, attacks=[], noise=[{"kind": "gaussian", "levels": [0.0], "draws": 1}])
    record = run(cfg, Noisy())
    assert 0 < record.clean.correct < 8
    assert record.noise[0].result["accuracy"] == [record.clean.correct / 8]


def test_a_new_grid_cell_is_saved_and_an_unchanged_one_is_not(tmp_path: Any) -> None:
    record = run(config())
    assert "grid_cell" not in record.model
    declare_grid_cell(record, {"weight_sparsity": 0.0}, tmp_path / "new.json")
    assert record.model["grid_cell"] == {"weight_sparsity": 0.0} and record.diagnostics == []
    assert load_record(tmp_path / "new.json").model["grid_cell"] == {"weight_sparsity": 0.0}
    declare_grid_cell(record, {"weight_sparsity": 0.0}, tmp_path / "same.json")
    assert not (tmp_path / "same.json").exists()  # nothing changed: nothing written
