"""``diff``'s one line for a model of one's own named as the layer probe found it (``probe_relabel``) said "a
description change, not a result change ... the first (written before) the describer's 'relu'" for a ReLU model's
record against another, top-k, model's record too: their ``model.activation`` differs alike, but their weights
(``model.state_sha256``) and the probe's findings (``detection``) say they are two models. Such records are now
listed field by field; the same weights and findings still fold into the one line."""

from __future__ import annotations

from kwta_robust.record_diff import differences, probe_relabel

DETECTED = {"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
            "detected_kwta_mode": "dense"}
GATES = {"layers": [{"kind": "gate", "name": "2", "ratio": 0.25}]}


def test_two_models_are_not_folded_into_a_description_change() -> None:
    relu = {"model": {"activation": "relu", "state_sha256": "aa"}, "detection": {"layers": []}}
    topk = {"model": {**DETECTED, "state_sha256": "bb"}, "detection": GATES}
    found = differences(relu, topk)
    assert probe_relabel(found) == (None, found)
    weights_only = differences({**relu, "detection": GATES}, topk)  # other weights, the same findings
    assert probe_relabel(weights_only) == (None, weights_only)
    findings_only = differences(relu, {**topk, "model": {**DETECTED, "state_sha256": "aa"}})
    assert probe_relabel(findings_only) == (None, findings_only)


def test_one_model_described_anew_is_still_one_line() -> None:
    older = {"model": {"activation": "relu", "state_sha256": "aa"}, "detection": GATES}
    newer = {"model": {**DETECTED, "state_sha256": "aa"}, "detection": GATES}
    line, listed = probe_relabel(differences(older, newer))
    assert line is not None and "a description change, not a result change" in line and listed == []
