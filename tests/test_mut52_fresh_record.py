"""Mutation review 52 of kwta_robust.fresh_record.probed_model: a model the describer read as ``relu`` or ``none``
whose layer probe found top-k gates (modules, or gates built inline in a ``forward``) is named ``top-k (detected)``
with the probe's k/N and grouping (``None`` where the gates disagree), its ``training`` copy renamed alike (nothing
else of it changed); a shard's own probe is read where the record holds none, never over the record's; a model with
kWTA layers, another reading, or no gate found is returned as it is, and applying it twice changes nothing."""

from __future__ import annotations

from eval_helpers import make_record
from kwta_robust.fresh_record import DETECTED_ACTIVATION, probed_model


def gate(name: str, grouping: str | None = "dense", k: int = 2) -> dict:
    return {"name": name, "kinds": ["gate"], "grouping": grouping, "evidence": {"k": k, "group_size": 8}}


def record(activation: str = "relu", *layers: dict, kwta_layers: int = 0, probed: bool = True):
    rec = make_record([], detection={"layers": list(layers)} if probed else None)
    rec.model.update({"activation": activation, "num_kwta_layers": kwta_layers,
                      "training": {"activation": activation, "epochs": 3}})
    return rec


def test_a_relu_model_with_probed_gates_is_named_as_the_probe_found_it() -> None:
    model = probed_model(record("relu", gate("a"), gate("b")))
    found = {"activation": DETECTED_ACTIVATION, "activation_layers": "relu", "detected_kwta_ratio": 0.25,
             "detected_kwta_mode": "dense"}
    assert {k: model[k] for k in found} == found and model["training"] == {"epochs": 3, **found}
    again = record("relu")
    again.model, again.detection = dict(model), {"layers": [gate("a"), gate("b")]}
    assert probed_model(again) == model  # a resumed record: unchanged


def test_none_is_relabelled_and_disagreeing_or_missing_groupings_give_none() -> None:
    assert probed_model(record("none", gate("a")))["activation"] == DETECTED_ACTIVATION
    assert probed_model(record("relu", gate("a", "dense"), gate("b", "channel")))["detected_kwta_mode"] is None
    assert probed_model(record("relu", gate("a", None), gate("b", "channel")))["detected_kwta_mode"] == "channel"


def test_a_kwta_model_another_reading_or_no_gate_is_left_as_it_is() -> None:
    for rec in (record("relu", gate("a"), kwta_layers=2), record("kwta", gate("a")), record("relu")):
        assert probed_model(rec) == rec.model


def test_a_shards_own_probe_is_read_only_where_the_record_holds_none() -> None:
    shard = {"layers": [gate("a")]}
    assert probed_model(record("relu", probed=False), shard)["activation"] == DETECTED_ACTIVATION
    held = record("relu", gate("a", k=4))  # the record's own probe: k/N 0.5, not the shard's 0.25
    assert probed_model(held, shard)["detected_kwta_ratio"] == 0.5
    assert probed_model(record("relu"), shard)["activation"] == "relu"  # an empty probe of its own is kept too


def test_gates_built_inline_in_a_forward_are_probed_gates_too() -> None:
    rec = record("relu")
    rec.detection = {"layers": [], "selections": [{"gate": "channel", "modules": ["block"], "k": 3,
                                                   "group_size": 12}]}
    model = probed_model(rec)
    assert (model["activation"], model["detected_kwta_ratio"], model["detected_kwta_mode"]) == (
        DETECTED_ACTIVATION, 0.25, "channel")
