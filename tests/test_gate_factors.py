"""Boosted top-k gates (Numenta's ``KWinners``: winners chosen on ``b_u · x``, one factor per unit): the probe fits
the factors from the outside and BPDA's smooth surrogate relaxes the boosted scores instead of the raw values."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gate_factors import BOOSTED_ORDERED_FRACTION, boosted_factors, fit_unit_factors, ranking_agreement
from attacks.gates import gate_fit, group_rows, infer_grouping, per_unit, relaxed_gate
from bpda_helpers import assert_bpda_matches_relaxed
from kwta_robust.detect import detect_layers


class BoostedTopK(nn.Module):
    """Exactly ``k`` winners per sample on the scores ``factors[u] · x`` (features of ``[N, F]``, channels of
    ``[N, C, H, W]``; winners over all C·H·W, or with ``local`` over the C channels at each position); the unboosted
    ``x`` is kept."""

    def __init__(self, factors: Tensor, k: int, local: bool = False) -> None:
        super().__init__()
        self.register_buffer("factors", factors)
        self.k, self.local = k, local

    def forward(self, x: Tensor) -> Tensor:
        scores = x * per_unit(self.factors, x)
        dim = 1 if self.local else -1
        scores = scores if self.local else scores.flatten(1)
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(dim, scores.topk(self.k, dim=dim).indices, True)
        return x * keep.view_as(x)


def _factors(n: int, seed: int = 0) -> Tensor:
    """Log-uniform in [0.4, 2.5] (Numenta's exp(β (target − duty cycle)) at β ≈ 1.5 spans about that)."""
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.rand(n, generator=g) * 1.83 - 0.92)


def _winners_agreement(gate: BoostedTopK, factors: Tensor, x: Tensor) -> float:
    """Fraction of elements of ``x`` where the top-k of ``factors · x`` agrees with the gate's winners."""
    predicted = BoostedTopK(factors, gate.k, gate.local)(x) != 0
    return float((predicted == (gate(x) != 0)).float().mean())


@pytest.mark.parametrize("shape, grouping", [((96, 8, 6, 6), "volume"), ((24, 8, 6, 6), "local"),
                                             ((160, 40), "dense")])
def test_the_fitted_factors_predict_the_winners_of_unseen_inputs(shape: tuple[int, ...], grouping: str) -> None:
    g = torch.Generator().manual_seed(1)
    local = grouping == "local"
    gate = BoostedTopK(_factors(shape[1]), k=2 if local else torch.Size(shape[1:]).numel() // 8, local=local)
    x_fit, x_new = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    fit = infer_grouping(x_fit, gate(x_fit))
    assert fit is not None and fit.grouping == grouping and fit.ordered_fraction < BOOSTED_ORDERED_FRACTION
    factors, ordered = fit_unit_factors(x_fit, gate(x_fit), grouping)
    assert factors.shape == (shape[1],) and bool((factors > 0).all()) and ordered >= BOOSTED_ORDERED_FRACTION
    assert abs(float(factors.log().mean())) < 1e-5  # geometric mean 1
    fitted, raw = _winners_agreement(gate, factors, x_new), _winners_agreement(gate, torch.ones(shape[1]), x_new)
    assert fitted > 0.99 and 1 - fitted < (1 - raw) / 4  # most of the raw ranking's mistakes gone
    again, _ = fit_unit_factors(x_fit, gate(x_fit), grouping)
    assert torch.equal(again, factors)  # deterministic


@pytest.mark.parametrize("dtype, scale", [(torch.float16, 1.0), (torch.bfloat16, 1.0), (torch.float64, 1.0),
                                          (torch.float32, 1e-30), (torch.float32, 1e30), (torch.float16, 1e-4)])
def test_the_fit_holds_in_half_precision_and_at_extreme_scales(dtype: torch.dtype, scale: float) -> None:
    """Bounds are ratios of activations: worked out in at least float32, and signs compared without products (two
    tiny values multiply to 0), so half-precision models and any activation scale get finite factors."""
    x = torch.randn(32, 8, 5, 5, generator=torch.Generator().manual_seed(7)) * scale
    gate = BoostedTopK(_factors(8), k=20)
    factors, ordered = fit_unit_factors(x.to(dtype), gate(x).to(dtype), "volume")
    assert factors.dtype == torch.promote_types(dtype, torch.float32) and bool(torch.isfinite(factors).all())
    assert ordered >= BOOSTED_ORDERED_FRACTION


def test_only_gates_that_rank_other_scores_than_value_or_magnitude_get_factors() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 4, 6, 6, generator=g)
    plain = BoostedTopK(torch.ones(4), k=20)
    assert boosted_factors(x, plain(x), infer_grouping(x, plain(x))) is None  # winners are the largest values
    boosted = BoostedTopK(_factors(4), k=20)
    found = boosted_factors(x, boosted(x), infer_grouping(x, boosted(x)))
    assert found is not None and found.ordered_fraction >= BOOSTED_ORDERED_FRACTION
    assert found.heldout_agreement > found.value_heldout_agreement
    assert set(found.evidence()) == {"score_factors", "boosted_ordered_fraction", "boosted_heldout_agreement",
                                     "value_heldout_agreement"}
    # per channel, a channel's factor changes no ranking: nothing to fit
    per_channel = x * (x.flatten(2) >= x.flatten(2).topk(5, dim=2).values[..., -1:]).view_as(x)
    assert boosted_factors(x, per_channel, gate_fit(x, per_channel, "channel")) is None
    magnitude = x * (x.abs().flatten(1) >= x.abs().flatten(1).topk(20, dim=1).values[:, -1:]).view_as(x)
    assert boosted_factors(x, magnitude, gate_fit(x, magnitude, "volume")) is None


