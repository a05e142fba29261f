"""Noise probes (attacks/noise.py) and the transfer attack (attacks/transfer.py): the behaviour a mutation-testing
round on these modules found unguarded, pinned by tests that kill its surviving mutants.

Pinned: Numenta's noise score (Ahmad & Scheinkman 2019: correct classifications summed over the noise levels) on a
model whose answer at every level is known in closed form; the pixel count ``floor(level * P)`` and what a pixel is;
the Gaussian and uniform noise's distribution; salt and pepper at the bounds; the probe's value, levels and checks;
the seeding of every draw; the runner's eval mode, no-grad, batches, one clean verdict and probe contract; which
probe a record's noise score is; the transfer attack's seeds and its device comparison.

Every expectation comes from the definition it tests (a closed form, a count by hand, a sample statistic against the
distribution's own moments), never from the code's output."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from attacks import ThreatModel, create_attack
from attacks.base import AttackConfigError
from attacks.cascade import AttackContractError
from attacks.noise import NUMENTA_MNIST_VALUE, create_noise_probe, default_levels, derive_seed, run_noise_probe
from attacks.transfer import same_device as _same_device
from eval_helpers import make_record
from kwta_robust.results import NoiseResult
from test_transfer import batch, mlp
from test_verification_mutants import PairModel, pair_data

BOX = (0.0, 1.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the Numenta score in closed form -----------------------------------------------------------------------------
class MeanAbove(nn.Module):
    """Class 1 iff the mean pixel exceeds ``threshold`` (never exactly equal on the inputs below: no argmax tie)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        d = 10.0 * (x.flatten(1).mean(dim=1) - self.threshold)
        return torch.stack([-d, d], dim=1)


def dark_and_bright(dark: int = 3, bright: int = 2, pixels: int = 20) -> tuple[Tensor, Tensor]:
    """``dark`` all-black inputs of class 0 and ``bright`` all-white ones of class 1, ``[N, pixels]``."""
    x = torch.cat([torch.zeros(dark, pixels), torch.ones(bright, pixels)])
    return x, torch.tensor([0] * dark + [1] * bright)


def numenta_correct_levels(value: float, pixels: int = 20, threshold: float = 0.29) -> int:
    """Levels 0.00, ..., 0.50 at which a black image with ``floor(eta * P)`` pixels at ``value`` stays class 0."""
    return sum(math.floor(Fraction(i, 20) * pixels) * value / pixels < threshold for i in range(11))


@pytest.mark.parametrize(("params", "value"), [({}, 1.0), ({"value": NUMENTA_MNIST_VALUE}, NUMENTA_MNIST_VALUE)])
def test_numenta_score_is_the_correct_classifications_summed_over_levels(params: dict, value: float) -> None:
    """A white image stays white (correct at all 11 levels); a black one is right while its mean stays below 0.29:
    6 levels with white noise pixels, 8 with the paper's 0.747. Score = 3 x that + 2 x 11, for every draw."""
    x, y = dark_and_bright()
    result = run_noise_probe(MeanAbove(0.29), x, y, "numenta", draws=3, seed=7, **params)
    dark_levels = numenta_correct_levels(value)
    assert dark_levels == (6 if value == 1.0 else 8)
    score = 3 * dark_levels + 2 * 11
    assert result.levels == tuple(i / 20 for i in range(11)) and result.draws == 3  # the default levels
    assert result.noise_score == score and result.total_correct == 3 * score
    assert result.accuracy == tuple(1.0 if i < dark_levels else 2 / 5 for i in range(11))
    assert all(row == (acc,) * 3 for row, acc in zip(result.draw_accuracy, result.accuracy))
    assert result.correct_counts.tolist() == [[3] * 5 if i < dark_levels else [0, 0, 0, 3, 3] for i in range(11)]
    data = result.to_dict()
    assert data["noise_score"] == score and data["noise_score_normalized"] == score / (11 * 5)
    assert result.noise_score_normalized == score / (11 * 5)
    assert result.params == {"value": value} and data["params"] == {"value": value} and result.seed == 7


