"""Tests that pin the verification-critical paths a mutation-testing round found unguarded: the threat model's
eps checks, text, distance and membership test; the runner's violation accounting, its refusal of a failed
projection and of malformed resumed flags; the diagnostics' thresholds at their boundaries; the noise probes' pixel
counts, salt/pepper draw and level limits; the shard bounds of an evaluation part.

Every expectation is derived from the definition it tests (a hand-made perturbation, a threshold hit exactly), never
copied from the code's output."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError, ThreatModel, format_eps, parse_eps, threat_text
from attacks.cascade import AttackContractError, run_verified, worst_case
from attacks.noise import create_noise_probe, run_noise_probe
from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.eval_part import EvalPart


class PairModel(nn.Module):
    """Two classes: class 0 iff ``x[:, 0] > x[:, 1]`` (feature 2 and above are ignored)."""

    def forward(self, x: Tensor) -> Tensor:
        d = 10.0 * (x[:, 0] - x[:, 1])
        return torch.stack([d, -d], dim=1)


def pair_data(n: int = 8) -> tuple[Tensor, Tensor]:
    """``n`` samples ``(0.55, 0.45, 0.5)``, all of class 0 (clean-correct, 0.1 from the decision boundary)."""
    x = torch.tensor([[0.55, 0.45, 0.5]]).repeat(n, 1)
    return x, torch.zeros(n, dtype=torch.long)


def shifted(shifts: dict[int, float], feature: int = 2):
    """An attack adding ``shifts[i]`` to feature ``feature`` of sample ``i`` of each batch (others unchanged)."""
    def attack(model: nn.Module, xb: Tensor, yb: Tensor, threat: ThreatModel) -> Tensor:
        out = xb.clone()
        for i, s in shifts.items():
            out[i, feature] += s
        return out

    return attack


# --- attacks.base: eps parsing and text ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "1e999"])
def test_an_infinite_or_nan_eps_is_refused(value: float | str) -> None:
    """An eps of inf (a ball holding every input) or NaN (no comparison holds) is no threat model."""
    with pytest.raises(AttackConfigError, match="finite number >= 0"):
        parse_eps(value)
    with pytest.raises(AttackConfigError):
        ThreatModel("linf", value)


def test_eps_text_is_a_fraction_of_255_only_where_the_eps_is_one() -> None:
    """``8/255`` is written for a multiple of 1/255 alone: an eps just above it (its nearest fraction of 255 lies
    below it) is written as a decimal that reads back as the eps, and ``-0.0`` (a YAML ``-0.0``) as ``0``."""
    assert format_eps(8 / 255) == "8/255" and format_eps(1.0) == "1" and format_eps(0.0) == "0"
    for eps in (8 / 255 + 1e-6, 8 / 255 - 1e-6):
        assert Fraction(eps).limit_denominator(255) == Fraction(8, 255)  # the nearest fraction is 8/255 ...
        text = format_eps(eps)
        assert "/" not in text and math.isclose(parse_eps(text), eps, rel_tol=5e-6)  # 6 digits: not 8/255
    assert format_eps(-0.0) == "0"


def test_threat_text_writes_the_eps_as_the_tables_do() -> None:
    assert threat_text("linf", 8 / 255) == "Linf 8/255"
    assert threat_text("l2", 0.5) == "L2 0.5"
    assert threat_text("linf", "8/255") == "Linf 8/255"  # the config's own text is kept
    assert threat_text("l2", 2 / 3) == "L2 0.666667"


def test_bounds_must_be_an_interval_with_room() -> None:
    with pytest.raises(AttackConfigError, match="lower bound must be below upper bound"):
        ThreatModel("linf", 0.1, (0.5, 0.5))


# --- attacks.base: distance and membership ------------------------------------------------------------------------
def test_linf_distance_counts_perturbations_in_both_directions() -> None:
    threat = ThreatModel("linf", 0.1)
    x = torch.full((2, 3), 0.5)
    x_adv = x.clone()
    x_adv[0, 1] -= 0.25  # downwards only
    x_adv[1, 2] += 0.125
    assert threat.distance(x_adv, x).tolist() == [0.25, 0.125]
    assert threat.contains(x_adv, x).tolist() == [False, False]


def test_contains_is_the_closed_ball_inside_the_bounds() -> None:
    """Hand-made points around ``x = 0.5`` at Linf 0.25 (all values exact in binary), checked without tolerance."""
    threat = ThreatModel("linf", 0.25)
    x = torch.full((6, 4), 0.5)
    x[3:, 0] = 0.125  # near the lower bound for rows 3..5
    x[4, 1] = 0.875  # near the upper bound for row 4
    x_adv = x.clone()
    x_adv[0] += 0.25  # on the sphere: inside the closed ball
    x_adv[1, 0] += 0.375  # one coordinate past eps, inside the bounds
    x_adv[2, 0] -= 0.375  # the same downwards
    x_adv[3, 0] -= 0.25  # inside the ball, one coordinate below the lower bound (-0.125)
    x_adv[4, 1] += 0.1875  # inside the ball, one coordinate above the upper bound (1.0625)
    assert threat.contains(x_adv, x, atol=0.0).tolist() == [True, False, False, False, False, True]


def test_l2_membership_uses_the_euclidean_norm() -> None:
    """A (0.3, 0.4) perturbation has L2 norm 0.5: outside L2 0.45 though each coordinate is below 0.45."""
    x = torch.full((1, 2), 0.5)
    x_adv = x + torch.tensor([[0.3, 0.4]])
    assert not bool(ThreatModel("l2", 0.45).contains(x_adv, x).any())
    assert bool(ThreatModel("l2", 0.5).contains(x_adv, x).all())


# --- attacks.cascade: the runner's verification -------------------------------------------------------------------
def test_violations_downwards_are_measured_and_the_largest_is_reported() -> None:
    """Sample 0 moves feature 2 down by 0.5 at Linf 0.1 (excess 0.4), sample 1 by 0.05 (inside), sample 2 up by
    0.25 (excess 0.15): two violations, the largest 0.4, both projected onto the sphere."""
    x, y = pair_data()
    threat = ThreatModel("linf", 0.1)
    outcome = run_verified(PairModel(), shifted({0: -0.5, 1: -0.05, 2: 0.25}), x, y, threat)
    assert outcome.violation.tolist() == pytest.approx([0.4, 0.0, 0.15] + [0.0] * 5, abs=1e-6)
    assert outcome.n_violations == 2
    assert outcome.max_violation == pytest.approx(0.4, abs=1e-6)
    assert outcome.x_adv[:3, 2].tolist() == pytest.approx([0.4, 0.45, 0.6], abs=1e-6)
    assert bool(threat.contains(outcome.x_adv, x).all())


def test_an_output_inside_the_ball_is_no_violation_without_tolerance() -> None:
    x, y = pair_data(4)
    for norm in ("linf", "l2"):
        outcome = run_verified(PairModel(), shifted({0: 0.05}), x, y, ThreatModel(norm, 0.1), atol=0.0)
        assert outcome.n_violations == 0 and outcome.max_violation == 0.0


def test_outputs_on_the_linf_sphere_are_no_violations_despite_float_rounding() -> None:
    """``x + eps * sign`` in float32 lies up to an ulp of ``x`` past eps (float32 0.1 is itself above 0.1): float
    rounding, which ``atol`` absorbs, not a violation."""
    threat = ThreatModel("linf", 0.1)
    gen = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(64, 10, generator=gen)
    y = PairModel()(x).argmax(dim=1)
    sign = torch.randn(64, 10, generator=gen).sign()

    def on_sphere(model: nn.Module, xb: Tensor, yb: Tensor, t: ThreatModel) -> Tensor:
        return xb + t.eps * sign

    assert bool((threat.distance(on_sphere(PairModel(), x, y, threat), x) > threat.eps).any())  # rounding occurs
    outcome = run_verified(PairModel(), on_sphere, x, y, threat)
    assert outcome.n_violations == 0 and outcome.max_violation < 1e-6


@pytest.mark.parametrize("threat", [ThreatModel("linf", 0.1), ThreatModel("l2", 3.0)], ids=["linf", "l2"])
def test_an_output_past_the_bounds_is_a_violation_whatever_the_norm(threat: ThreatModel) -> None:
    """The bounds are absolute: a value 2e-5 above 1 is no float rounding of a value in [0, 1] (its ulp is 6e-8),
    at any norm and eps. The L2 slack (1e-5 of eps, 3e-5 at eps 3, for the rounding of a norm over many coordinates)
    hid it at L2: counted at Linf 0.1, not at L2 3, though ``contains`` said it was outside."""
    x, y = pair_data(4)
    x[:, 2] = 0.999
    attack = shifted({i: 0.001 + 2e-5 for i in range(4)})
    raw = attack(PairModel(), x, y, threat)
    assert not bool(threat.contains(raw, x).any())
    outcome = run_verified(PairModel(), attack, x, y, threat)
    assert outcome.n_violations == 4 and outcome.max_violation == pytest.approx(2e-5, rel=0.05)
    assert bool((outcome.x_adv[:, 2] == 1.0).all())


def test_small_violations_are_counted_but_only_large_ones_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """``warn_above``: a violation larger than it is logged; every violation past the float slack is counted."""
    x, y = pair_data(4)
    threat = ThreatModel("linf", 0.1)
    with caplog.at_level(logging.WARNING, logger="attacks.cascade"):
        small = run_verified(PairModel(), shifted({i: 0.1 + 5e-5 for i in range(4)}), x, y, threat)
    assert small.n_violations == 4 and 1e-6 < small.max_violation < 1e-4
    assert "outputs lay outside" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="attacks.cascade"):
        large = run_verified(PairModel(), shifted({i: 0.1 + 5e-4 for i in range(4)}), x, y, threat)
    assert large.n_violations == 4 and "4 of 4 outputs lay outside the Linf 0.1 ball" in caplog.text


def test_a_projection_that_leaves_points_outside_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner checks its own projection: a threat model whose ``project`` does nothing must stop the run, not
    let an out-of-ball input be scored."""
    x, y = pair_data(4)
    monkeypatch.setattr(ThreatModel, "project", lambda self, x_adv, x: x_adv)
    with pytest.raises(AttackContractError, match="projection onto .* failed for attack"):
        run_verified(PairModel(), shifted({0: 0.5}), x, y, ThreatModel("linf", 0.1))
    assert run_verified(PairModel(), shifted({0: 0.05}), x, y, ThreatModel("linf", 0.1)).n_violations == 0