@pytest.mark.parametrize("spread, adopted", [(0.05, False), (1.8, True)])
def test_factors_are_adopted_only_where_they_predict_unseen_groups_better_than_the_values(spread: float,
                                                                                         adopted: bool) -> None:
    """A dense gate of 700 units on 64 inputs: each unit wins in a few groups only, so its fitted factor is a rough
    guess. With strong boosting (factors spread over e^±0.9) the guesses still predict the winners of held-out
    groups better than the raw values; with weak boosting (e^±0.025) their noise outweighs the boosting, and the
    gate stays relaxed on its values."""
    g = torch.Generator().manual_seed(11)
    factors = torch.exp(torch.rand(700, generator=g) * spread - spread / 2)
    gate = BoostedTopK(factors, 70)
    x = torch.randn(64, 700, generator=g)
    fit = infer_grouping(x, gate(x))
    assert fit is not None and fit.ordered_fraction < BOOSTED_ORDERED_FRACTION
    found = boosted_factors(x, gate(x), fit)
    assert (found is not None) == adopted
    assert fit_unit_factors(x, gate(x), "dense")[1] >= BOOSTED_ORDERED_FRACTION  # the held-out check decides


def test_the_boosted_relaxation_is_the_value_relaxation_of_the_boosted_scores() -> None:
    g = torch.Generator().manual_seed(3)
    x, factors = torch.randn(6, 4, 5, 5, generator=g), _factors(4)
    out = BoostedTopK(factors, 12)(x)
    boosted = per_unit(factors, x)
    expected = relaxed_gate(x * boosted, out * boosted, "volume", 0.1) / boosted
    assert torch.allclose(relaxed_gate(x, out, "volume", 0.1, "boosted", factors), expected, atol=1e-6)
    assert not torch.allclose(relaxed_gate(x, out, "volume", 0.1), expected, atol=1e-3)
    with pytest.raises(ValueError, match="one factor per unit along dim 1 \\(4\\), got 3"):
        relaxed_gate(x, out, "volume", 0.1, "boosted", factors[:3])


def test_a_layer_target_with_boosted_scores_carries_its_factors() -> None:
    target = LayerTarget.of({"kind": "gate", "grouping": "volume", "score": "boosted", "factors": [0.5, 2]})
    assert target.factors == (0.5, 2.0) and target.describe() == "gate/volume/boosted"
    for bad, message in [({"score": "boosted"}, "score 'boosted' goes with factors"),
                         ({"factors": [1.0]}, "score 'boosted' goes with factors"),
                         ({"score": "boosted", "factors": [1.0, -2.0]}, "positive finite numbers"),
                         ({"score": "boosted", "factors": []}, "positive finite numbers"),
                         ({"score": "boosted", "factors": "1,2"}, "a list of numbers, got str"),
                         ({"score": "boosted", "factors": [None]}, "positive finite numbers"),
                         ({"score": "boosted", "factors": ["1.5", 2]}, "positive finite numbers"),
                         ({"score": "boosted", "factors": [True, 2]}, "positive finite numbers"),
                         ({"score": "boosted", "factors": [[1.0]]}, "positive finite numbers")]:
        with pytest.raises(AttackConfigError, match=message):
            LayerTarget.of({"kind": "gate", "grouping": "volume", **bad})


