"""A checkpoint of someone else's code saved as kuangliu's pytorch-cifar and Xiao et al.'s kWTA code save it,
``{'net': state_dict (DataParallel 'module.' keys), 'acc': 91.2, 'epoch': 80}``: its scalar entries were dropped
without a note. They are kept in the record (``model.training.checkpoint_meta``), and where an entry named like a
clean accuracy is far outside the 95% interval of the clean accuracy measured, an ``info`` flag asks whether the
samples or the normalization differ (the most common silent error with another group's checkpoint); never critical,
and no flag where the claim agrees (as a percentage or a fraction) or names a training or adversarial accuracy."""

from __future__ import annotations

import dataclasses
import re
import pytest
import torch
import yaml

from kwta_robust.checkpoint_checks import CHECKPOINT_ACCURACY
from kwta_robust.cli import main
from kwta_robust.diagnostics import run_checks
from kwta_robust.formats import render_stdout
from kwta_robust.results import EvalRecord, load_record

FACTORY = "test_relu52_detected_relu:relu_twin"


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> EvalRecord:
    from test_relu52_detected_relu import relu_twin

    folder = tmp_path_factory.mktemp("meta52")
    weights = folder / "ckpt.pth"
    state = {f"module.{k}": v for k, v in relu_twin().state_dict().items()}  # saved under nn.DataParallel
    torch.save({"net": state, "acc": 91.2, "epoch": 80, "optimizer": {"lr": 0.1}, "note": "x" * 500}, weights)
    config = folder / "c.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 8, "batch_size": 8, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 1}}],
        "diagnostics": {"budget_check": {"enabled": False}}}))
    out = folder / "r.json"
    assert main(["evaluate", "--model-factory", FACTORY, "--weights", str(weights), "--config", str(config),
                 "--out", str(out), "--no-progress"]) == 0
    return load_record(out)


def test_the_checkpoints_scalar_entries_are_kept_and_a_far_claim_is_an_info_note(record: EvalRecord) -> None:
    assert record.model["training"]["checkpoint_meta"] == {"acc": 91.2, "epoch": 80}  # no optimizer, no long text
    assert record.clean.accuracy < 0.6  # untrained weights: far below the 91.2 the file claims
    flags = [f for f in record.diagnostics if f.code == CHECKPOINT_ACCURACY]
    assert len(flags) == 1 and flags[0].severity == "info"
    clean = record.clean
    interval = rf"\({clean.ci_low * 100:.1f}–{clean.ci_high * 100:.1f}\)"
    assert re.fullmatch(rf"the checkpoint says acc 91\.2; measured clean {clean.accuracy * 100:.1f} {interval} on "
                        r"these 8 test samples: other samples, or another normalization or preprocessing than the "
                        r"model was trained with\? .*", flags[0].message), flags[0].message
    assert flags[0].evidence["claimed_fraction"] == {"acc": pytest.approx(0.912)}
    assert "(checkpoint-accuracy-differs)" in render_stdout([record], "md")  # an info flag, in parentheses


def _with_meta(record: EvalRecord, meta: dict) -> EvalRecord:
    model = {**record.model, "training": {**record.model["training"], "checkpoint_meta": meta}}
    return dataclasses.replace(record, model=model)


def _noted(record: EvalRecord, meta: dict) -> list[str]:
    """The severities of the flags the diagnostics raise on ``record`` holding ``meta`` as its checkpoint's entries."""
    return [f.severity for f in run_checks(_with_meta(record, meta)) if f.code == CHECKPOINT_ACCURACY]


def test_no_note_where_the_claim_agrees_or_is_no_clean_test_accuracy(record: EvalRecord) -> None:
    measured = record.clean.accuracy
    for meta in ({"acc": round(measured * 100, 1)}, {"best_acc": measured}, {"top1": record.clean.ci_high + 0.02},
                 {"train_acc": 99.9, "adv_acc": 91.2, "epoch": 80}, {"acc": "91.2%"}, {}):
        assert _noted(record, meta) == [], meta
    for meta in ({"acc": 0.912}, {"test_acc": 91.2}, {"net.best_prec1": 99.0}):  # a fraction, or a percentage
        assert _noted(record, meta) == ["info"], meta