def test_resumed_flags_must_belong_to_an_attack_of_the_list_and_cover_every_sample() -> None:
    x, y = pair_data(4)
    threat, attacks = ThreatModel("linf", 0.1), [shifted({}), shifted({})]
    ones = torch.ones(4, dtype=torch.int8)
    with pytest.raises(AttackConfigError, match="completed: attack index 2 out of range for 2 attacks"):
        worst_case(PairModel(), x, y, threat, attacks, completed={2: ones})
    for bad in (torch.ones(1, dtype=torch.int8), torch.ones(3, dtype=torch.int8)):
        with pytest.raises(AttackConfigError, match=r"completed\[0\]: expected flags of shape \[4\]"):
            worst_case(PairModel(), x, y, threat, attacks, completed={0: bad})


def test_an_evaluation_part_holds_at_least_one_sample() -> None:
    with pytest.raises(ConfigError, match="0 <= start < stop"):
        EvalPart("attacks", start=3, stop=3)
    assert EvalPart("attacks", start=3, stop=4).samples


# --- kwta_robust.diagnostics: thresholds at their boundaries ------------------------------------------------------
def codes(record, thresholds: Thresholds | None = None) -> list[str]:
    return [f.code for f in run_checks(record, thresholds)]


def test_beating_the_reference_by_exactly_the_margin_is_flagged() -> None:
    """``wide_margin``: flagged when the other attack breaks *at least* this fraction of n among the reference's
    survivors: 2 of 40 is 0.05 exactly (and 2 = min_count)."""
    pgd = make_result("pgd", [1] * 4 + [0] * 36)
    bpda = make_result("bpda", [0, 0, 1, 1] + [-1] * 36, kind="bpda", position=1, cumulative=True)
    assert 2 / 40 == Thresholds().wide_margin
    assert codes(make_record([pgd, bpda])) == ["adaptive-beats-pgd"]