def test_the_probe_finds_the_factors_and_bpda_relaxes_the_boosted_scores() -> None:
    g = torch.Generator().manual_seed(4)
    factors = _factors(8, seed=5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3), BoostedTopK(factors, 40), nn.Flatten(), nn.Linear(288, 3)).eval()
    x = torch.rand(64, 1, 8, 8, generator=g)
    detection = detect_layers(model, x)
    finding = detection.finding("1")
    assert finding.grouping == "volume" and finding.evidence["boosted_ordered_fraction"] >= BOOSTED_ORDERED_FRACTION
    target = detection.auto_targets()["1"]
    assert target.score == "boosted" and target.factors == tuple(finding.evidence["score_factors"])
    fitted = torch.tensor(target.factors)
    assert _winners_agreement(model[1], fitted, model[0](torch.rand(64, 1, 8, 8, generator=g))) > 0.99
    assert_bpda_matches_relaxed(model, detection.auto_targets(), "1", x, lambda t: model[3](relaxed_gate(
        model[0](t), model[1](model[0](t).detach()), "volume", 0.1, "boosted", fitted).flatten(1)))


def test_factors_that_do_not_fit_a_call_fall_back_to_the_values_with_one_warning(caplog) -> None:
    """A call at a width the probe never saw (control flow that depends on the input) is relaxed on its values, with
    one warning, instead of stopping the attack."""
    model = nn.Sequential(BoostedTopK(_factors(6), 10), nn.Flatten(), nn.Linear(6 * 9, 2)).eval()
    x = torch.rand(2, 6, 3, 3, generator=torch.Generator().manual_seed(8))
    target = LayerTarget("gate", "volume", "boosted", (1.0, 1.0, 1.0))
    assert_bpda_matches_relaxed(model, {"0": target}, "0", x, lambda t: model[2](
        relaxed_gate(t, model[0](t.detach()), "volume", 0.1).flatten(1)))
    caplog.clear()
    with caplog.at_level("WARNING", logger="attacks.bpda_wrap"), attached_backward(model, {"0": target}) as controllers:
        controllers["0"].set_backward("smooth", 0.1)
        for _ in range(3):
            model(x.clone().requires_grad_(True)).sum().backward()
    warnings = [r.getMessage() for r in caplog.records if "boosted-score factors" in r.getMessage()]
    assert len(warnings) == 1 and "its 3 boosted-score factors do not match the 6 units" in warnings[0]


def test_the_boosted_relaxation_stays_finite_in_half_precision() -> None:
    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    factors = torch.tensor([1e-8, 1.0, 1e8])
    out = BoostedTopK(factors, 8)(x)
    relaxed = relaxed_gate(x.half(), out.half(), "volume", 0.1, "boosted", factors)
    assert relaxed.dtype == torch.float16 and bool(torch.isfinite(relaxed).all())


def test_a_large_input_is_fitted_on_every_few_groups(monkeypatch) -> None:
    import attacks.gate_factors as gate_factors

    g = torch.Generator().manual_seed(10)
    gate = BoostedTopK(_factors(8), k=36)
    x_fit, x_new = torch.randn(96, 8, 6, 6, generator=g), torch.randn(96, 8, 6, 6, generator=g)
    monkeypatch.setattr(gate_factors, "MAX_FIT_ELEMENTS", 288 * 24)  # every 4th of the 96 samples
    factors, ordered = gate_factors.fit_unit_factors(x_fit, gate(x_fit), "volume")
    assert ordered >= BOOSTED_ORDERED_FRACTION
    assert _winners_agreement(gate, factors, x_new) > _winners_agreement(gate, torch.ones(8), x_new) + 0.02


