"""Mutation review 52 of kwta_robust.record_diff.probe_relabel: its one line names the model's own activation first,
which record is the newer one (either order) and the older's describer reading, and folds the probe fields the older
record lacks; it refuses a ``kwta`` record (another reading, not the describer's ``relu``/``none``), a record without
the ``activation`` or without ``detection`` at all, and keeps a probe reading both records hold but differ in."""

from __future__ import annotations

from kwta_robust.record_diff import differences, probe_relabel

DETECTED = {"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
            "detected_kwta_mode": "dense"}
GATES = {"layers": [{"kind": "gate", "name": "2", "ratio": 0.25}]}
OLDER = {"model": {"activation": "relu", "state_sha256": "aa", "training": {"activation": "relu"}}, "detection": GATES}
NEWER = {"model": {**DETECTED, "state_sha256": "aa", "training": dict(DETECTED)}, "detection": GATES}
FOLDED = ("and 7 more field(s) of the layer probe's reading (activation, activation_layers, detected_kwta_mode, "
          "detected_kwta_ratio in model and model.training): a description change, not a result change: the ")


def test_either_order_names_the_newer_record_and_the_older_reading() -> None:
    line, listed = probe_relabel(differences(NEWER, OLDER))
    assert line == ("model.activation: 'top-k (detected)' != 'relu' " + FOLDED + "first record (a newer version) "
                    "names the top-k gates the layer probe found in this model, the second (written before) the "
                    "describer's 'relu'") and listed == []
    line, listed = probe_relabel(differences(OLDER, NEWER))
    assert line is not None and listed == []
    assert line.startswith("model.activation: 'relu' != 'top-k (detected)' " + FOLDED + "second record (a newer")
    assert line.endswith("the first (written before) the describer's 'relu'")


def test_none_is_a_describer_reading_too() -> None:
    older = {**OLDER, "model": {**OLDER["model"], "activation": "none", "training": {"activation": "none"}}}
    line, _ = probe_relabel(differences(older, {**NEWER, "model": {**NEWER["model"], "activation_layers": "none"}}))
    assert line is not None and line.endswith("the describer's 'none'")


def test_another_reading_or_a_missing_field_is_listed_as_it_is() -> None:
    kwta = {**OLDER, "model": {"activation": "kwta", "state_sha256": "aa"}}
    no_activation = {**OLDER, "model": {"state_sha256": "aa"}}
    no_detection = {"model": OLDER["model"]}
    for older in (kwta, no_activation, no_detection):
        found = differences(older, NEWER)
        assert probe_relabel(found) == (None, found), older


def test_a_probe_reading_both_records_hold_but_differ_in_is_kept() -> None:
    older = {**NEWER, "model": {**NEWER["model"], "activation": "relu", "detected_kwta_ratio": 0.5}}
    line, listed = probe_relabel(differences(older, NEWER))
    assert line is not None and [d.path for d in listed] == ["model.detected_kwta_ratio"]