def test_the_margin_is_a_fraction_of_all_samples_not_of_the_survivors() -> None:
    """3 of pgd's 10 survivors among 100 samples: 3 % of n, below the 5 % margin (30 % of the survivors)."""
    pgd = make_result("pgd", [1] * 10 + [0] * 90)
    bpda = make_result("bpda", [0] * 3 + [1] * 7 + [-1] * 90, kind="bpda", position=1, cumulative=True)
    assert codes(make_record([pgd, bpda])) == []


def test_each_check_uses_its_own_margin() -> None:
    """Each of fgsm, bpda and square breaks 2 of pgd's 6 survivors (20 % of 10): above the single-step margin
    (10 %), below the wide margin (30 %) that the adaptive and black-box checks use."""
    thr = Thresholds(wide_margin=0.3, single_step_margin=0.1, min_count=1)
    pgd = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    fgsm = make_result("fgsm", [0, 0, 1, 1, 1, 1, 0, 0, 0, 0], single_step=True, position=1)
    bpda = make_result("bpda", [1, 1, 0, 0, 1, 1, 0, 0, 0, 0], kind="bpda", position=2)
    square = make_result("square", [1, 1, 1, 1, 0, 0, 0, 0, 0, 0], kind="black-box", position=3)
    assert codes(make_record([pgd, fgsm, bpda, square], mode="independent"), thr) == ["single-step-beats-iterative"]
    wide = Thresholds(wide_margin=0.2, single_step_margin=0.3, min_count=1)
    assert sorted(codes(make_record([pgd, fgsm, bpda, square], mode="independent"), wide)) == [
        "adaptive-beats-pgd", "black-box-beats-white-box"]


