"""A kWTA written as a custom ``torch.autograd.Function`` inside a module BPDA acts on inline is refused by the BPDA
pre-check (:func:`kwta_robust.bpda_preflight.check_unrecorded_gates`), before the clean pass, with BPDA's own line.

BPDA refused it only at its first gradient (:class:`attacks.bpda_wrap.ModuleBackward`), after the clean pass and
every attack before it had run (tests/test_wild_function_inline.py has the model and the refusal)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import wild_kwta_models as wild
from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.errors import ConfigError
from test_wild_function_inline import REFUSAL, NoGradThreshold

X = wild.X


def _config(surrogate: str) -> dict:
    """PGD, then BPDA: the refusal used to come after the clean pass and PGD."""
    return {"n_examples": len(X), "batch_size": len(X), "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
            "attacks": [{"attack": "pgd", "params": {"steps": 1}},
                        {"attack": "bpda", "params": {"surrogate": surrogate, "inner_params": {"steps": 1}}}],
            "diagnostics": {"enabled": False}}


def _labels(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(X).argmax(1)  # every sample clean-correct: BPDA would attack them all


@pytest.mark.parametrize("fn", [wild.MaskedKwta, wild.STEKwta], ids=lambda f: f.__name__)
@pytest.mark.parametrize("surrogate", ["smooth", "identity"])
def test_the_function_gate_is_refused_before_the_clean_pass(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            fn: type, surrogate: str) -> None:
    model = wild.function_in_block(fn)
    with pytest.raises(ConfigError) as caught, caplog.at_level(logging.INFO):
        evaluate_model(model, _config(surrogate), X, _labels(model), out_path=tmp_path / "r.json")
    assert str(caught.value) == REFUSAL
    assert not any("clean accuracy" in r.getMessage() for r in caplog.records)  # no clean pass, no PGD
    assert list(tmp_path.iterdir()) == []  # no record, no lock


def test_a_comparison_refuses_it_before_the_first_model_is_evaluated(tmp_path: Path) -> None:
    plain = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    gated = wild.function_in_block()
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as caught:
        compare_models_in_memory({"plain": plain, "gated": gated}, _config("smooth"), X, _labels(gated),
                                 out_dir=out, transfer=False)
    assert str(caught.value) == REFUSAL
    assert not out.exists() or list(out.iterdir()) == []


def test_a_gate_autograd_records_is_not_refused() -> None:
    """A threshold taken under ``torch.no_grad`` with the mask applied outside: BPDA relaxes it, the run goes on."""
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), NoGradThreshold(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    record = evaluate_model(model, _config("smooth"), X, _labels(model))
    assert [r.label for r in record.results] == ["pgd", "bpda"]
    assert record.results[1].bpda_layers == {"1": "wrapped inline"}
