"""One layer probe (and one straight-through probe) per evaluation, made in the layout the run evaluates in.

The BPDA pre-check (:mod:`kwta_robust.bpda_preflight`) used to probe the model in its own layout before the run put
its convolutions in channels-last (the CPU default), and the runner, which cannot keep evidence from another layout,
probed again; it probed a resumed record's model although the runner keeps that record's detection; and it made the
straight-through probe of a module named in ``bpda_layers`` on a copy, which the runner then made again. The
pre-check now runs once the model is in the run's layout, on the resumed record's detection where there is one, and
the runner keeps what it found."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import kwta_robust.bpda_preflight as preflight
import kwta_robust.evaluate as runner
import kwta_robust.straight_through as straight_through
from kwta_robust.api import evaluate_model
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.detect import detect_layers
from kwta_robust.errors import ConfigError
from kwta_robust.layers import KWTA
from kwta_robust.resume import StalePolicy
from kwta_robust.runtime import channels_last_convolutions
from test_fix2_layer_probe_once import N, _counting, _data, _model, _without_time
from test_guard_bpda_precheck import bpda_config
from test_straight_through import ReluThenTopK


def _conv() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), KWTA(ratio=0.25), nn.Flatten(), nn.Linear(16, 3)).eval()


def test_a_channels_last_run_probes_once_in_its_own_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    model = _conv()
    with channels_last_convolutions([model]):  # the probe the runner itself makes in the run's layout
        expected = detect_layers(model, x[:N], seed=0, log=False).to_dict()
    made = _counting(monkeypatch)
    record = evaluate_model(model, bpda_config(["auto"]), x, y)
    assert record.provenance["layout"] == "channels_last"
    assert len(made) == 1  # was 2: the pre-check's in the model's own layout, then the runner's
    assert record.detection["wall_time_s"] == made[0].wall_time_s
    assert _without_time(record.detection) == {**_without_time(expected), "straight_through": {}}
    assert next(model.parameters()).is_contiguous()  # the model is handed back in its own layout


def test_a_resumed_record_is_checked_on_its_own_detection_without_a_new_probe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    out = tmp_path / "r.json"
    evaluate_model(_model(), bpda_config(["auto"]), x, y, out_path=out)
    made = _counting(monkeypatch)
    record = evaluate_model(_model(), bpda_config(["auto"]), x, y, out_path=out)
    assert made == []  # was 1: the pre-check probed although the runner keeps the record's detection
    assert record.detection == json.loads(out.read_text())["detection"]


def test_a_resumed_records_detection_is_refused_before_the_clean_pass(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The pre-check reads the detection the runner will keep: a gate built inline that the resumed detection
    holds is refused before the clean pass, the record left as it was (it used to come after the clean pass)."""
    x, y = _data()
    out = tmp_path / "r.json"
    evaluate_model(_model(), bpda_config(["1.1"]), x, y, out_path=out)
    saved = json.loads(out.read_text())
    saved["detection"]["selections"] = [{"op": "torch.topk", "modules": ["1"], "gate": True}]
    out.write_text(json.dumps(saved))
    before = out.read_bytes()
    with pytest.raises(ConfigError) as caught, caplog.at_level(logging.INFO):
        evaluate_model(_model(), bpda_config(["1.1"]), x, y, out_path=out)
    assert str(caught.value).startswith("bpda_layers: the model builds a top-k gate inline (torch.topk in the "
                                        "forward of 1) that BPDA would leave in place")
    assert not any("clean accuracy" in r.getMessage() for r in caplog.records)
    assert out.read_bytes() == before


class _Shift(nn.Module):
    """Adds ``shift`` (a plain attribute: the state digest does not see it) to the first logit."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, z: Tensor) -> Tensor:
        return z + torch.tensor([self.shift, 0.0, 0.0])


def test_a_resumed_record_found_stale_and_set_aside_gets_a_probe_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    data = TensorData(x, y, "toy", 3, torch.arange(N))
    cfg = EvalConfig.from_dict({**bpda_config(["auto"]), "dataset": "toy"})
    out = tmp_path / "r.json"
    runner.evaluate(nn.Sequential(_model(), _Shift(0.0)), data, cfg, out_path=out, progress=False)
    saved = json.loads(out.read_text())
    saved["detection"]["wall_time_s"] = 123.5  # a mark only the stale record's detection carries
    out.write_text(json.dumps(saved))
    made = _counting(monkeypatch)
    set_aside_at_probe: list[bool] = []
    counting = preflight.detect_layers

    def noting(*args, **kwargs) -> object:
        set_aside_at_probe.append((tmp_path / "superseded").exists())
        return counting(*args, **kwargs)

    monkeypatch.setattr(preflight, "detect_layers", noting)
    monkeypatch.setattr(runner, "detect_layers", noting)
    fresh = runner.evaluate(nn.Sequential(_model(), _Shift(100.0)), data, cfg, out_path=out, progress=False,
                            stale=StalePolicy(set_aside=True))  # other clean predictions: the record is stale
    assert len(list((tmp_path / "superseded").iterdir())) == 1
    assert len(made) == 1 and fresh.detection["wall_time_s"] == made[0].wall_time_s != 123.5
    # the pre-check's probe, made while the stale record is still in place (a refusal leaves it there), kept
    assert set_aside_at_probe == [False]
    assert fresh.clean.correct == int((y == 0).sum())


def test_a_module_named_in_bpda_layers_is_probed_straight_through_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = straight_through.straight_through_layers

    def counting(model: nn.Module, x: Tensor, names: list[str], *args, **kwargs) -> dict:
        calls.append(list(names))
        return real(model, x, names, *args, **kwargs)

    monkeypatch.setattr(straight_through, "straight_through_layers", counting)
    x, y = _data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), ReluThenTopK(), nn.Linear(8, 3)).eval()
    record = evaluate_model(model, bpda_config(["2"]), x, y)
    assert calls == [["2"]]  # was two calls: the pre-check's, on a copy, then the runner's
    assert record.detection["straight_through"]["2"]["module_class"] == "ReluThenTopK"
    assert record.results[1].bpda_layers == {"2": "wrapped module"}
    assert preflight.note_straight_through is straight_through.note_straight_through  # the probe counted is theirs