def test_numenta_default_value_is_white_and_levels_are_the_papers() -> None:
    probe = create_noise_probe("numenta")
    assert probe.value == 1.0 and math.isclose(NUMENTA_MNIST_VALUE, 0.1307 + 2 * 0.3081)
    noisy = probe.apply(torch.zeros(3, 40), 0.5, gen(), BOX)
    assert sorted(set(noisy.flatten().tolist())) == [0.0, 1.0]
    # 0.05 * 3 is 0.15000000000000002 in floats: the levels are the decimals 0.00, 0.05, ..., 0.50 as written
    assert default_levels("numenta") == tuple(i / 20 for i in range(11))


def test_numenta_value_is_any_pixel_value_in_the_closed_unit_interval() -> None:
    noisy = create_noise_probe("numenta", value=0.0).apply(torch.ones(4, 20), 0.25, gen(), BOX)
    assert (noisy == 0).sum(dim=1).tolist() == [5] * 4  # black noise is a valid value
    for bad in (1.01, True):
        with pytest.raises(AttackConfigError, match=r"\[0, 1\] scale"):
            create_noise_probe("numenta", value=bad)


# --- pixels -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["numenta", "salt-and-pepper"])
def test_pixel_count_is_the_floor_not_the_nearest(kind: str) -> None:
    """0.45 x 64 = 28.8 pixels: 28 change (the floor), in all channels of an image together."""
    flat = create_noise_probe(kind).apply(torch.full((4, 64), 0.5), 0.45, gen(), BOX)
    assert (flat != 0.5).sum(dim=1).tolist() == [28] * 4
    image = create_noise_probe(kind).apply(torch.full((4, 3, 8, 8), 0.5), 0.45, gen(), BOX)
    changed = image != 0.5
    assert torch.equal(changed.all(dim=1), changed.any(dim=1))
    assert changed.any(dim=1).flatten(1).sum(dim=1).tolist() == [28] * 4


@pytest.mark.parametrize("kind", ["numenta", "salt-and-pepper"])
def test_a_pixel_of_a_five_dimensional_input_is_one_feature(kind: str) -> None:
    """Only NCHW images share a pixel across channels: [N, 2, 2, 2, 2] has 16 pixels, 0.2 of them is 3 (pooling
    the 2 channels would change floor(0.2 x 8) = 1 location in both, 2 features)."""
    noisy = create_noise_probe(kind).apply(torch.full((6, 2, 2, 2, 2), 0.5), 0.2, gen(), BOX)
    assert (noisy != 0.5).flatten(1).sum(dim=1).tolist() == [3] * 6


def test_salt_and_pepper_are_the_bounds_given() -> None:
    noisy = create_noise_probe("salt-and-pepper").apply(torch.full((20, 1, 8, 8), 0.5), 0.5, gen(), (-1.0, 2.0))
    changed = noisy[noisy != 0.5]
    assert changed.numel() == 20 * 32 and set(changed.tolist()) == {-1.0, 2.0}


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "salt-and-pepper", "numenta"])
def test_a_samples_noise_does_not_depend_on_the_samples_after_it(kind: str) -> None:
    """On the CPU the draws fill the inputs row by row (Gaussian: 32 values a sample, a multiple of 16)."""
    x = torch.full((7, 1, 4, 8), 0.5)
    probe = create_noise_probe(kind)
    whole, first = probe.apply(x, 0.3, gen(9), BOX), probe.apply(x[:3], 0.3, gen(9), BOX)
    assert not torch.equal(whole, x) and torch.equal(whole[:3], first)


# --- additive noise: the distribution ------------------------------------------------------------------------------
def additive(kind: str, level: float) -> Tensor:
    """100,000 unclipped noise values at ``level``."""
    x = torch.full((100, 1000), 0.5)
    return (create_noise_probe(kind).apply(x, level, gen(3), BOX) - x).flatten()


def test_gaussian_noise_has_the_level_as_standard_deviation() -> None:
    """N(0, 0.3^2): mean 0, std 0.3 (sampling error about 0.001), 68.27 % within one std."""
    noise = additive("gaussian", 0.3)
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.3) < 0.01
    assert abs(float((noise.abs() <= 0.3).float().mean()) - math.erf(1 / math.sqrt(2))) < 0.01


