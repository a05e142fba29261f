"""Second read of the session-50 merges (seeds50, bpda50, routes50, cmp50): defects a reviewer found, each pinned here.

* BPDA with an inner attack that has no ``steps`` (FGSM) given ``inner_params.steps`` ran, the steps silently
  dropped (before bpda50: a one-line refusal); only BPDA's own split of its inner's total may drop a stage's steps.
* The smoke runs' cap (:func:`kwta_robust.budget_scale.cap_budget`) counted a null ``stage_steps`` entry of a stage
  whose inner takes no steps as a share of the capped total, so another stage ran more steps than the cap.
* ``compare --factory-kwargs LABEL=JSON`` split at the first ``=``, so a model whose label holds one (a file stem
  like ``k=0.1``) could not be given its own arguments.
* The fields seeds50 writes for a kWTA model of one's own (``activation_layers``, ``detected_kwta_ratio``,
  ``detected_kwta_mode``) were checked by no record rule.
* routes50's routing watch compared every element of a parameter table with 0 and 1 at each indexing of it, picked
  by a selection's indices or not (seconds per probe forward for a large embedding).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from attacks import create_attack
from html_helpers import QUICKSTART
from attacks.errors import AttackConfigError
from kwta_robust.budget_scale import cap_budget, scale_budget
from kwta_robust.commands.compare import factory_kwargs_per_model
from kwta_robust.detect_selections import selections_outside
from kwta_robust.errors import ConfigError
from kwta_robust.record_checks import check_record
from kwta_robust.results import RecordError, load_record
from kwta_robust.routed_selections import RoutingWatch

SCHEDULE = [0.1, 0.05, 0.03]


@pytest.mark.parametrize("schedule", [None, [0.1, 0.03]])
def test_steps_given_to_an_inner_attack_without_steps_are_refused(schedule: list | None) -> None:
    extra = {} if schedule is None else {"temperature_schedule": schedule}
    with pytest.raises(AttackConfigError, match=r"^inner_params: attack 'fgsm': unknown parameter 'steps'"):
        create_attack("bpda", surrogate="smooth", inner="fgsm", inner_params={"steps": 3}, **extra)


def test_the_cap_gives_no_share_to_a_null_stage_without_steps() -> None:
    params = {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": SCHEDULE, "stage_steps": [4, None, None],
              "stage_params": [{}, {}, {"inner": "fgsm"}]}
    capped = cap_budget("bpda", params, 2)
    assert capped["stage_steps"] == [2, None, None] and capped["inner_params"]["steps"] == 4
    assert [getattr(stage, "steps", None) for stage in create_attack("bpda", **capped).stages] == [2, 2, None]


def test_factory_kwargs_reach_a_label_that_holds_an_equals_sign() -> None:
    given = [SimpleNamespace(model_factory="m:f"), SimpleNamespace(model_factory="m:f")]
    labels = ["k=0.1", "k"]
    shared, own = factory_kwargs_per_model(['k=0.1={"ratio": 0.1}', 'k={"ratio": 1}'], given, labels)
    assert shared is None and own == {"k=0.1": {"ratio": 0.1}, "k": {"ratio": 1}}
    with pytest.raises(ConfigError, match=r"^--factory-kwargs j=\.\.\.: 'j' names no model"):
        factory_kwargs_per_model(['j={"ratio": 1}'], given, labels)


def test_a_total_no_null_stage_shares_is_refused_beside_stage_steps() -> None:
    """``stage_steps`` setting every stage that takes steps (FGSM's entry null) beside ``inner_params.steps``: the
    total went nowhere, silently (before null entries: refused as both forms at once)."""
    with pytest.raises(AttackConfigError, match=r"^stage_steps: give the steps either per stage"):
        create_attack("bpda", surrogate="smooth", inner="pgd", inner_params={"steps": 100},
                      temperature_schedule=SCHEDULE, stage_steps=[3, 7, None],
                      stage_params=[{}, {}, {"inner": "fgsm"}])


def test_the_budget_check_scales_stage_steps_whose_only_null_entry_takes_no_steps() -> None:
    """Scaling ``stage_steps`` ``[3, 7, null]`` (the null stage runs FGSM) gave BPDA a total no stage shares."""
    params = {"surrogate": "smooth", "inner": "pgd", "temperature_schedule": SCHEDULE, "stage_steps": [3, 7, None],
              "stage_params": [{}, {}, {"inner": "fgsm"}]}
    scaled = scale_budget("bpda", params, 3)
    assert scaled["stage_steps"] == [9, 21, None] and "steps" not in scaled.get("inner_params", {})
    assert [getattr(stage, "steps", None) for stage in create_attack("bpda", **scaled).stages] == [9, 21, None]


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("detected_kwta_ratio", "0.25", "a number in [0, 1] or null, got '0.25'"),
    ("detected_kwta_ratio", 25, "a number in [0, 1] or null, got 25"),
    ("detected_kwta_mode", 1, "a string or null, got 1"),
    ("activation_layers", ["relu"], "a string or null, got ['relu']"),
])
def test_the_probed_model_fields_are_checked_where_a_record_is_read(tmp_path: Path, key: str, value: object,
                                                                    expected: str) -> None:
    """seeds50's fields of a kWTA model of one's own (``top-k (detected)``) were read by no record check: a
    hand-edited ``"0.25"`` or ``25`` loaded as the gates' k/N."""
    data = json.loads((QUICKSTART / "kwta.json").read_text())
    data["model"].update({"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
                          "detected_kwta_mode": "dense", key: value})
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as caught:
        check_record(load_record(path), "r.json")
    assert str(caught.value) == f"r.json: model.{key} must be {expected}"


class _RowsThenKwta(nn.Module):
    """``[B, 16]`` → rows ``0..3`` of a parameter table ``[50, 16]`` added (``W[i]``: no selection's indices) → a
    top-4 kWTA ``h · (h ≥ kth)`` → ``[B, 16]``."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(50, 16))

    def forward(self, x: Tensor) -> Tensor:
        for i in range(4):
            x = x + self.table[i]
        return x * (x >= x.topk(4, dim=1).values[:, -1:])


def test_the_routing_watch_reads_no_table_that_no_selection_picks_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """routes50's table test (every element of a parameter compared with 0 and 1) ran on every indexing of a
    parameter, picked by a selection's indices or not: a probe of a model indexing a 50,000 × 512 embedding's weight
    8 times took 3 s instead of 5 ms. It now runs only for a pick by a selection's indices."""
    read = []
    original = RoutingWatch._table
    monkeypatch.setattr(RoutingWatch, "_table",
                        lambda self, source: read.append(source.shape) or original(self, source))
    torch.manual_seed(0)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    found = [e for e in selections_outside(_RowsThenKwta().eval(), x, accounted=[]) if e["op"] == "topk"]
    assert [(e.get("gate"), e.get("k"), e.get("routes")) for e in found] == [("dense", 4, None)]
    assert read == []