def test_the_nupic_zoo_gates_with_trained_duty_cycles_rank_boosted_scores() -> None:
    """nupic.torch-style ``KWinners2d`` / ``KWinners`` with per-unit duty cycles (β = 1.5): every gate is found on
    boosted scores, and the fitted factors rank the convolutional gates' winners on unseen images as the module's
    own boosted scores do (its duty cycles are not read: the fit sees inputs and outputs only); the raw values miss
    about 6% of them."""
    from kwta_robust.data import load_dataset
    from kwta_robust.zoo import nupic_sparse_cnn
    from kwta_robust.zoo.nupic_layers import KWinners, KWinners2d

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nupic_sparse_cnn(boost_strength=1.5).eval()
    g = torch.Generator().manual_seed(1)
    gates = {n: m for n, m in model.named_modules() if isinstance(m, (KWinners, KWinners2d))}
    for module in gates.values():  # as after training: a duty cycle per unit or channel
        module.duty_cycle.copy_(torch.rand(module.duty_cycle.shape, generator=g) * 0.4)
    data = load_dataset("mnist5k", "test").x
    detection = detect_layers(model, data[:64], seed=0)
    assert all(detection.target(n).score == "boosted" for n in gates)
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: inputs.__setitem__(n, a[0])) for n, m in gates.items()]
    with torch.no_grad():
        model(data[200:264])
    for hook in hooks:
        hook.remove()
    for name in ("cnn1_kwinner", "cnn2_kwinner"):
        module, x = gates[name], inputs[name]
        x = x + 1e-2 * x.std() * torch.randn(x.shape, generator=g)  # the images' background ties broken
        win = group_rows(module(x.clone()), "volume") != 0
        agreement = {}
        fitted = torch.tensor(detection.target(name).factors)
        for label, factors in (("fitted", fitted), ("raw", torch.ones(x.shape[1]))):
            ranks = group_rows(x * per_unit(factors, x), "volume").argsort(1, descending=True).argsort(1)
            agreement[label] = float(((ranks < win.sum(1, keepdim=True)) == win).float().mean())
        assert agreement["fitted"] > 0.999 and agreement["raw"] < 0.97, agreement


class WidthBoostedTopK(nn.Module):
    """A boosted gate for any width: factor ``exp(sin(u))`` for unit ``u``, a quarter of the units win."""

    def forward(self, x: Tensor) -> Tensor:
        factors = torch.exp(torch.sin(torch.arange(x.shape[1], dtype=x.dtype)))
        return BoostedTopK(factors, x.shape[1] // 4)(x)


def test_factors_of_a_gate_shared_by_two_widths_or_groupings_are_dropped_and_the_notes_show_the_fit() -> None:
    from eval_helpers import make_record
    from kwta_robust.layer_text import layer_notes

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.gate, self.b = nn.Linear(6, 12), WidthBoostedTopK(), nn.Linear(12, 24)

        def forward(self, x: Tensor) -> Tensor:
            return self.gate(self.b(self.gate(self.a(x))))

    class Once(Shared):
        def forward(self, x: Tensor) -> Tensor:
            return self.b(self.gate(self.a(x)))

    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(6))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        once, shared = Once().eval(), Shared().eval()
    found = detect_layers(once, x)
    assert found.target("gate").score == "boosted" and len(found.target("gate").factors) == 12
    record = make_record()
    record.detection = found.to_dict()
    factors = found.finding("gate").evidence["score_factors"]
    assert layer_notes(record) == [f"layer probe (64 inputs, 3 leaf modules): gate (WidthBoostedTopK): top-k gate "
                                   f"(dense, k=3/12, on boosted scores: 12 unit factors fitted, {min(factors):.2f}–"
                                   f"{max(factors):.2f})"]
    found = detect_layers(shared, x)
    assert found.finding("gate").evidence["calls"] == 2 and "score_factors" not in found.finding("gate").evidence
    assert found.target("gate").score == "value"

    class TwoGroupings(nn.Module):  # one boosted gate of width 8: volume on [N, 8, 6, 6] (k 40), dense on [N, 8] (k 2)
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.gate, self.dense = nn.Conv2d(1, 8, 3), BoostedTopK(_factors(8, seed=5), 40), nn.Linear(8, 8)

        def forward(self, x: Tensor) -> Tensor:
            h = self.gate(self.conv(x)).mean(dim=(2, 3))
            self.gate.k = 2
            try:
                return self.gate(self.dense(h))
            finally:
                self.gate.k = 40

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TwoGroupings().eval()
    found = detect_layers(model, torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(4)))
    finding = found.finding("gate")
    assert finding.grouping is None and "score_factors" not in finding.evidence  # BPDA reads each call
    record.detection = found.to_dict()
    assert "boosted" not in layer_notes(record)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bpda_relaxes_boosted_scores_without_float64_on_an_accelerator(dtype: torch.dtype) -> None:
    """The factors reach the relaxation in its working dtype (float32 for float32 and float16 inputs), made once per
    device: float64 is slow on a GPU and missing on MPS. The ``meta`` device stands in for the accelerator (shapes
    and dtypes only); every torch call of the forward and of the surrogate in the backward is recorded."""
    from torch.overrides import TorchFunctionMode

    class Dtypes(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.float64: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, Tensor) and t.dtype == torch.float64:
                    self.float64.append(getattr(func, "__name__", str(func)))
            return out

    model = nn.Sequential(BoostedTopK(_factors(6), 10), nn.Flatten(), nn.Linear(6 * 9, 2)).to("meta", dtype).eval()
    target = LayerTarget("gate", "volume", "boosted", tuple(float(f) for f in _factors(6, seed=3)))
    x = torch.empty(2, 6, 3, 3, device="meta", dtype=dtype)
    with attached_backward(model, {"0": target}) as controllers, Dtypes() as seen:
        controllers["0"].set_backward("smooth", 0.1)
        for _ in range(2):
            xg = x.clone().requires_grad_(True)
            model(xg).sum().backward()
            assert xg.grad is not None and xg.grad.shape == x.shape
    assert seen.float64 == []
    factors = controllers["0"]._factors_tensor
    assert factors.device.type == "meta" and factors.dtype == torch.float32