def test_uniform_noise_fills_the_interval_minus_level_to_level() -> None:
    """U(-0.3, 0.3): inside it, reaching both ends, std 0.3 / sqrt(3), half the values within 0.15 of 0."""
    noise = additive("uniform", 0.3)
    assert float(noise.abs().max()) <= 0.3 + 1e-6 and float(noise.max()) > 0.299 and float(noise.min()) < -0.299
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 0.3 / math.sqrt(3)) < 0.01
    assert abs(float((noise.abs() <= 0.15).float().mean()) - 0.5) < 0.01


# --- the runner ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [math.inf, math.nan, True])
def test_levels_are_finite_numbers(level: float) -> None:
    x, y = pair_data(4)
    with pytest.raises(AttackConfigError, match="levels must be finite numbers"):
        run_noise_probe(PairModel(), x, y, "gaussian", levels=[level], draws=1)


class Watch(PairModel):
    """PairModel that records ``(batch size, grad enabled, training)`` of every call; has a dropout to switch."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.calls: list[tuple[int, bool, bool]] = []
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled(), self.training))
        self.inputs.append(x.clone())
        return super().forward(x)


def test_the_model_runs_in_eval_mode_without_grad_in_batches_and_level_zero_once() -> None:
    """8 samples in batches of 3: [3, 3, 2] per verdict; level 0 is judged once for its 2 draws, 0.5 twice."""
    x, y = pair_data(8)
    model = Watch().train()
    run_noise_probe(model, x, y, "gaussian", levels=[0.0, 0.5], draws=2, batch_size=3)
    assert model.calls == [(3, False, False), (3, False, False), (2, False, False)] * 3
    assert model.training


def test_level_zero_takes_one_verdict_for_all_draws() -> None:
    """A randomized model's verdicts differ per call: level 0's draws all share the one clean verdict."""
    x, y = pair_data(40)
    verdicts = gen(1)
    calls = []

    def verdict(inputs: Tensor, labels: Tensor) -> Tensor:
        calls.append(inputs)
        return torch.rand(len(labels), generator=verdicts) < 0.5

    result = run_noise_probe(PairModel(), x, y, "numenta", levels=[0.0], draws=3, verdict=verdict)
    assert len(calls) == 1 and torch.equal(calls[0], x)
    assert len(set(result.draw_accuracy[0])) == 1 and set(result.correct_counts[0].tolist()) <= {0, 3}


@pytest.mark.parametrize("kind", ["gaussian", "numenta"])
def test_every_draw_has_its_own_documented_seed(kind: str) -> None:
    """Draw d of a level is the probe's output for the generator seeded with derive_seed(seed, probe, level, d)."""
    x = torch.rand(5, 16, generator=gen(2))
    model = Watch()
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    model.inputs.clear()
    run_noise_probe(model, x, y, kind, levels=[0.3], draws=2, seed=4)
    probe = create_noise_probe(kind)
    expected = [probe.apply(x, 0.3, gen(derive_seed(4, kind, 0.3, d)), BOX).clamp(*BOX) for d in range(2)]
    assert len(model.inputs) == 2 and not torch.equal(expected[0], expected[1])
    assert all(torch.equal(seen, want) for seen, want in zip(model.inputs, expected))


def test_derived_seeds_are_63_bit_and_differ_per_probe() -> None:
    seeds = [derive_seed(s, k, lv, d) for s in range(5) for k in ("gaussian", "numenta") for lv in (0.1, 0.5)
             for d in range(5)]
    assert all(0 <= s < 2**63 for s in seeds) and len(set(seeds)) == len(seeds)


