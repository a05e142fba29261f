"""Gates that keep whole channels (Xiao et al.'s ``Sparsify2D_all``: per sample, the k channels with the largest
maxima survive whole): the probe finds them as such, with the statistic they rank, and BPDA relaxes that ranking
instead of treating them as a per-location gate."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from attacks.gates import channel_statistic, infer_grouping, relaxed_gate
from bpda_helpers import assert_bpda_matches_relaxed
from kwta_robust.detect import detect_layers


class ChannelTopK(nn.Module):
    """Per sample, keep the ``k`` channels of ``[N, C, ...]`` whose ``statistic`` (max or mean) is largest."""

    def __init__(self, k: int, statistic: str = "max") -> None:
        super().__init__()
        self.k, self.statistic = k, statistic

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        score = flat.amax(dim=2) if self.statistic == "max" else flat.mean(dim=2)
        keep = torch.zeros_like(score).scatter_(1, score.topk(self.k, dim=1).indices, 1.0)
        return x * keep.view(keep.shape + (1,) * (x.ndim - 2))


def _x(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("statistic", ["max", "mean"])
def test_a_gate_keeping_whole_channels_is_found_with_the_statistic_it_ranks(statistic: str) -> None:
    x = _x(16, 8, 5, 5)
    fit = infer_grouping(x, ChannelTopK(3, statistic)(x))
    assert (fit.grouping, fit.k, fit.group_size, fit.statistic, fit.score) == ("whole-channel", 3, 8, statistic,
                                                                              statistic)
    assert fit.ordered_fraction == 1.0 and fit.k_constant_fraction == 1.0


def test_other_gates_are_not_taken_for_whole_channels() -> None:
    x = _x(16, 8, 5, 5, seed=1)
    flat = x.flatten(2)
    per_channel = x * (flat >= flat.topk(5, dim=2).values[..., -1:]).view_as(x)
    local = x * (x >= x.topk(2, dim=1).values[:, -1:]).float()
    volume = x * (x.flatten(1) >= x.flatten(1).topk(40, dim=1).values[:, -1:]).view_as(x)
    assert [infer_grouping(x, out).grouping for out in (per_channel, local, volume)] == ["channel", "local", "volume"]
    assert infer_grouping(x, torch.relu(x)) is None
    # one element per channel: whole channels are a per-location gate
    assert infer_grouping(x[:, :, :1, :1], ChannelTopK(3)(x[:, :, :1, :1])).grouping == "local"


def test_the_relaxation_gates_whole_channels_on_their_statistic() -> None:
    x = _x(4, 6, 3, 3, seed=2).requires_grad_(True)
    out = ChannelTopK(2)(x.detach())
    peak = x.flatten(2).amax(dim=2)
    ranked = peak.detach().sort(dim=1, descending=True).values
    threshold = (ranked[:, 1:2] + ranked[:, 2:3]) / 2  # midway between the 2nd and 3rd largest maxima
    tau = 0.1 * peak.std(dim=1, keepdim=True, correction=0)
    expected = x * torch.sigmoid((peak - threshold) / tau)[:, :, None, None]
    relaxed = relaxed_gate(x, out, "whole-channel", 0.1, "max")
    assert torch.allclose(relaxed, expected, atol=1e-6)
    (grad,) = torch.autograd.grad(relaxed.sum(), x)
    assert bool((grad[:, :, 0, 0] != grad[:, :, 1, 1]).any())  # the maxima carry the ranking's gradient
    with pytest.raises(ValueError, match="unknown channel statistic 'value'"):
        relaxed_gate(x, out, "whole-channel", 0.1)
    assert torch.equal(channel_statistic(x, "mean"), x.flatten(2).mean(dim=2))


def test_the_probe_finds_it_and_bpda_relaxes_whole_channels() -> None:
    from eval_helpers import make_record
    from kwta_robust.layer_text import layer_notes

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3), ChannelTopK(2), nn.Flatten(), nn.Linear(8 * 36, 3)).eval()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    detection = detect_layers(model, x)
    finding = detection.finding("1")
    assert (finding.kinds, finding.grouping, finding.evidence["k"], finding.evidence["statistic"]) == (
        ["gate"], "whole-channel", 2, "max")
    target = detection.auto_targets()["1"]
    assert target == LayerTarget("gate", "whole-channel", "max") and target.describe() == "gate/whole-channel/max"
    record = make_record()
    record.detection = detection.to_dict()
    assert layer_notes(record)[0].endswith("1 (ChannelTopK): top-k gate (whole-channel, k=2/8 channels, ranked by "
                                           "their max)")
    assert_bpda_matches_relaxed(model, detection.auto_targets(), "1", x, lambda t: model[3](relaxed_gate(
        model[0](t), model[1](model[0](t).detach()), "whole-channel", 0.1, "max").flatten(1)))


def test_whole_channel_grouping_and_channel_statistics_go_together() -> None:
    assert LayerTarget.of({"kind": "gate", "grouping": "whole-channel", "score": "mean"}).score == "mean"
    for kind, grouping, score in [("gate", "whole-channel", "value"), ("gate", "volume", "max"), ("gate", None, "mean"),
                                  ("module", "whole-channel", "value"), ("module", "volume", "max")]:
        with pytest.raises(AttackConfigError, match="grouping 'whole-channel' goes with score 'max' or 'mean'"):
            LayerTarget(kind, grouping, score)


def test_a_gate_shared_by_calls_of_other_groupings_is_read_at_each_call() -> None:
    """One channel gate called on 5×5 maps (whole channels) and on 1×1 maps (then a per-location gate): no one
    grouping, so BPDA infers grouping and score at each call instead of stopping on a statistic without its
    grouping."""

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate, self.pool = ChannelTopK(3), nn.AdaptiveMaxPool2d(1)

        def forward(self, x: Tensor) -> Tensor:
            return self.gate(self.pool(self.gate(x))).flatten(1)

    found = detect_layers(Shared().eval(), _x(16, 8, 5, 5, seed=5))
    finding = found.finding("gate")
    assert finding.evidence["calls"] == 2 and finding.grouping is None
    assert found.auto_targets()["gate"] == LayerTarget("gate", None, "value")


def test_channels_kept_whole_but_not_ranked_by_a_statistic_are_not_a_whole_channel_gate() -> None:
    """A fixed channel mask, or a top-k on a score of its own that keeps the same channels at every position
    (Numenta's boosted local gate on positive activations), is no ranking of channels by max or mean: before the
    ordering check it was read as one, and the relaxation's threshold, between kept maxima smaller than dropped
    ones, opened the dropped channels and closed the kept."""
    x = _x(16, 8, 5, 5, seed=6) + 3.0
    fixed = x * (torch.arange(8) < 4).float().view(1, 8, 1, 1)
    scored = x * (torch.arange(8) % 2 == 0).float().view(1, 8, 1, 1)
    for out in (fixed, scored):
        fit = infer_grouping(x, out)
        assert fit is not None and fit.grouping == "local" and fit.statistic is None


def test_the_relaxation_keeps_finite_gradients_in_half_precision() -> None:
    x = (_x(4, 8, 5, 5, seed=7) * 1e-2).half().requires_grad_(True)
    for statistic in ("max", "mean"):
        out = ChannelTopK(3, statistic)(x.detach().float()).half()
        (grad,) = torch.autograd.grad(relaxed_gate(x, out, "whole-channel", 0.1, statistic).float().sum(), x)
        assert grad.dtype == torch.float16 and bool(torch.isfinite(grad).all()) and bool((grad != 0).any())


def test_the_notes_name_channels_at_every_shape_of_a_shared_gate() -> None:
    from eval_helpers import make_record
    from kwta_robust.layer_text import layer_notes

    class Twice(nn.Module):  # one whole-channel gate on [N, 8, 6, 6], then on [N, 6, 4, 4]
        def __init__(self) -> None:
            super().__init__()
            self.a, self.gate, self.b = nn.Conv2d(1, 8, 3), ChannelTopK(4), nn.Conv2d(8, 6, 3)

        def forward(self, x: Tensor) -> Tensor:
            self.gate.k = 4
            h = self.b(self.gate(self.a(x)))
            self.gate.k = 3
            return self.gate(h).flatten(1)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Twice().eval()
    record = make_record()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    record.detection = detect_layers(model, x).to_dict()
    assert layer_notes(record)[0].endswith("gate (ChannelTopK): top-k gate (whole-channel, k=4/8 channels, 3/6 "
                                           "channels at its input shapes, ranked by their max)")


def test_an_output_not_keeping_whole_channels_fits_with_nothing_constant() -> None:
    from attacks.gates import gate_fit

    x = _x(5, 4, 3, 3)
    fit = gate_fit(x, torch.relu(x), "whole-channel")
    assert fit.to_dict() == {"grouping": "whole-channel", "group_size": 4, "groups": 5, "k": 0, "k_min": 0, "k_max": 0,
                             "k_constant_fraction": 0.0, "ordered_fraction": 0.0, "magnitude_ordered_fraction": 0.0,
                             "statistic": None, "smallest_ordered_fraction": 0.0}
    assert not fit.constant_k and fit.score == "value"
    assert gate_fit(x, torch.relu(x), "whole-channel", only_constant=True) is None
    empty = gate_fit(torch.zeros(0, 4), torch.zeros(0, 4), "dense")  # no group at all
    assert empty.to_dict() == {**fit.to_dict(), "grouping": "dense", "groups": 0}


def test_whole_channels_of_two_elements_with_zeros_after_a_relu_are_whole_channels() -> None:
    for x in (_x(16, 6, 2, seed=3), torch.relu(_x(16, 6, 3, 3, seed=4))):  # kept channels hold zeros of their input
        out = ChannelTopK(2)(x)
        fit = infer_grouping(x, out)
        assert fit is not None and (fit.grouping, fit.k, fit.statistic) == ("whole-channel", 2, "max")
        assert (fit.magnitude_ordered_fraction, fit.smallest_ordered_fraction) == (0.0, 0.0)
        torch.testing.assert_close(relaxed_gate(x, out, "whole-channel", 1e-7, "max"), out, rtol=0, atol=1e-5)


def test_channels_ranked_in_exactly_nine_of_ten_samples_are_whole_channels() -> None:
    x = _x(10, 4, 3, 3, seed=5)
    out = ChannelTopK(2)(x)
    ranked = x[9].flatten(1).amax(dim=1).argsort(descending=True)
    out[9] = 0.0
    for channel in (ranked[0], ranked[2]):  # the last sample keeps its third channel instead of its second
        out[9, channel] = x[9, channel]
    fit = infer_grouping(x, out)
    assert fit is not None and (fit.grouping, fit.statistic, fit.ordered_fraction) == ("whole-channel", "max", 0.9)


def test_kept_channels_whose_input_is_all_zero_are_invisible_winners() -> None:
    """A sample with one non-zero channel: a top-2 keeps it and a zero channel, which its output cannot show (its
    count interval reaches up over its all-zero losers). A loser channel with a 0 among negative values would
    show, were it kept."""
    from attacks.gates import gate_fit

    x = torch.relu(_x(5, 4, 2, 2, seed=6))
    x[0] = 0.0
    x[0, 0] = 1.0
    fit = gate_fit(x, ChannelTopK(2)(x), "whole-channel")
    assert (fit.k, fit.k_min, fit.k_constant_fraction) == (2, 1, 1.0)
    x = _x(5, 4, 2, 2, seed=7).abs() + 0.5
    out = ChannelTopK(2)(x)
    x[0, 1:] = -x[0, 1:]
    x[0, 1, 0, 0] = 0.0  # channel 1's largest element is 0, among negative ones: not an all-zero channel
    out[0] = 0.0
    out[0, 0] = x[0, 0]
    fit = gate_fit(x, out, "whole-channel")
    assert (fit.k, fit.k_min, fit.k_constant_fraction) == (2, 1, 0.8)
