"""A plug-in attack that draws from a source the runner does not seed is flagged (kwta_robust.plugin_repeat).

The runner attacks the first attacked batch of a plug-in attack's first threat point again with the same seeds
and compares the outputs bit for bit: ``os.urandom`` (as the persona walk's ``buggy`` with ``bug: nondet``) gives
``plugin-not-reproducible`` naming the label, the threat point and the fix; torch's, NumPy's and Python's global
RNGs, which the runner seeds per batch, do not. Built-in attacks are never attacked twice; the finding is kept in
``provenance.plugin_repeats``, so a resumed run does not repeat it; ``diagnostics.enabled: false`` skips it."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attacks.base import REGISTRY, register_attack
from kwta_robust.api import evaluate_model


def _urandom(x: Tensor) -> Tensor:
    """Uniform in [0, 1] from ``os.urandom`` (bytes / 255: a sign of ``u - 0.5`` that flips about half the time; a
    raw byte minus 0.5 is positive but for byte 0, so two draws would agree in most runs)."""
    raw = np.frombuffer(os.urandom(x.numel()), dtype=np.uint8).astype(np.float32) / 255.0
    return torch.from_numpy(raw).view_as(x)


DRAWS: dict[str, Callable[[Tensor], Tensor]] = {
    "urandom": _urandom,
    "clock": lambda x: torch.rand(x.shape, generator=torch.Generator().manual_seed(int.from_bytes(os.urandom(4),
                                                                                                 "little"))),
    "torch": lambda x: torch.rand(x.shape),
    "numpy": lambda x: torch.from_numpy(np.random.rand(*x.shape).astype(np.float32)),
    "python": lambda x: torch.tensor([random.random() for _ in range(x.numel())]).view_as(x),
}


@pytest.fixture
def calls() -> Any:
    """``repeat-me`` registered as a script registers it: a random sign step from ``draw``; counts its calls."""
    counted: list[int] = []
    with REGISTRY.preserved():
        @register_attack("repeat-me", norms=("linf",), kind="white-box")
        def make(seed: int = 0, draw: str = "torch"):
            """a random sign step of size eps"""
            def attack(model: nn.Module, x: Tensor, y: Tensor, threat: Any) -> Tensor:
                counted.append(len(x))
                return (x + float(threat.eps) * (DRAWS[draw](x) - 0.5).sign()).clamp(0, 1)
            attack.name = "repeat-me"
            return attack
        yield counted


def _run(attacks: list[dict], out: Path | None = None, enabled: bool = True) -> Any:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    config = {"n_examples": 8, "seed": 0, "mode": "independent", "batch_size": 4,
              "threats": [{"norm": "linf", "epsilons": [0.1, 0.2]}],
              "diagnostics": {"enabled": enabled, "gradient_batch": 4, "budget_check": {"enabled": False}},
              "attacks": attacks}
    return evaluate_model(net, config, x, y, threads=1, out_path=out)


def _flags(record: Any) -> list[Any]:
    return [f for f in record.diagnostics if f.code == "plugin-not-reproducible"]


@pytest.mark.parametrize("draw", ["urandom", "clock"])
def test_a_plugin_drawing_from_an_unseeded_source_is_flagged(calls: list[int], draw: str) -> None:
    record = _run([{"attack": "repeat-me", "label": "mine", "params": {"draw": draw}}])
    [flag] = _flags(record)
    assert flag.severity == "warning"
    assert "'mine' at Linf 0.1" in flag.message and "torch's global RNG" in flag.message
    [entry] = record.provenance["plugin_repeats"]
    assert (entry["attack"], entry["eps"], entry["n"], entry["reproducible"]) == ("mine", 0.1, 4, False)
    assert entry["differing"] >= 1 and entry["max_abs_diff"] > 0
    assert calls == [4, 4, 4, 4, 4]  # two batches at two points, and the first batch once more
    del calls[:]
    skipped = _run([{"attack": "repeat-me", "label": "mine", "params": {"draw": draw}}], enabled=False)
    assert calls == [4, 4, 4, 4] and "plugin_repeats" not in skipped.provenance  # diagnostics.enabled: false


@pytest.mark.parametrize("draw", ["torch", "numpy", "python"])
def test_a_plugin_drawing_from_the_seeded_global_rngs_is_not_flagged(calls: list[int], draw: str) -> None:
    record = _run([{"attack": "repeat-me", "label": "mine", "params": {"draw": draw}},
                   {"attack": "fgsm", "label": "fgsm"}])
    assert _flags(record) == []
    assert record.provenance["plugin_repeats"] == [{
        "attack": "mine", "norm": "linf", "eps": 0.1, "eps_text": "0.1", "n": 4, "differing": 0, "max_abs_diff": 0.0,
        "reproducible": True}]  # the built-in fgsm is never attacked twice
    assert calls == [4, 4, 4, 4, 4]


def test_a_resumed_run_keeps_the_check_and_does_not_repeat_it(calls: list[int], tmp_path: Path) -> None:
    attacks = [{"attack": "repeat-me", "label": "mine", "params": {"draw": "urandom"}}]
    _run(attacks, tmp_path / "r.json")
    del calls[:]
    record = _run(attacks, tmp_path / "r.json")
    assert calls == [] and record.provenance["plugin_repeats"][0]["reproducible"] is False
    assert [f.code for f in _flags(record)] == ["plugin-not-reproducible"]
