"""The ``unranked-gates`` flag: a smooth BPDA relaxed a gate whose winners no score of the layer probe explains
(not the largest by value, magnitude or smallest value, no channel statistic, no fitted factors) — the LWTA layers
that went unnoticed before they had a grouping of their own were such gates. The flag is measured on the probe's
evidence of real modules and on records."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bpda_models import DenseTopK
from eval_helpers import make_record, make_result
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.layers import KWTA
from kwta_robust.probe_checks import unranked

PGD = [1, 1, 1, 1, 0, 0, 0, 0]
BPDA = [1, 1, 0, 0, -1, -1, -1, -1]


class ProjectedTopK(nn.Module):
    """Keeps the ``k`` units whose score under a fixed signed random projection is largest: a top-k gate of
    constant count whose winners are neither its largest values, magnitudes nor smallest values, and whose scores
    are no positive per-unit factor times the value."""

    def __init__(self, units: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("projection", torch.randn(units, units, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: Tensor) -> Tensor:
        winners = (x @ self.projection).topk(self.k, dim=1).indices
        return x * torch.zeros_like(x).scatter_(1, winners, 1.0)


def gate_layers(gate: nn.Module) -> list[dict]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), gate, nn.Linear(64, 5)).eval()
    detection = detect_layers(model, torch.randn(64, 20), seed=0).to_dict()
    return [l for l in detection["layers"] if "gate" in l["kinds"]]


def test_the_probe_evidence_of_a_gate_ranked_by_no_score_is_unranked() -> None:
    layers = gate_layers(ProjectedTopK(64, 8))
    assert [l["name"] for l in layers] == ["1"] and layers[0]["evidence"]["k"] == 8
    assert unranked(layers[0])
    plain = gate_layers(DenseTopK(8))  # a foreign top-k keeps its largest values
    assert [l["evidence"]["k"] for l in plain] == [8] and not unranked(plain[0])
    native = gate_layers(KWTA(ratio=0.125))  # our own layer: BPDA relaxes it natively, never flagged
    assert native and native[0]["native"] and not unranked(native[0])


def _record(layer: dict, surrogate: str = "smooth", acted: bool = True):
    pgd = make_result("pgd", PGD, eps=0.1)
    bpda = make_result("bpda", BPDA, kind="bpda", eps=0.1, position=1, cumulative=True,
                       params={"surrogate": surrogate, "inner": "apgd-ce"},
                       bpda_layers={layer["name"]: "wrapped gate/dense"} if acted else {})
    return make_record([pgd, bpda], detection={"n": 8, "probed": 3, "layers": [layer], "selections": []})


def _gate(**evidence) -> dict:
    base = {"shape": [8, 64], "grouping": "dense", "k": 8, "ordered_fraction": 0.1, "magnitude_ordered_fraction": 0.05,
            "smallest_ordered_fraction": 0.0, "statistic": None}
    return {"name": "gate", "module_class": "ProjectedTopK", "kinds": ["gate"], "grouping": "dense", "native": False,
            "evidence": {**base, **evidence}}


def test_a_smooth_bpda_on_an_unranked_gate_is_flagged_with_the_fractions_and_the_fix() -> None:
    flags = [f for f in run_checks(_record(_gate())) if f.code == "unranked-gates"]
    assert len(flags) == 1 and flags[0].severity == "warning"
    assert "gate (ProjectedTopK)" in flags[0].message and "10.0% / 5.0% / 0.0%" in flags[0].message
    assert "surrogate: learned" in flags[0].message
    assert flags[0].evidence["layers"][0]["name"] == "gate"


@pytest.mark.parametrize("layer, surrogate, acted", [
    (_gate(ordered_fraction=0.95), "smooth", True),              # ranked by value
    (_gate(ordered_fraction=0.6), "smooth", True),               # mostly by value (weak boosting, factors not kept)
    (_gate(magnitude_ordered_fraction=0.92), "smooth", True),    # by magnitude (Sparsify*_abs)
    (_gate(smallest_ordered_fraction=0.97), "smooth", True),     # a bottom-k
    (_gate(statistic="max"), "smooth", True),                    # whole channels by their maxima
    (_gate(boosted_ordered_fraction=1.0), "smooth", True),       # Numenta's boosting, factors fitted
    (_gate(), "learned", True),                                  # a surrogate fitted to the layer
    (_gate(), "smooth", False),                                  # not acted on: gates-without-bpda says so
])
def test_ranked_gates_other_surrogates_and_gates_bpda_missed_are_not_flagged(layer, surrogate, acted) -> None:
    assert "unranked-gates" not in [f.code for f in run_checks(_record(layer, surrogate, acted))]