def test_a_single_step_attack_is_no_part_of_the_reference() -> None:
    """The reference is the iterative white-box attacks (the strongest gradient attack): fgsm breaking the same two
    of pgd's survivors as bpda and square does not hide bpda's and square's edge over pgd."""
    pgd = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    fgsm = make_result("fgsm", [0, 0, 1, 1, 1, 1, 0, 0, 0, 0], single_step=True, position=1)
    bpda = make_result("bpda", [0, 0, 1, 1, 1, 1, 0, 0, 0, 0], kind="bpda", position=2)
    square = make_result("square", [0, 0, 1, 1, 1, 1, 0, 0, 0, 0], kind="black-box", position=3)
    flags = {f.code: f for f in run_checks(make_record([pgd, fgsm, bpda, square], mode="independent"))}
    assert sorted(flags) == ["adaptive-beats-pgd", "black-box-beats-white-box", "single-step-beats-iterative"]
    assert {f.evidence["reference"] for f in flags.values()} == {"pgd"}


def test_a_rise_of_exactly_the_tolerance_is_allowed() -> None:
    """``eps_monotonic_tolerance``: accuracy may rise by at most this much: 50 % → 75 % at tolerance 0.25 passes,
    50 % → 100 % does not."""
    thr = Thresholds(eps_monotonic_tolerance=0.25)
    low = make_result("pgd", [1, 1, 0, 0], eps=0.1)
    assert codes(make_record([low, make_result("pgd", [1, 1, 1, 0], eps=0.2)]), thr) == []
    assert "eps-not-monotonic" in codes(make_record([low, make_result("pgd", [1, 1, 1, 1], eps=0.2)]), thr)