def test_ranking_agreement_breaks_ties_by_position_on_every_device() -> None:
    """Tied scores (the zeros a ReLU leaves) rank in index order, as a stable sort gives on the CPU and on CUDA
    alike; an unstable sort of a 5,000-wide row ranked them in another order (agreement 0.96 here)."""
    rows = torch.zeros(3, 5000)
    rows[:, ::7] = 1.0
    winners = int((rows[0] == 1).sum()) + 100  # every 1 and the first 100 zeros by position
    win = torch.zeros(3, 5000, dtype=torch.bool)
    win[:, rows[0].argsort(descending=True, stable=True)[:winners]] = True
    units = torch.zeros(3, 5000, dtype=torch.long)
    assert ranking_agreement(rows, win, units, torch.ones(1)) == 1.0


def _boosted_rows(impossible: tuple[int, ...] = (), alternate: bool = False) -> tuple[Tensor, Tensor]:
    """20 samples of 6 units whose top-2 on boosted scores (units 0-2 boosted over 3-5) are units 0 and 1, never
    the two largest values 3 and 4; samples in ``impossible`` keep a negative unit 0 above positive losers (no
    positive factors order them); with ``alternate`` every odd sample's winners are its largest values too."""
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([1.0, 0.9, 0.1, 1.5, 1.4, 0.2]) + torch.rand(20, 6, generator=g) * 0.05
    if alternate:
        x[1::2] = torch.tensor([3.0, 2.9, 0.1, 0.2, 0.3, 0.1]) + torch.rand(10, 6, generator=g) * 0.05
    x[list(impossible), 0] = -0.01
    return x, x * torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def test_factors_ordering_exactly_the_bar_are_adopted_and_a_value_order_at_the_bar_is_not_refitted() -> None:
    import dataclasses

    x, out = _boosted_rows(impossible=(0, 2))  # 18 of 20 samples can be ordered: the bar, exactly
    fit = gate_fit(x, out, "dense")
    found = boosted_factors(x, out, fit)
    assert found is not None and found.ordered_fraction == BOOSTED_ORDERED_FRACTION
    assert boosted_factors(x, out, dataclasses.replace(fit, ordered_fraction=0.9)) is None  # ordered by value
    assert boosted_factors(x, out, dataclasses.replace(fit, ordered_fraction=0.89)) is not None


def test_factors_predicting_held_out_groups_only_as_well_as_the_values_are_not_adopted() -> None:
    """The odd samples' winners are their largest values and largest boosted scores alike: fitted on the even ones,
    the factors predict them no better than the values do, though they order every sample."""
    x, out = _boosted_rows(alternate=True)
    fit = gate_fit(x, out, "dense")
    assert fit.ordered_fraction == 0.5 and fit_unit_factors(x, out, "dense")[1] == 1.0
    assert boosted_factors(x, out, fit) is None


def test_factors_are_fitted_on_two_groups_and_on_an_odd_number_of_them() -> None:
    for n in (2, 5):
        x = torch.randn(n, 4, 6, 6, generator=torch.Generator().manual_seed(0))
        gate = BoostedTopK(_factors(4), 30)
        fit = infer_grouping(x, gate(x))
        assert fit is not None and fit.grouping == "volume"
        found = boosted_factors(x, gate(x), fit)
        assert found is not None and found.heldout_agreement > found.value_heldout_agreement


