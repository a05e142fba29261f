"""A sharded run that finds the complete record of its model and config at ``--out`` returns it, but a foreign-kWTA
record written before the layer probe's relabel (``model.activation`` ``relu``) kept that label, while an unsharded
re-run relabels it ``top-k (detected)`` (:func:`kwta_robust.fresh_record.probed_model`). The sharded path now
relabels it as well, and writes the record again only where that changed it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kwta_robust.cli import main
from kwta_robust.results import load_record, save_record

FACTORY = "test_seeds50_foreign_activation:topk_net"
DETECTED = {"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
            "detected_kwta_mode": "dense"}


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 4, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"budget_check": {"enabled": False}}}))
    return config


def _evaluate(config: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--model-factory", FACTORY, "--config", str(config), "--out", str(out), "--no-progress",
                 *extra])


def _as_written_before(out: Path) -> dict:
    """The record at ``out`` as a run before the relabel wrote it: the describer's ``relu``, no probe reading."""
    record = load_record(out)
    record.model = {k: v for k, v in record.model.items() if k not in DETECTED or k == "activation"}
    record.model["activation"] = "relu"
    save_record(record, out)
    return record.model


def test_a_sharded_run_relabels_an_old_complete_foreign_kwta_record(tmp_path: Path) -> None:
    config, out = _config(tmp_path), tmp_path / "topk.json"
    assert _evaluate(config, out) == 0
    relabelled = load_record(out).model
    assert {k: relabelled.get(k) for k in DETECTED} == DETECTED
    _as_written_before(out)
    assert load_record(out).model["activation"] == "relu"
    assert _evaluate(config, out, "--shards", "2") == 0
    assert load_record(out).model == relabelled  # as the unsharded re-run leaves it
    assert not (tmp_path / "topk.json.parts").exists()


def test_a_sharded_run_leaves_a_record_already_relabelled_untouched(tmp_path: Path) -> None:
    config, out = _config(tmp_path), tmp_path / "topk.json"
    assert _evaluate(config, out) == 0
    before, stamp = out.read_bytes(), out.stat().st_mtime_ns
    assert _evaluate(config, out, "--shards", "2") == 0
    assert out.read_bytes() == before and out.stat().st_mtime_ns == stamp  # nothing changed, nothing written
    assert json.loads(before)["model"]["activation"] == "top-k (detected)"
