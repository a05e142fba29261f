"""The layer probe runs once per evaluation with a BPDA attack: the BPDA pre-check's probe (same model, same first
``diagnostics.gradient_batch`` samples, same seed) is kept by the runner instead of probing again, and a comparison's
pre-check probe is kept by each model's evaluation. The recorded detection is the one a second probe gives (apart
from ``wall_time_s``, the kept probe's own time) and its findings are logged once.

The probe used to run twice per evaluation (the pre-check's, silent, then the runner's) and, in a comparison, twice
more per model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import kwta_robust.bpda_preflight as preflight
import kwta_robust.evaluate as runner
from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.detect import Detection
from bpda_models import kwta_mlp
from test_guard_bpda_precheck import bpda_config

N = 8


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Detection]:
    """Every layer probe made (by the pre-check or the runner), in order."""
    made: list[Detection] = []
    real = preflight.detect_layers

    def counting(*args, **kwargs) -> Detection:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(preflight, "detect_layers", counting)
    monkeypatch.setattr(runner, "detect_layers", counting)
    return made


def _no_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The behaviour before the change: the runner probes again whatever was probed before."""
    monkeypatch.setattr(runner, "reusable_probe", lambda checked: None)


def _model(seed: int = 0) -> nn.Module:
    return nn.Sequential(nn.Flatten(), kwta_mlp(seed)).eval()  # no convolution: the run keeps its layout


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(N, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return x, torch.arange(N) % 3


def _without_time(detection: dict) -> dict:
    return {k: v for k, v in detection.items() if k != "wall_time_s"}


def test_one_evaluation_with_bpda_probes_the_layers_once_and_records_the_same_detection(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    x, y = _data()
    made = _counting(monkeypatch)
    with caplog.at_level(logging.INFO, logger="kwta_robust.detect"):
        record = evaluate_model(_model(), bpda_config(["auto"]), x, y)
    assert len(made) == 1  # was 2: the pre-check's, then the runner's
    assert record.detection["wall_time_s"] == made[0].wall_time_s > 0  # the kept probe's own time
    layer_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("layer ")]
    assert layer_lines == [f"layer 1.{i} (KWTA): gate (dense)" for i in (1, 3)]  # each finding logged once
    made.clear()
    _no_reuse(monkeypatch)
    again = evaluate_model(_model(), bpda_config(["auto"]), x, y)
    assert len(made) == 2  # the check of the check: without the reuse both probes run
    assert _without_time(record.detection) == _without_time(again.detection)
    assert record.results[1].bpda_layers == again.results[1].bpda_layers  # the BPDA attack acts on the same layers
    assert [r.flags for r in record.results] == [r.flags for r in again.results]


def test_a_comparison_probes_each_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    made = _counting(monkeypatch)
    models = {"a": _model(0), "b": _model(1)}
    records = compare_models_in_memory(models, bpda_config(["auto"]), x, y, transfer=False)
    assert len(made) == 2  # was 6: per model the comparison's pre-check, the evaluation's and the runner's
    assert [r.detection["wall_time_s"] for r in records] == [d.wall_time_s for d in made]
    made.clear()
    _no_reuse(monkeypatch)
    again = compare_models_in_memory(models, bpda_config(["auto"]), x, y, transfer=False)
    assert len(made) == 4  # the comparison's pre-check, then each runner's own probe
    assert [_without_time(r.detection) for r in records] == [_without_time(r.detection) for r in again]


def test_a_resumed_records_detection_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record resumed keeps the detection it holds: the pre-check's new probe does not replace it."""
    x, y = _data()
    out = tmp_path / "r.json"
    evaluate_model(_model(), bpda_config(["auto"]), x, y, out_path=out)
    saved = json.loads(out.read_text())
    saved["detection"]["wall_time_s"] = 123.5  # a mark only the kept detection carries
    out.write_text(json.dumps(saved))
    record = evaluate_model(_model(), bpda_config(["auto"]), x, y, out_path=out)
    assert record.detection["wall_time_s"] == 123.5
    assert json.loads(out.read_text())["detection"] == saved["detection"]


def test_a_run_in_channels_last_probes_in_its_own_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Convolutions converted to channels-last round differently: the pre-check probes once the model is in the
    run's layout, and the runner keeps that probe (it used to probe the model as given, then again in channels-last;
    tests/test_prefl_probe_once.py compares the detection with a probe in channels-last)."""
    from kwta_robust.layers import KWTA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), KWTA(ratio=0.25), nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = _data()
    made = _counting(monkeypatch)
    record = evaluate_model(model, bpda_config(["auto"]), x, y)
    assert record.provenance["layout"] == "channels_last"
    assert len(made) == 1 and record.detection["wall_time_s"] == made[0].wall_time_s
