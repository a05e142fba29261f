"""One default for a noise probe's draws: ``run_noise_probe`` without ``draws`` and a config's ``noise`` entry
without ``draws`` run the same probe and give the same number.

Before: the config's ``draws`` defaulted to 1 and ``attacks.noise.run_noise_probe(..., draws=3)`` to 3, so the same
probe printed another noise score (a mean over 3 draws) depending on the door a user came through."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from attacks.noise import run_noise_probe
from kwta_robust.api import evaluate_model
from kwta_robust.configio import parse
from kwta_robust.specs import NoiseSpec


def test_the_config_default_is_the_api_default() -> None:
    api = inspect.signature(run_noise_probe).parameters["draws"].default
    config = parse(NoiseSpec, {"kind": "gaussian"}, prefix="noise[0]").draws
    assert config == api


def test_a_probe_via_config_and_via_the_api_without_draws_give_the_same_result() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 4, 5, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own predictions: level 0 is 100%, the noise flips some
    config = {"n_examples": 16, "batch_size": 16, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
              "attacks": [{"attack": "fgsm"}], "noise": [{"kind": "gaussian", "levels": [0.0, 0.3]}],
              "diagnostics": {"enabled": False}}
    record = evaluate_model(model, config, x, y, threads=1, progress=False)
    via_config = record.noise[0]
    order = torch.tensor(record.dataset["indices"])
    via_api = run_noise_probe(model, x[order], y[order], "gaussian", levels=[0.0, 0.3], seed=via_config.seed,
                              batch_size=16).to_dict()
    assert via_api["draws"] == via_config.draws == via_config.result["draws"]
    assert via_api["accuracy"][0] == 1.0 and via_api["accuracy"][1] < 1.0  # the noise level does something
    for key in ("accuracy", "draw_accuracy", "correct_counts", "noise_score", "noise_score_normalized"):
        assert via_api[key] == via_config.result[key], key
