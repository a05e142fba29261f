"""``kwta-robust diff``'s summary (:func:`kwta_robust.record_diff.verdicts_summary`) and the fields that only
describe a model (0f5aef9): the probe's reading is a description only where one record was written before it (lacks
it) or says the describer's ``relu`` / ``none``; two records that both hold a detected k/N, a grouping or a reading
of the layers and differ there describe two models, and ``top-k (detected)`` against ``kwta`` is another model
(rev50c), so neither may be summarised as "only what a newer version records about the model (no number)"."""

from __future__ import annotations

import copy

import pytest

from kwta_robust.record_diff import differences, record_differences, verdicts_summary


def _newer() -> dict:
    """A small record as this version writes it for a model of one's own with detected top-k gates."""
    return {
        "schema_version": 3, "status": "complete", "label": "mine",
        "model": {"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.125,
                  "detected_kwta_mode": "dense", "num_kwta_layers": 0, "kwta_ratio": None, "state_sha256": "ab" * 32,
                  "training": {"model_factory": "lab.nets:make", "weights_format": "safetensors"}},
        "clean": {"correct": 9, "n": 10, "accuracy": 0.9},
        "results": [{"label": "pgd", "norm": "linf", "eps": 0.1, "robust": {"correct": 4, "n": 10, "accuracy": 0.4}}],
        "provenance": {"versions": {"kwta_robust_git": "aaaa"}},
    }


@pytest.mark.parametrize("as_lines", [True, False])
@pytest.mark.parametrize("change", [
    ("detected_kwta_ratio", 0.25),  # the gates keep another k/N: another model, a number
    ("detected_kwta_mode", "channel"),  # another grouping
    ("activation_layers", "none"),  # the layers read otherwise
    ("activation", "kwta"),  # a library kWTA model against the probe's reading of one's own
])
def test_two_newer_records_of_different_models_get_no_summary(as_lines: bool, change: tuple) -> None:
    first = _newer()
    second = copy.deepcopy(first)
    second["model"][change[0]] = change[1]
    found = (record_differences if as_lines else differences)(first, second)
    assert len(found) == 1
    assert verdicts_summary(found) is None
