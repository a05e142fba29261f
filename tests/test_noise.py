"""Noise-robustness probes: level 0 is clean accuracy, the Numenta score as defined, exact corruption amounts,
determinism, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from attacks.base import AttackConfigError, NonLogitOutputWarning
from attacks.noise import (
    NUMENTA_MNIST_VALUE,
    NoiseProbe,
    available_noise_probes,
    create_noise_probe,
    default_levels,
    derive_seed,
    run_noise_probe,
)

from attack_fixtures import trained_cnn

KINDS = ["gaussian", "uniform", "salt-and-pepper", "numenta"]


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = trained_cnn("relu")
    return model, x[:120], y[:120]


def test_registry_lists_the_probes() -> None:
    assert available_noise_probes() == sorted(KINDS)
    assert all(isinstance(create_noise_probe(k), NoiseProbe) for k in KINDS)


def test_numenta_default_levels() -> None:
    levels = default_levels("numenta")
    assert len(levels) == 11 and levels[0] == 0.0 and levels[-1] == 0.5
    assert all(math.isclose(b - a, 0.05) for a, b in zip(levels, levels[1:]))


@pytest.mark.parametrize("kind", KINDS)
def test_level_zero_is_clean_accuracy(setup, kind: str) -> None:
    model, x, y = setup
    result = run_noise_probe(model, x, y, kind, levels=[0.0, 0.2], draws=2)
    with torch.no_grad():
        clean = int((model(x).argmax(dim=1) == y).sum())
    assert result.accuracy[0] == clean / len(y)
    assert result.draw_accuracy[0] == (clean / len(y),) * 2
    assert int(result.correct_counts[0].sum()) == 2 * clean


def test_numenta_score_is_the_total_correct_over_levels(setup) -> None:
    model, x, y = setup
    result = run_noise_probe(model, x, y, "numenta", draws=1, seed=5)
    levels = default_levels("numenta")
    assert result.levels == levels
    # recompute every level by hand from the documented generator seeds
    probe = create_noise_probe("numenta")
    by_hand = []
    for level in levels:
        gen = torch.Generator().manual_seed(derive_seed(5, "numenta", level, 0))
        noisy = x if level == 0 else probe.apply(x, level, gen, (0.0, 1.0)).clamp(0, 1)
        with torch.no_grad():
            by_hand.append(int((model(noisy).argmax(dim=1) == y).sum()))
    assert result.correct_counts.sum(dim=1).tolist() == by_hand
    assert result.noise_score == sum(by_hand)
    assert result.noise_score_normalized == sum(by_hand) / (len(levels) * len(y))
    assert list(result.accuracy) == [c / len(y) for c in by_hand]


def test_noise_score_averages_draws(setup) -> None:
    model, x, y = setup
    result = run_noise_probe(model, x, y, "numenta", levels=[0.0, 0.1, 0.3], draws=3)
    per_draw_totals = [sum(result.draw_accuracy[l][d] * len(y) for l in range(3)) for d in range(3)]
    assert math.isclose(result.noise_score, sum(per_draw_totals) / 3)
    assert result.correct_counts.shape == (3, len(y)) and int(result.correct_counts.max()) <= 3


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_seeded(setup, kind: str) -> None:
    model, x, y = setup
    rng = torch.get_rng_state()
    a = run_noise_probe(model, x, y, kind, levels=[0.3], draws=2, seed=1, batch_size=256)
    b = run_noise_probe(model, x, y, kind, levels=[0.0, 0.3], draws=2, seed=1, batch_size=7)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(a.correct_counts[0], b.correct_counts[1])  # same level: same noise, any batch size
    probe = create_noise_probe(kind)
    noisy = [
        probe.apply(x, 0.3, torch.Generator().manual_seed(derive_seed(s, kind, 0.3, d)), (0.0, 1.0))
        for s, d in ((1, 0), (1, 1), (2, 0))
    ]
    assert not torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 1.0])
def test_salt_and_pepper_fraction_is_exact(fraction: float) -> None:
    x = torch.full((20, 3, 8, 8), 0.5)
    noisy = create_noise_probe("salt-and-pepper").apply(x, fraction, torch.Generator().manual_seed(0), (0.0, 1.0))
    changed = (noisy != 0.5).any(dim=1)  # [N, H, W]: a pixel changes in all channels together
    assert bool(((noisy != 0.5).all(dim=1) == changed).all())
    expected = math.floor(fraction * 64)
    assert changed.flatten(1).sum(dim=1).tolist() == [expected] * 20
    values = noisy[(noisy != 0.5)]
    assert bool(((values == 0.0) | (values == 1.0)).all())
    if expected >= 16:
        assert 0 < int((values == 1.0).sum()) < values.numel()  # both salt and pepper occur


@pytest.mark.parametrize("value", [1.0, NUMENTA_MNIST_VALUE])
def test_numenta_sets_exactly_eta_pixels_to_the_value(value: float) -> None:
    x = torch.zeros(10, 64)  # flat inputs: every feature is a pixel
    noisy = create_noise_probe("numenta", value=value).apply(x, 0.35, torch.Generator().manual_seed(0), (0.0, 1.0))
    set_ = noisy != 0
    assert set_.sum(dim=1).tolist() == [math.floor(0.35 * 64)] * 10
    assert bool((noisy[set_] == torch.tensor(value)).all())


def test_additive_noise_is_clipped_and_bounded(setup) -> None:
    model, x, _ = setup
    gen = torch.Generator().manual_seed(0)
    for kind in ("gaussian", "uniform"):
        noisy = create_noise_probe(kind).apply(x, 0.4, gen, (0.0, 1.0))
        assert float(noisy.min()) < 0 or float(noisy.max()) > 1  # unclipped draw leaves the box...
    uniform = create_noise_probe("uniform").apply(x, 0.4, gen, (0.0, 1.0))
    assert float((uniform - x).abs().max()) <= 0.4
    captured = []
    spy = _Spy(model, captured)
    run_noise_probe(spy, x, setup[2], "gaussian", levels=[0.5], draws=1)
    assert float(captured[0].min()) >= 0 and float(captured[0].max()) <= 1  # ...the probe clips it


class _Spy(nn.Module):
    def __init__(self, model: nn.Module, captured: list) -> None:
        super().__init__()
        self.model, self.captured = model, captured

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.captured.append(x.detach().clone())
        return self.model(x)


def test_model_flags_restored_and_result_is_plain_data(setup) -> None:
    model, x, y = setup
    model.train()
    flags = {n: m.training for n, m in model.named_modules()}
    result = run_noise_probe(model, x, y, "salt-and-pepper", levels=[0.0, 0.1], draws=2)
    assert {n: m.training for n, m in model.named_modules()} == flags
    model.eval()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["kind"] == "salt-and-pepper" and data["levels"] == [0.0, 0.1] and data["draws"] == 2
    assert isinstance(data["noise_score"], float) and isinstance(data["correct_counts"][0][0], int)
    assert data["total_correct"] == int(result.correct_counts.sum())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "speckle"}, "unknown noise probe"),
        ({"kind": "gaussian", "levels": [-0.1]}, "levels"),
        ({"kind": "numenta", "levels": [1.5]}, r"fractions in \[0, 1.0\]"),
        ({"kind": "gaussian", "levels": []}, "levels is empty"),
        ({"kind": "uniform", "draws": 0}, "draws"),
        ({"kind": "uniform", "batch_size": 0}, "batch_size"),
        ({"kind": "numenta", "value": "white"}, "value"),
        ({"kind": "numenta", "value": 5.0}, r"value is a pixel value on the \[0, 1\] scale .* got 5.0"),
        ({"kind": "numenta", "value": -0.5}, r"\[0, 1\] scale"),
        ({"kind": "numenta", "value": float("nan")}, r"\[0, 1\] scale"),
        ({"kind": "gaussian", "sigma": 1}, "unknown parameter 'sigma'; it takes no parameters"),
    ],
)
def test_bad_input(setup, kwargs: dict, match: str) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError, match=match):
        run_noise_probe(model, x, y, **kwargs)


def test_inputs_outside_bounds_and_probabilities(setup) -> None:
    model, x, y = setup
    with pytest.raises(AttackConfigError, match="bounds"):
        run_noise_probe(model, x * 16, y, "gaussian")
    with pytest.warns(NonLogitOutputWarning):
        run_noise_probe(nn.Sequential(model, nn.Softmax(dim=1)), x, y, "gaussian", levels=[0.1], draws=1)


def test_pixel_selection_is_the_sorts_pick_ties_included() -> None:
    """The pixels a probe sets are selected (topk) instead of sorted; a row whose scores tie across the cut takes
    argsort's pick, so every mask is the one sorting gave (the records' noise results unchanged)."""
    from attacks.noise import _lowest

    def by_sort(scores: torch.Tensor, count: int) -> torch.Tensor:
        chosen = scores.argsort(dim=1)[:, :count]
        return torch.zeros(scores.shape, dtype=torch.bool).scatter_(1, chosen, True)

    gen = torch.Generator().manual_seed(0)
    uniform = torch.rand((300, 2, 50), generator=gen)[:, 0]  # strided, as _pixel_mask passes it
    coarse = torch.randint(0, 7, (300, 50), generator=gen).float() / 7  # ties everywhere, straddling every cut
    for scores in (uniform, coarse):
        for count in (0, 1, 7, 25, 49, 50):
            assert torch.equal(_lowest(scores, count), by_sort(scores, count)), count
    assert _lowest(coarse[:0], 3).shape == (0, 50)