def test_eps_are_compared_in_increasing_order_whatever_the_record_order() -> None:
    """Thresholds listed large to small: accuracy falling with eps (20 % at 0.3, 60 % at 0.1) is no rise."""
    high = make_result("pgd", [1, 1, 0, 0, 0, 0, 0, 0, 0, 0], eps=0.3)
    low = make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], eps=0.1)
    assert codes(make_record([high, low])) == []
    rising = [make_result("pgd", [1] * 6 + [0] * 4, eps=0.3), make_result("pgd", [1] * 2 + [0] * 8, eps=0.1)]
    messages = [f.message for f in run_checks(make_record(rising)) if f.code == "eps-not-monotonic"]
    assert messages and all("20.0% at 0.1 → 60.0% at 0.3" in m for m in messages)


def test_a_sanity_attack_leaving_exactly_the_allowed_accuracy_passes() -> None:
    """``large_eps_max_accuracy``: the sanity attack must leave *at most* this: 1 of 4 at 0.25 passes."""
    thr = Thresholds(large_eps_max_accuracy=0.25)
    pgd = make_result("pgd", [1, 0, 0, 0])
    assert codes(make_record([pgd], sanity=[make_result("sanity-pgd", [1, 0, 0, 0], eps=1.0)]), thr) == []
    assert codes(make_record([pgd], sanity=[make_result("sanity-pgd", [1, 1, 0, 0], eps=1.0)]), thr) == [
        "large-eps-not-zero"]


def test_a_larger_budget_breaking_exactly_the_margin_is_flagged() -> None:
    """``ladder_margin``: 2 of pgd(steps=10)'s survivors among 8 samples is 0.25, the margin: flagged."""
    thr = Thresholds(ladder_margin=0.25)
    small = make_result("pgd-10", [1, 1, 1, 1, 0, 0, 0, 0], attack="pgd", params={"steps": 10})
    large = make_result("pgd-100", [0, 0, 1, 1, -1, -1, -1, -1], attack="pgd", position=1, cumulative=True,
                        params={"steps": 100})
    assert codes(make_record([small, large]), thr) == ["budget-still-lowering"]


def test_out_of_ball_outputs_of_the_sanity_attack_are_reported() -> None:
    sanity = make_result("sanity-pgd", [0] * 10, eps=1.0, violations=2)
    flag, = run_checks(make_record([make_result("pgd", [1] * 10)], sanity=[sanity]))
    assert flag.code == "out-of-ball-outputs" and "sanity-pgd at Linf 1: 2" in flag.message


# --- attacks.noise ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["numenta", "salt-and-pepper"])
@pytest.mark.parametrize("level", ["0.29", "0.57"])
def test_the_pixel_count_is_the_floor_of_the_decimal_level(kind: str, level: str) -> None:
    """``floor(level * P)`` of the level as written: 0.29 x 100 pixels is 29 (in floats 28.999999999999996)."""
    x = torch.full((5, 100), 0.5)
    noisy = create_noise_probe(kind).apply(x, float(level), torch.Generator().manual_seed(0), (0.0, 1.0))
    expected = math.floor(Fraction(level) * 100)
    assert (noisy != 0.5).sum(dim=1).tolist() == [expected] * 5


def test_salt_and_pepper_are_equally_likely() -> None:
    """p = 1/2 each: 10,000 noisy pixels, salt within 6 standard deviations (0.005 each) of one half."""
    x = torch.full((50, 1, 20, 20), 0.5)
    noisy = create_noise_probe("salt-and-pepper").apply(x, 0.5, torch.Generator().manual_seed(0), (0.0, 1.0))
    changed = noisy[noisy != 0.5]
    assert changed.numel() == 10_000
    assert abs(float((changed == 1.0).float().mean()) - 0.5) < 0.03


@pytest.mark.parametrize("kind", ["numenta", "salt-and-pepper"])
def test_the_largest_level_is_allowed(kind: str) -> None:
    """A fraction of pixels lies in [0, 1]: level 1.0 (every pixel) is a level, above it is not."""
    x, y = pair_data(4)
    result = run_noise_probe(PairModel(), x, y, kind, levels=[0.0, 1.0], draws=1)
    assert result.levels == (0.0, 1.0) and result.accuracy[0] == 1.0
    with pytest.raises(AttackConfigError, match=r"in \[0, 1.0\]"):
        run_noise_probe(PairModel(), x, y, kind, levels=[1.0 + 1e-9], draws=1)