@dataclass(frozen=True)
class Faulty:
    """A plug-in probe with a bug: ``fault`` is what it does wrong."""

    fault: str
    name: ClassVar[str] = "faulty"
    level_name: ClassVar[str] = "amount"
    max_level: ClassVar[float | None] = None

    def apply(self, x: Tensor, level: float, generator: torch.Generator, bounds: tuple[float, float]) -> Tensor:
        if self.fault == "raises":
            raise ValueError("boom")
        if self.fault == "refuses":
            raise AttackConfigError("faulty: bad level")
        return {"nan": x + math.nan, "shape": x[:, :1], "dtype": x.double(), "device": x.to("meta")}[self.fault]

    def default_levels(self) -> tuple[float, ...]:
        return (0.0, 0.1)


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        ("nan", AttackContractError, "'faulty' returned NaN or infinite values at level 0.1"),
        ("shape", AttackContractError, r"'faulty' returned \(4, 1\) torch.float32 on cpu at level 0.1"),
        ("dtype", AttackContractError, r"'faulty' returned \(4, 3\) torch.float64"),
        ("device", AttackContractError, r"'faulty' returned \(4, 3\) torch.float32 on meta at level 0.1, expected"),
        ("raises", AttackContractError, "'faulty' raised ValueError: boom at level 0.1; fix the probe"),
        ("refuses", AttackConfigError, "^faulty: bad level$"),
    ],
)
def test_a_faulty_probe_is_one_clear_error(fault: str, error: type, match: str) -> None:
    x, y = pair_data(4)
    with pytest.raises(error, match=match):
        run_noise_probe(PairModel(), x, y, Faulty(fault), levels=[0.1], draws=1)


def test_params_with_a_probe_object_are_refused() -> None:
    x, y = pair_data(4)
    with pytest.raises(AttackConfigError, match="params are only accepted together with a probe name"):
        run_noise_probe(PairModel(), x, y, create_noise_probe("numenta"), levels=[0.1], value=0.5)


def test_the_record_noise_score_is_the_first_numenta_probe() -> None:
    def probe(kind: str, score: float) -> NoiseResult:
        return NoiseResult(kind, [0.0, 0.1], 1, 0, {"noise_score": score}, 0.0)

    record = make_record()
    record.noise = [probe("gaussian", 5.0), probe("numenta", 7.0), probe("numenta", 9.0)]
    assert record.noise_score() == 7.0
    record.noise = [probe("uniform", 5.0)]
    assert record.noise_score() is None


# --- transfer -----------------------------------------------------------------------------------------------------
def test_an_inner_seed_given_wins_over_the_transfer_seed() -> None:
    source = mlp("relu")
    x, y = batch(source)
    threat = ThreatModel("linf", 0.3)
    transferred = create_attack("transfer", source=source, seed=3, inner_params={"steps": 3, "seed": 7})
    own = [create_attack("pgd", steps=3, seed=s)(source, x, y, threat) for s in (7, 3)]
    assert not torch.equal(own[0], own[1])  # the seed matters (random start)
    assert torch.equal(transferred(source, x, y, threat), own[0])


class NoisySource(nn.Module):
    """A randomized source: Gaussian input noise from the global RNG in every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.base = mlp("relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x + 0.2 * torch.randn_like(x))


def test_a_randomized_source_draws_from_the_transfer_seed() -> None:
    """Its draws follow the transfer attack's seed (the inner seed fixed), whatever the global RNG, left as it was."""
    source = NoisySource()
    x, y = batch(source.base)
    threat = ThreatModel("linf", 0.3)

    def run(seed: int, global_seed: int) -> Tensor:
        torch.default_generator.manual_seed(global_seed)
        state = torch.get_rng_state()
        attack = create_attack("transfer", source=source, seed=seed, inner_params={"steps": 3, "seed": 11})
        out = attack(source, x, y, threat)
        assert torch.equal(torch.get_rng_state(), state)
        return out

    with torch.random.fork_rng(devices=[]):
        first, again, other = run(3, 0), run(3, 1), run(4, 0)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_device_comparison() -> None:
    """An index left out is the current (CUDA) or the only (CPU) device; two named indices must agree."""
    cpu, cpu0 = torch.device("cpu"), torch.device("cpu:0")
    assert _same_device(cpu, cpu0) and _same_device(cpu0, cpu) and not _same_device(cpu0, torch.device("cpu:1"))
    assert not _same_device(cpu, torch.device("meta"))


def test_cuda_device_without_index_is_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    cuda, cuda0, cuda1 = torch.device("cuda"), torch.device("cuda:0"), torch.device("cuda:1")
    assert _same_device(cuda, cuda1) and _same_device(cuda1, cuda) and _same_device(cuda, cuda)
    assert not _same_device(cuda, cuda0) and not _same_device(cuda0, cuda) and not _same_device(cuda0, cuda1)
