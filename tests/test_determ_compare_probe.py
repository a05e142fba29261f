"""A CPU comparison of convolutional models probes each model's layers once: its BPDA pre-check runs in the layout
the evaluation tries (channels-last on the CPU, :func:`kwta_robust.runtime.converts`), and the evaluation keeps
that probe where it runs in that layout. It used to probe in the model's own layout, which the evaluation in
channels-last could not keep: two probes per model. The recorded detection is the one the runner's own probe gives.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import kwta_robust.compare as compare
from kwta_robust.api import compare_models_in_memory
from kwta_robust.layers import KWTA
from test_fix2_layer_probe_once import _counting, _data, _no_reuse, _without_time
from test_guard_bpda_precheck import bpda_config


def _conv(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 4, 3), KWTA(ratio=0.25), nn.Flatten(), nn.Linear(16, 3)).eval()


class NchwView(nn.Module):
    """A convolution whose output is ``view``-ed as NCHW, common in released code: it cannot run in channels-last,
    so its evaluation keeps its own layout."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv, self.act, self.fc = nn.Conv2d(1, 4, 3), KWTA(ratio=0.25), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.act(self.conv(x).view(x.shape[0], -1)))  # an NHWC output cannot be viewed so


def _compare(models: dict[str, nn.Module]) -> list:
    x, y = _data()
    return compare_models_in_memory(models, bpda_config(["auto"]), x, y)


def test_a_cpu_comparison_of_conv_models_probes_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made = _counting(monkeypatch)
    records = _compare({"a": _conv(0), "b": _conv(1)})
    assert [r.provenance["layout"] for r in records] == ["channels_last", "channels_last"]
    assert len(made) == 2  # was 4: each model's pre-check in its own layout, then its evaluation's in channels-last
    assert [r.detection["wall_time_s"] for r in records] == [d.wall_time_s for d in made]  # the kept probes
    made.clear()
    _no_reuse(monkeypatch)
    again = _compare({"a": _conv(0), "b": _conv(1)})
    assert len(made) == 4  # the check of the check: each runner probes again in its own layout
    assert [_without_time(r.detection) for r in records] == [_without_time(r.detection) for r in again]
    assert [[u.flags for u in r.results] for r in records] == [[u.flags for u in r.results] for r in again]


def test_a_probe_made_in_another_layout_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the evaluation's layout is not the pre-check's (here the pre-check is made to probe as given), the
    evaluation probes again: the detection is always one made in the run's own layout."""
    monkeypatch.setattr(compare, "converts", lambda layout, device: False)
    made = _counting(monkeypatch)
    records = _compare({"a": _conv(0), "b": _conv(1)})
    assert [r.provenance["layout"] for r in records] == ["channels_last", "channels_last"]
    assert len(made) == 4
    assert [r.detection["wall_time_s"] for r in records] == [made[2].wall_time_s, made[3].wall_time_s]


def test_a_model_that_cannot_run_in_channels_last_is_probed_once_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    made = _counting(monkeypatch)
    records = _compare({"a": NchwView(0), "b": NchwView(1)})
    assert [r.provenance["layout"] for r in records] == ["as given", "as given"]
    assert len(made) == 2
    made.clear()
    _no_reuse(monkeypatch)
    again = _compare({"a": NchwView(0), "b": NchwView(1)})
    assert len(made) == 4
    assert [_without_time(r.detection) for r in records] == [_without_time(r.detection) for r in again]