def test_gates_whose_factors_change_no_ranking_are_not_fitted(monkeypatch) -> None:
    """Per channel a unit's factor changes nothing; a gate keeping whole channels ranks a channel statistic."""
    import attacks.gate_factors as gate_factors
    from test_whole_channel_gates import ChannelTopK

    fits = []
    real = gate_factors._fit
    monkeypatch.setattr(gate_factors, "_fit", lambda *args: fits.append(args) or real(*args))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, 6, 6, generator=g)
    chosen = torch.rand(8, 4, 36, generator=g).argsort(dim=2)[..., :5]  # 5 of each channel, not by value
    per_channel = x * torch.zeros(8, 4, 36).scatter(2, chosen, 1.0).view_as(x)
    fit = gate_fit(x, per_channel, "channel")
    assert fit.score == "value" and fit.ordered_fraction < BOOSTED_ORDERED_FRACTION
    assert boosted_factors(x, per_channel, fit) is None
    whole = ChannelTopK(2)(x)
    assert boosted_factors(x, whole, infer_grouping(x, whole)) is None
    assert fits == []


def test_the_fit_keeps_its_first_iterate_on_ties_and_stops_once_converged(monkeypatch) -> None:
    """A gate of the largest values is ordered by the factors it starts from (all 1): later iterates that order as
    many groups do not replace them, and the fit stops once they stop moving."""
    import attacks.gate_factors as gate_factors

    passes = []
    real = gate_factors.midpoint_thresholds
    monkeypatch.setattr(gate_factors, "midpoint_thresholds", lambda s, w: passes.append(1) or real(s, w))
    x = torch.randn(32, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    factors, ordered = fit_unit_factors(x, BoostedTopK(torch.ones(4), 20)(x), "volume")
    assert torch.equal(factors, torch.ones(4)) and ordered == 1.0
    assert len(passes) < gate_factors.FIT_ITERATIONS


def test_the_fit_stops_where_bounds_leave_the_dtypes_range_and_ignores_a_zero_threshold(monkeypatch) -> None:
    """A winner of input 1e-44 below a loser of 2 bounds its factor at 1e44, past float32: the fit keeps the best
    factors so far (all 1) and stops. A group whose threshold is exactly 0 (a winner at -0.5, a loser at 0.5)
    bounds no factor, instead of bounding two at 0."""
    import attacks.gate_factors as gate_factors

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=g).abs() + 0.1
    out = BoostedTopK(_factors(6), 2)(x)
    x[0], out[0] = torch.tensor([1e-44, 2.0, 0.5, 0.5, 0.5, 0.5]), torch.tensor([1e-44, 2.0, 0, 0, 0, 0])
    passes = []
    real = gate_factors.ordered_fraction
    monkeypatch.setattr(gate_factors, "ordered_fraction", lambda r, w: passes.append(1) or real(r, w))
    factors, _ = fit_unit_factors(x, out, "dense")
    assert torch.equal(factors, torch.ones(6)) and len(passes) == 1
    monkeypatch.setattr(gate_factors, "ordered_fraction", real)
    x = torch.randn(64, 8, generator=g)
    out = BoostedTopK(_factors(8), 3)(x)
    x[0], out[0] = torch.tensor([-0.5, 0.5, -3, -3, -3, -3, -3, -3.0]), torch.tensor([-0.5, 0, 0, 0, 0, 0, 0, 0.0])
    assert fit_unit_factors(x, out, "dense")[1] >= BOOSTED_ORDERED_FRACTION


def test_the_wrapper_makes_the_factors_once_per_device_and_dtype() -> None:
    from attacks.bpda_wrap import ModuleBackward

    wrapper = ModuleBackward("gate", BoostedTopK(_factors(3), 4), LayerTarget("gate", "volume", "boosted",
                                                                              (0.5, 1.0, 2.0)))
    x = torch.rand(2, 3, 2, 2)
    made = wrapper._factors(x)
    assert made.dtype == torch.float32 and wrapper._factors(x) is made and wrapper._factors(x.half()) is made
    double = wrapper._factors(x.double())
    assert double.dtype == torch.float64 and torch.equal(double, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    assert wrapper._factors(x.double()) is double
