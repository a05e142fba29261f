"""Session 51: the HTML report's noise charts group the probes by the name the probe column (and every table) prints,
``noise numenta [2] (noise pixel value 1)``; they grouped them by kind and params, so two numenta probes of one pixel
value but other seeds or draws (other noise) were one chart, a model's two curves under one label."""

from __future__ import annotations

import re

from eval_helpers import make_record
from kwta_robust.html_noise import noise_section
from kwta_robust.results import EvalRecord, NoiseResult

TIP = re.compile(r"<title>([^<]+)</title>")


def _probe(seed: int, draws: int, accuracy: list[float]) -> NoiseResult:
    return NoiseResult("numenta", [0.0, 0.5], draws, seed,
                       {"params": {"value": 1.0}, "accuracy": accuracy, "num_samples": 10}, 0.1)


def _record(label: str, shift: float) -> EvalRecord:
    record = make_record(n=10, label=label)
    record.noise = [_probe(1, 1, [1.0, 0.5 - shift]), _probe(2, 3, [1.0, 0.3 - shift])]  # one value, other noise
    return record


def test_two_probes_of_one_kind_and_params_are_two_charts_named_as_the_table_names_them() -> None:
    records = [_record("kwta", 0.0), _record("relu", 0.1)]
    body = str(noise_section(records).body)
    assert body.count("<figure>") == 2
    for ordinal in ("[1]", "[2]"):
        assert f"accuracy under numenta noise {ordinal} (noise pixel value 1)" in body
        assert f"<td>noise numenta {ordinal} (noise pixel value 1)</td>" in body
    tips = TIP.findall(body)
    assert "kwta: noise numenta [2] (noise pixel value 1) level 0.5: 30.0%" in tips
    assert "relu: noise numenta [1] (noise pixel value 1) level 0.5: 40.0%" in tips
    charts = body.split("<figure>")[1:]
    assert ["level 0.5: 30.0%" in chart for chart in charts] == [False, True]  # each chart its own probe's points
    records[0].noise = records[0].noise[:1]  # one probe of its kind: its chart's title as before
    alone = str(noise_section(records[:1]).body)
    assert alone.count("<figure>") == 1 and "accuracy under numenta noise (noise pixel value 1)" in alone
