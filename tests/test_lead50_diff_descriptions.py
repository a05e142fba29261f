"""``kwta-robust diff``'s summary line and fields that only describe a model (:data:`kwta_robust.record_diff.
DESCRIPTION_PATHS`): a record written before a newer version recorded a safetensors file's ``__metadata__`` (session
49) or the layer probe's reading of a model of one's own (session 50: ``activation`` ``top-k (detected)``) has the same
results as the newer one; before, every ``model`` field was verdict-bearing, so such a pair got no summary at all (as
if a number had moved). A difference in the weights or in a real activation still gets none."""

from __future__ import annotations

import copy

import pytest

from kwta_robust.record_diff import differences, record_differences, verdicts_summary


def _record() -> dict:
    """A small record dict: what ``diff`` compares (the fields the summary reads; no file needed)."""
    return {
        "schema_version": 3, "status": "complete", "label": "mine",
        "model": {"activation": "relu", "num_kwta_layers": 0, "kwta_ratio": None, "state_sha256": "ab" * 32,
                  "training": {"model_factory": "lab.nets:make", "weights_format": "safetensors"}},
        "clean": {"correct": 9, "n": 10, "accuracy": 0.9},
        "results": [{"label": "pgd", "norm": "linf", "eps": 0.1, "robust": {"correct": 4, "n": 10, "accuracy": 0.4}}],
        "provenance": {"versions": {"kwta_robust_git": "aaaa"}},
    }


def _newer(old: dict) -> dict:
    new = copy.deepcopy(old)
    new["model"].update(activation="top-k (detected)", activation_layers="relu", detected_kwta_ratio=0.125,
                        detected_kwta_mode="dense")
    new["model"]["training"].update(weights_metadata={"format": "pt"}, weights_metadata_left_out=3)
    new["provenance"]["versions"]["kwta_robust_git"] = "bbbb"
    return new


@pytest.mark.parametrize("as_lines", [True, False])
def test_a_newer_description_of_the_same_model_keeps_the_same_results_summary(as_lines: bool) -> None:
    old = _record()
    found = (record_differences if as_lines else differences)(old, _newer(old))
    assert len(found) == 7  # the five model fields, the left-out count and the commit are listed all the same
    summary = verdicts_summary(found)
    assert summary is not None and summary.startswith(
        "the results are the same: only provenance and what a newer version records about the model (no number) "
        "differs")


def test_a_description_alone_says_so_without_provenance() -> None:
    old = _record()
    new = copy.deepcopy(old)
    new["model"]["training"]["weights_metadata"] = {"format": "pt"}
    summary = verdicts_summary(record_differences(old, new))
    assert summary is not None and summary.startswith(
        "the results are the same: only what a newer version records about the model (no number) differs")


@pytest.mark.parametrize("change", [
    ("state_sha256", "cd" * 32),  # other weights
    ("activation", "kwta"),  # another activation, not the probe's reading of the same model
    ("kwta_ratio", 0.25),
])
def test_a_model_that_differs_still_gets_no_summary(change: tuple) -> None:
    old = _record()
    new = _newer(old)
    new["model"][change[0]] = change[1]
    assert verdicts_summary(record_differences(old, new)) is None


def test_a_moved_number_beside_a_description_still_gets_no_summary() -> None:
    old = _record()
    new = _newer(old)
    new["results"][0]["robust"] = {"correct": 3, "n": 10, "accuracy": 0.3}
    assert verdicts_summary(record_differences(old, new)) is None
