"""What the README's '### Randomized models', '### Reproducing a record', '## Attacks' and '### BPDA on any model,
and the layer probe' promise and no other test held: the HTML report's **expected** column of a randomized model,
the ``non-deterministic`` flag of a model drawing from a generator of its own, the same per-sample results at every
``batch_size`` for attacks without random draws and the noise probes (with ``batch_size`` in the config hash), the
record's query count of a capped HopSkipJump (the cap plus the one forward that picks the correctly classified
samples), and a module named in one BPDA attack's own ``bpda_layers`` that BPDA cannot hook refused naming that
field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from attack_fixtures import trained_cnn
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.evaluate import evaluate
from kwta_robust.html_report import build_report
from test_cli_bpda_layers import run_error, write_config
from test_evaluate import linear_problem
from test_randomized_models import Linear3, NoisyInput, OwnGeneratorNoise, toy_config, toy_data
from test_straight_through import Unpack


def test_the_html_report_of_a_randomized_model_has_an_expected_column() -> None:
    """README: the tables of one record (evaluate's output, table --layout long, the HTML report) get an expected
    column beside the plurality numbers; a deterministic model's tables are unchanged."""
    noisy = build_report([evaluate(NoisyInput(), toy_data(), toy_config(), {}, progress=False)])
    plain = build_report([evaluate(Linear3(), toy_data(), toy_config(), {}, progress=False)])
    assert noisy.count("<th>expected</th>") == 1
    assert "<th>expected</th>" not in plain


def test_the_non_deterministic_flag_says_a_model_drawing_from_its_own_generator_cannot_be_reproduced() -> None:
    """README: `non-deterministic` says how the verdicts were taken and, for a model that draws from a generator of
    its own (its outputs change under one seed too), that its numbers cannot be reproduced."""
    messages = {}
    for model in (NoisyInput(), OwnGeneratorNoise()):
        record = evaluate(model, toy_data(), toy_config(), {}, progress=False)
        [flag] = [f for f in record.diagnostics if f.code == "non-deterministic"]
        assert "every clean and adversarial verdict is the plurality of 11 draws" in flag.message
        messages[type(model).__name__] = flag.message
    unseeded = "its outputs change under one seed of torch's global RNG too (a generator of its own), so its numbers " \
               "are not reproducible"
    assert unseeded in messages["OwnGeneratorNoise"] and unseeded not in messages["NoisyInput"]


def test_attacks_without_random_draws_and_the_noise_probes_give_the_same_results_at_any_batch_size() -> None:
    """README: attacks without random draws (PGD without random start, FGSM, FAB) and the noise probes gave the same
    per-sample results at batch sizes 40 / 16 / 7 (here 24 / 8 / 5: batches of several sizes and a ragged last one);
    batch_size is in the config and its hash (another evaluation)."""
    model, x, y = trained_cnn("relu")
    data = TensorData(x[:24], y[:24], "digits", 10, torch.arange(24))
    records = []
    for batch_size in (24, 8, 5):
        cfg = EvalConfig.from_dict({
            "dataset": "digits", "batch_size": batch_size, "seed": 0, "mode": "independent",
            "threats": [{"norm": "linf", "epsilons": [0.15]}],
            "attacks": [{"attack": "pgd", "params": {"steps": 10, "random_start": False}}, "fgsm",
                        {"attack": "fab", "params": {"steps": 5}}],
            "noise": [{"kind": "gaussian", "levels": [0.0, 0.3], "draws": 2}], "diagnostics": {"enabled": False}})
        records.append(evaluate(model, data, cfg, {}, progress=False))
    first = records[0]
    assert 0 < sum(sum(r.flags) for r in first.results) < 3 * 24  # some samples broken, some not
    for other in records[1:]:
        assert [(r.label, r.flags) for r in other.results] == [(r.label, r.flags) for r in first.results]
        assert other.noise[0].result == first.noise[0].result
        assert other.config["batch_size"] != first.config["batch_size"] and other.config_hash != first.config_hash


def test_a_capped_hopskipjump_records_at_most_its_cap_plus_one_forward_per_attacked_sample() -> None:
    """README: the record's queries add the one forward that picks the correctly classified samples to the
    max_queries cap: at most cap + 1 per attacked sample."""
    model, data = linear_problem(12)
    cap = 30
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 12, "seed": 0, "threats": [{"norm": "l2", "epsilons": [0.5]}],
        "attacks": [{"attack": "hopskipjump", "params": {"steps": 3, "max_queries": cap, "init_directions": 10}}],
        "diagnostics": {"enabled": False}})
    [result] = evaluate(model, data, cfg, {}, progress=False).results
    assert result.n_attacked > 0
    assert result.n_attacked < result.queries <= (cap + 1) * result.n_attacked


def unhookable_mlp() -> nn.Module:
    """``--model-factory test_readme_attacks:unhookable_mlp``: module ``2.gate`` returns a tuple (no BPDA hook)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 8), Unpack(), nn.Linear(8, 10))


@pytest.mark.parametrize(("own", "field"), [(True, "attacks[bpda-x].bpda_layers"), (False, "bpda_layers")])
def test_an_unhookable_named_module_is_one_error_line_naming_the_field_that_named_it(
        tmp_path: Path, capsys: pytest.CaptureFixture, own: bool, field: str) -> None:
    """README: a module named in bpda_layers that BPDA cannot hook (it returns a tuple) is a one-line error naming
    the field that named it (attacks[LABEL].bpda_layers or bpda_layers)."""
    attack = {"attack": "bpda", "label": "bpda-x", "params": {"surrogate": "smooth", "inner_params": {"steps": 1}}}
    extra = {}
    if own:
        attack["bpda_layers"] = ["auto", "2.gate"]
    else:
        extra["bpda_layers"] = ["auto", "2.gate"]
    cfg = write_config(tmp_path / "c.yaml", attacks=[attack], **extra)
    torch.save(unhookable_mlp().state_dict(), tmp_path / "w.pt")
    line = run_error(["evaluate", "--model-factory", "test_readme_attacks:unhookable_mlp", "--weights",
                      str(tmp_path / "w.pt"), "--config", str(cfg), "--no-progress", "--out",
                      str(tmp_path / "r.json")], capsys)
    assert line.startswith(f"error: {field}: module '2.gate' (TupleGate) returns a tuple, not one tensor in and "
                           "one out, so BPDA cannot replace its backward")
