"""``kwta-robust diff`` of a record written before the layer probe's reading was recorded (``model.activation``
``relu``, or, written in session 50, ``model.training.activation`` ``relu``) against a newer record of the same kWTA
model of one's own (``top-k (detected)`` in ``model`` and its ``training`` copy): one line says that the model's
description changed, not a result (it listed each field apart, and a ``training`` copy that differs withheld the
summary as if a number had moved); the summary is printed. A probe reading that both records hold and that differs
is another model: listed, no summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kwta_robust.cli import main
from kwta_robust.record_diff import differences, verdicts_summary

FACTORY = "test_foreign51_provenance:topk_net"
DETECTED = {"activation": "top-k (detected)", "activation_layers": "relu", "detected_kwta_ratio": 0.25,
            "detected_kwta_mode": "dense"}


@pytest.fixture(scope="module")
def newer(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A record of the hand-written top-k model as this version names it (``model`` and ``model.training``)."""
    folder = tmp_path_factory.mktemp("diff51")
    config, out = folder / "c.yaml", folder / "r.json"
    config.write_text(yaml.safe_dump({
        "dataset": "digits", "n_examples": 4, "batch_size": 4, "device": "cpu", "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
        "diagnostics": {"budget_check": {"enabled": False}}}))
    assert main(["evaluate", "--model-factory", FACTORY, "--config", str(config), "--out", str(out),
                 "--no-progress"]) == 0
    record = json.loads(out.read_text())
    record["model"].update(DETECTED)
    record["model"]["training"].update(DETECTED)
    return record


def _written_before(new: dict, training_only: bool) -> dict:
    """``new`` as a version before wrote it: the describer's ``relu`` where the probe's reading stands, in
    ``model.training`` only (session 50) or in ``model`` too."""
    old = json.loads(json.dumps(new))
    for section in [old["model"]["training"]] + ([] if training_only else [old["model"]]):
        for key in DETECTED:
            section.pop(key)
        section["activation"] = "relu"
    return old


@pytest.mark.parametrize("training_only", [False, True])
def test_diff_says_in_one_line_that_only_the_description_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], newer: dict, training_only: bool) -> None:
    paths = {"old": tmp_path / "old.json", "new": tmp_path / "new.json"}
    paths["old"].write_text(json.dumps(_written_before(newer, training_only)))
    paths["new"].write_text(json.dumps(newer))
    found = differences(json.loads(paths["old"].read_text()), newer)
    assert len(found) == (4 if training_only else 8)
    capsys.readouterr()
    assert main(["diff", str(paths["old"]), str(paths["new"])]) == 1
    printed = capsys.readouterr().out.splitlines()
    head = "model.training.activation" if training_only else "model.activation"
    assert printed[0] == f"{len(found)} field(s) differ:" and len(printed) == 3  # one line for all of them
    assert printed[1].startswith(f"  {head}: 'relu' != 'top-k (detected)' and {len(found) - 1} more field(s) of the "
                                 "layer probe's reading (")
    assert "a description change, not a result change: the second record (a newer version)" in printed[1]
    assert printed[2].startswith("the results are the same: only what a newer version records about the model")
    assert printed[2] == verdicts_summary(found)
    other = json.loads(json.dumps(newer))  # both hold a reading of the gates and it differs: another model
    other["model"]["training"]["detected_kwta_ratio"] = 0.5
    assert verdicts_summary(differences(newer, other)) is None
