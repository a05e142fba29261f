"""A channel top-k ranked by its L2 norm, read on few probe samples (conv 3 → 8 channels, k = 2, 16 images of
8 × 8 in [0, 1], ``[N, C, H, W]``): the abs-mean (signed maps) or the mean (ReLU maps) orders the kept channels in
every sample too, and :data:`attacks.channel_stats.CHANNEL_STATISTICS` tried in order named the gate by that one
alone — the note said "ranked by their abs-mean" of an L2-norm gate. Now the fit keeps the tied statistics
(``statistic_ties``, in the evidence only where there is one) and the note names them: "ranked by their abs-mean
(l2-norm explains it too on these samples)". The statistic read, and so BPDA's relaxation, is unchanged: choosing
among the ties by the margin between the k-th and (k+1)-th channel read the true statistic less often on ReLU or
on signed maps (attacks/channel_stats.py)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.gate_fits_batched import batched_gate_fit
from attacks.gates import infer_grouping
from kwta_robust.detect import detect_layers


class L2TopK(nn.Module):
    """Per sample, the ``k`` channels of ``[N, C, H, W]`` with the largest L2 norm over H, W kept, the others zeroed;
    ``relu``: of the ReLU of the input."""

    def __init__(self, relu: bool, k: int = 2) -> None:
        super().__init__()
        self.relu, self.k = relu, k

    def forward(self, h: Tensor) -> Tensor:
        h = h.relu() if self.relu else h
        s = h.norm(p=2, dim=(2, 3))
        return h * (s >= s.topk(self.k, dim=1).values[:, -1:])[:, :, None, None]


def _conv_and_images() -> tuple[nn.Module, Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Conv2d(3, 8, 3), torch.rand(16, 3, 8, 8)


#: What each kind of map is read as on these samples, and the statistics that explain it too.
READ = {False: ("abs-mean", ("l2-norm",)), True: ("mean", ("abs-mean", "l2-norm"))}


@pytest.mark.parametrize("relu", [False, True])
def test_the_fit_keeps_the_statistics_tied_with_the_one_read(relu: bool) -> None:
    conv, x = _conv_and_images()
    with torch.no_grad():
        h = conv(x)
        h = h.relu() if relu else h
        out = L2TopK(False)(h)
    fit = infer_grouping(h, out, known_gate=True)
    assert fit is not None and (fit.grouping, fit.statistic, fit.statistic_ties) == ("whole-channel", *READ[relu])
    assert fit.to_dict()["statistic_ties"] == list(READ[relu][1])
    assert batched_gate_fit(h, out, "whole-channel") == fit  # BPDA's batched reading: the same fit
    with torch.random.fork_rng(devices=[]):  # 64 channels, k = 16, 64 samples of 8 x 8: no tie
        torch.manual_seed(0)
        wide, many = nn.Conv2d(3, 64, 3), torch.rand(64, 3, 10, 10)
    with torch.no_grad():
        h = wide(many)
        h = h.relu() if relu else h
    alone = infer_grouping(h, L2TopK(False, 16)(h), known_gate=True)
    assert alone is not None and (alone.statistic, alone.statistic_ties) == ("l2-norm", ())
    assert "statistic_ties" not in alone.to_dict()


@pytest.mark.parametrize("relu", [False, True])
def test_the_probes_note_names_the_tied_statistics(relu: bool) -> None:
    from eval_helpers import make_record
    from kwta_robust.layer_text import layer_notes

    conv, x = _conv_and_images()
    relus = [nn.ReLU()] if relu else []  # a module of its own: L2TopK is then the leaf gate the note names
    model = nn.Sequential(conv, *relus, L2TopK(False), nn.Flatten(), nn.Linear(288, 10)).eval()
    record = make_record()
    record.detection = detect_layers(model, x, log=False).to_dict()
    read, ties = READ[relu]
    also = " and ".join(ties) + (" explains" if len(ties) == 1 else " explain")
    assert layer_notes(record)[0].endswith(
        f"{len(relus) + 1} (L2TopK): top-k gate (whole-channel, k=2/8 channels, ranked by their {read} ({also} it "
        "too on these samples))")
