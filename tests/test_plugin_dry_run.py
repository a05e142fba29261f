"""`evaluate --dry-run` runs the gradient probes (kwta_robust.dry_run.probe_flags): a model whose logits have no
input gradient (a forward under torch.no_grad()) is named by the dry run with the zero-gradients flag the real run
raises, word for word, before any attack runs.

Before: the dry run skipped the probes and printed a clean plan; only the real run flagged the model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from kwta_robust.results import load_record
from test_dry_run import notes, run

CUT_MODEL = '''
import torch
from torch import nn


class CutNet(nn.Module):
    """Computes its logits under torch.no_grad(): no input gradient reaches the attacks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        with torch.no_grad():
            return self.fc(x.flatten(1))


def make_net(num_classes: int = 10) -> nn.Module:
    return CutNet()
'''
CONFIG = {"dataset": "mnist5k", "n_examples": 8, "batch_size": 8, "device": "cpu", "seed": 0,
          "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fgsm"}], "noise": [],
          "diagnostics": {"enabled": True, "gradient_batch": 4}}


@pytest.fixture()
def cut_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The model's module on sys.path (imported afresh by each test), its data and config; yields the ``evaluate``
    arguments."""
    (tmp_path / "cut_model_dry.py").write_text(CUT_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    gen = torch.Generator().manual_seed(0)
    torch.save({"x": torch.rand(8, 1, 8, 8, generator=gen), "y": torch.randint(0, 10, (8,), generator=gen)},
               tmp_path / "data.pt")
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(CONFIG))
    yield ["-q", "evaluate", "--model-factory", "cut_model_dry:make_net", "--config", "eval.yaml", "--data",
           "data.pt", "--out", "r.json", "--no-progress"]
    sys.modules.pop("cut_model_dry", None)


def test_the_dry_run_flags_a_cut_gradient_as_the_run_does(cut_model: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    rc, out, errors = run([*cut_model, "--dry-run"], capsys)
    assert rc == 0 and errors == [] and not (tmp_path / "r.json").exists()
    found = [n.removeprefix("- gradient probes: ") for n in notes(out) if n.startswith("- gradient probes: ")]
    assert len(found) == 1 and found[0].startswith("critical zero-gradients: the model's logits have no input "
                                                   "gradient at all on the 4 probed samples"), found

    rc, _, errors = run(cut_model, capsys)
    assert rc == 0 and errors == []
    [flag] = [f for f in load_record(tmp_path / "r.json").diagnostics if f.code == "zero-gradients"]
    assert found == [f"{flag.severity} {flag.code}: {flag.message}"]  # the real run's own words


def test_a_model_with_gradients_is_reported_probed_and_unflagged(cut_model: list[str], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "cut_model_dry.py").write_text(CUT_MODEL.replace("with torch.no_grad():", "if True:"))
    rc, out, _ = run([*cut_model, "--dry-run"], capsys)
    assert rc == 0
    probes = [n for n in notes(out) if "gradient probes" in n]
    assert probes == ["- gradient probes (4 inputs): none of zero-gradients, probabilities-not-logits, "
                      "batch-dependent, low-precision flagged"]
    assert not any("the gradient probes" in n for n in notes(out) if n.startswith("- not run by a dry run"))
