"""Transfer attacks and noise probes end to end (``kwta_robust.api``), fuzzed: a source the comparison cannot use
is one KwtaRobustError line before any attack, and the numbers a record keeps are the ones worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.errors import KwtaRobustError
from tests.test_transfer import mlp

CONFIG = {"n_examples": 8, "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [], "transfer": {"attack": "pgd", "params": {"steps": 2}}, "diagnostics": {"enabled": False}}


def flat(net: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Flatten(), net).eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, flat(mlp("relu", seed=3))(x).argmax(1)


class Sum(nn.Module):
    """Class 1 when the pixels sum above 1.5, else class 0: on all-zero images it is right (label 0) while fewer
    than two pixels are set to 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1) * self.scale
        return torch.stack([1.5 - s, s - 1.5], dim=1)


def test_numenta_noise_score_worked_by_hand_through_the_record() -> None:
    # 3 black 2x2 images (P = 4 pixels), levels eta = 0, .25, .5, .75 set 0, 1, 2, 3 pixels to 1.0: the model is right
    # at the first two only, in every draw, so the score (correct over levels, averaged over draws) is 2 * 3 = 6
    x, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)
    config = dict(CONFIG, n_examples=3, noise=[{"kind": "numenta", "levels": [0, 0.25, 0.5, 0.75], "draws": 3}])
    record = evaluate_model(Sum(), config, x, y)
    probe = record.to_dict()["noise"][0]["result"]
    assert probe["accuracy"] == [1.0, 1.0, 0.0, 0.0]
    assert probe["noise_score"] == 6.0 and probe["noise_score_normalized"] == 0.5
    assert record.noise_score() == 6.0


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "salt-and-pepper", "numenta"])
def test_level_zero_repeated_is_the_clean_accuracy_in_the_record(data, kind) -> None:
    x, y = data
    config = dict(CONFIG, noise=[{"kind": kind, "levels": [0.0, 1e-9], "draws": 2}])  # a level given twice is refused
    record = evaluate_model(flat(mlp("kwta", seed=1)), config, x, y).to_dict()
    clean = record["clean"]["accuracy"]
    assert record["noise"][0]["result"]["accuracy"][:1] == [clean]
    assert record["noise"][0]["result"]["draw_accuracy"][0] == [clean, clean]  # in every draw


@pytest.mark.parametrize("source, words", [
    (flat(mlp("relu", seed=2)).double(), "the model's parameters are float64 but the data are float32"),
    (nn.Sequential(nn.Flatten(), nn.Linear(16, 5)), "the models disagree on the number of classes"),
    (nn.Sequential(nn.Flatten(), nn.Linear(32, 3)), "the model cannot take inputs of shape (1, 4, 4)"),
    (None, "model 's': expected a torch.nn.Module, got NoneType"),
])
def test_a_source_the_target_cannot_be_compared_with_is_one_line(data, source, words) -> None:
    x, y = data
    with pytest.raises(KwtaRobustError) as exc:
        compare_models_in_memory({"kwta": flat(mlp("kwta", seed=1)), "s": source}, CONFIG, x, y)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_transfer_results_are_bounded_by_clean_and_reproducible(data) -> None:
    x, y = data
    config = dict(CONFIG, mode="independent", threats=[{"norm": "linf", "epsilons": [0, 0.1, 0.3]}])
    models = {"kwta": flat(mlp("kwta", seed=1)), "relu": flat(mlp("relu", seed=2))}
    first = [r.to_dict() for r in compare_models_in_memory(models, config, x, y)]
    again = [r.to_dict() for r in compare_models_in_memory(models, config, x, y)]
    for record, other in zip(first, again):
        transfer = [r for r in record["results"] if r["kind"] == "transfer"]
        assert [r["eps"] for r in transfer] == [0.0, 0.1, 0.3]
        assert transfer[0]["robust"]["accuracy"] == record["clean"]["accuracy"]  # eps 0 changes nothing
        assert all(r["robust"]["accuracy"] <= record["clean"]["accuracy"] and r["queries"] == 0 for r in transfer)
        assert [r["flags"] for r in transfer] == [r["flags"] for r in other["results"] if r["kind"] == "transfer"]


@pytest.mark.parametrize("sources, message", [
    ({"s": None}, "transfer_sources['s']: expected an nn.Module classifier, got NoneType"),
    ({"s": "relu.pt"}, "transfer_sources['s']: expected an nn.Module classifier, got str"),
    (["relu"], "transfer_sources: expected a dict of name -> nn.Module (the source models), got list"),
    ("relu", "transfer_sources: expected a dict of name -> nn.Module (the source models), got str"),
    ({3: "x"}, "transfer_sources: a source's name must be a non-empty string, got 3"),
    ({"": None}, "transfer_sources: a source's name must be a non-empty string, got ''"),
])
def test_the_runners_transfer_sources_of_another_type_are_one_line(data, sources, message) -> None:
    from kwta_robust.api import as_config, in_memory_data
    from kwta_robust.evaluate import evaluate

    x, y = data  # before: AttributeError ('NoneType' object has no attribute 'parameters') or dict()'s ValueError
    model = flat(mlp("kwta", seed=1))
    cfg = as_config(dict(CONFIG, dataset="in-memory"))
    with pytest.raises(KwtaRobustError) as exc:
        evaluate(model, in_memory_data(x, y, {"k": model}), cfg, {"label": "k"}, transfer_sources=sources,
                 progress=False)
    assert str(exc.value) == message


def test_a_noise_probe_listed_twice_is_one_error_line_not_a_probe_silently_dropped(tmp_path, capsys) -> None:
    import json

    from kwta_robust.cli import main

    # before: both entries ran as one (same seed), the record kept one noise result for the config's two
    config = tmp_path / "twice.yaml"
    config.write_text(json.dumps(dict(CONFIG, dataset="digits", noise=[
        {"kind": "gaussian", "levels": [0.1]}, {"kind": "numenta", "levels": [0.1]},
        {"kind": "numenta", "levels": [0.1]}])))
    code = main(["evaluate", str(tmp_path / "none.pt"), "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: noise[2]: the same probe as noise[1] (kind, levels, draws and params): it would run once and the "
        "record keep one result; remove it"]


def test_probes_differing_in_draws_or_params_are_both_kept(data) -> None:
    x, y = data
    noise = [{"kind": "numenta", "levels": [0.1]}, {"kind": "numenta", "levels": [0.1], "draws": 2},
             {"kind": "numenta", "levels": [0.1], "params": {"value": 0.5}}]
    record = evaluate_model(flat(mlp("kwta", seed=1)), dict(CONFIG, noise=noise), x, y).to_dict()
    assert [(n["draws"], n["result"]["params"]["value"]) for n in record["noise"]] == [(1, 1.0), (2, 1.0), (1, 0.5)]
