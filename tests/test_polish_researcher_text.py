"""Text a researcher misread, found by a walk through the README as one (each test failed on the text before):

* ``compare`` of two factories that take different arguments named the factory that refused ``--factory-kwargs``
  but not that compare passes them to every factory (nor which model it was building, nor the way out);
* the top-k gates the layer probe found read as bare numbers (``top-k gates 4 20/200``: layer ``4`` of a
  ``Sequential``, k 20 of 200); the flag's evidence keeps its form;
* the data-set notes named a data file by the path it sat at, which does not tell its content (records are
  compared by the file's SHA-256);
* ``evaluate``'s detailed notes wrote a noise probe as ``noise numenta (value=1): levels [0.0, 0.5]`` where the
  other notes write ``noise numenta: levels 0 / 0.5, ..., noise pixel value 1``;
* the channels-last info line quoted torch's ``Use .reshape(...) instead.``, advice for the user's code that it
  is not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from eval_helpers import make_record, make_result
from kwta_robust.comparability import comparability_notes
from kwta_robust.errors import ConfigError
from kwta_robust.factory_args import check_factory_arguments
from kwta_robust.matrix import build_matrices
from kwta_robust.matrix_checks import config_differences, gate_ratios, grid_ratio_conflict
from kwta_robust.report import detail_table, other_noise_notes
from kwta_robust.results import EvalRecord, NoiseResult
from kwta_robust.runtime import evaluation_layout
from test_cli_eval import run_error, write_config

SPCNN, NUPIC = "kwta_robust.zoo:xiao_spcnn", "kwta_robust.zoo:nupic_sparse_cnn"


def test_compare_says_which_model_refused_the_shared_factory_kwargs_and_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    line = run_error(capsys, ["compare", SPCNN, NUPIC, "--factory-kwargs", '{"sp1": 0.1}', "--config", str(cfg),
                              "--out-dir", str(tmp_path / "cmp"), "--dry-run"])
    assert line.startswith(f"error: MODEL 2 (nupic_sparse_cnn): model factory '{NUPIC}': unknown argument 'sp1'; "
                           "accepted: ")
    assert line.endswith("; compare passes the same --factory-kwargs to all 2 package.module:function models but "
                         "those given their own by label: give this one its own, --factory-kwargs "
                         "'nupic_sparse_cnn={...}' (its label, '=', a JSON object; 'nupic_sparse_cnn={}' for none), "
                         "or give the factories the same arguments")

    def wrapped(**kwargs: float) -> nn.Module:  # a wrapper (the fix before per-model arguments) takes any name
        return nn.Identity()

    check_factory_arguments("mine:wrapped", wrapped, {"sp1": 0.1})
    # one factory beside a checkpoint: the arguments are that factory's alone, the message as it was
    (tmp_path / "model.pt").write_bytes(b"")
    line = run_error(capsys, ["compare", NUPIC, str(tmp_path / "model.pt"), "--factory-kwargs", '{"sp1": 0.1}',
                              "--config", str(cfg), "--out-dir", str(tmp_path / "cmp"), "--dry-run"])
    assert line.startswith(f"error: model factory '{NUPIC}': unknown argument 'sp1'; accepted: ")
    assert "MODEL" not in line and line.endswith("(--factory-kwargs)")


def _gated(declared: float | None) -> EvalRecord:
    """A record of a model without our kWTA layers whose probe found top-k gates at ``4`` (of a ``Sequential``)
    keeping 20 of 200 units and at ``7`` keeping 10 of 100, with a declared ``--grid-cell`` ratio."""
    layers = [{"name": name, "module_class": "TopK", "kinds": ["gate"], "grouping": "dense",
               "evidence": {"grouping": "dense", "k": k, "group_size": n}} for name, k, n in (("4", 20, 200),
                                                                                         ("7", 10, 100))]
    record = make_record(detection={"layers": layers})
    record.model.update(activation="relu", num_kwta_layers=0, kwta_ratio=None)
    if declared is not None:
        record.model["grid_cell"] = {"kwta_ratio": declared, "weight_sparsity": 0.0, "pruning_method": "none"}
    return record


def test_the_gates_found_read_as_layers_keeping_k_of_n() -> None:
    with pytest.raises(ConfigError) as info:
        build_matrices([_gated(None)])
    assert "; the layer probe found top-k gates in layers 4 (k/N 20/200), 7 (k/N 10/100); a matrix row" in str(
        info.value)
    assert grid_ratio_conflict(_gated(0.5)) == (
        "declared --grid-cell kwta_ratio=0.5 but the layer probe measured k/N 20/200 (0.1) at its top-k gates in "
        "layers 4, 7; declare the cell again with the ratio the model has (nothing is evaluated again): "
        "--grid-cell kwta_ratio=0.1,weight_sparsity=0")
    assert gate_ratios(_gated(0.5)) == ["4 20/200", "7 10/100"]  # the flag's evidence, as records hold it


def _on_file(path: str, sha256: str, label: str, n: int = 10) -> EvalRecord:
    record = make_record([make_result("pgd", [1] * n, eps=0.1)], label=label)
    record.config = {"seed": 0, "dataset": {"file": path, "sha256": sha256}}
    record.dataset["name"] = path
    return record


def test_data_file_notes_name_the_file_and_its_content() -> None:
    a, b = _on_file("/data/a/digits.npz", "ab" * 32, "a"), _on_file("/data/b/digits.npz", "cd" * 32, "b")
    note = comparability_notes([a, b])[0]
    assert note == ("NOT COMPARABLE: the records were evaluated on different data sets (a: digits.npz (sha256 "
                    "abababababab) test, n=10, b: digits.npz (sha256 cdcdcdcdcdcd) test, n=10)")
    moved = _on_file("/elsewhere/digits.npz", "ab" * 32, "c", n=8)  # the same file elsewhere, fewer samples
    assert comparability_notes([a, moved])[0].startswith(
        "the records were evaluated on different samples of digits.npz (sha256 abababababab) (n 10 / 8)")
    other = _on_file("/data/a/digits.npz", "cd" * 32, "d")  # another file at the same path
    assert config_differences({"a": a, "a2": _on_file("/x/digits.npz", "ab" * 32, "a2"), "d": other})["d"] == (
        "evaluated with another evaluation config than the other cells (differs in: data set digits.npz (sha256 "
        "cdcdcdcdcdcd) test, dataset)")


def test_the_detailed_noise_notes_word_a_probe_as_the_other_notes_do() -> None:
    record = make_record([make_result("pgd", [1, 0, 1, 0])], label="kwta")
    record.noise = [NoiseResult("numenta", [0.0, 0.5], 1, 0, {"noise_score": 5.0, "num_samples": 4,
                                                              "params": {"value": 1.0}}, 0.1),
                    NoiseResult("gaussian", [0.0, 0.1], 2, 0, {"accuracy": [0.5, 0.25], "params": {"std": 0.1}}, 0.1)]
    detail = [n for n in detail_table(record).notes if n.startswith("noise ")]
    assert detail == ["noise numenta: levels 0 / 0.5, 1 draw, noise pixel value 1, noise score 5",  # was (value=1)
                      "noise gaussian: levels 0 / 0.1, 2 draws, std 0.1, accuracy % per level 50.0 / 25.0"]
    assert other_noise_notes([record]) == ["noise gaussian: levels 0 / 0.1, 2 draws, std 0.1, accuracy % per level "
                                           "50.0 / 25.0"]  # as the detailed note words it (noise50: one text)


class _ViewsNchw(nn.Module):
    """A convolution whose output is ``view``-ed as NCHW (released kWTA code does): it cannot run channels-last."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_the_channels_last_info_line_says_nothing_needs_to_change(caplog: pytest.LogCaptureFixture) -> None:
    model, x = _ViewsNchw().eval(), torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="kwta_robust.runtime"):
        with evaluation_layout([model], "auto", torch.device("cpu"), lambda: [model(x)]) as layout:
            assert layout == "as given"
    (line,) = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert line == (logging.INFO, "memory layout: keeping the model's own layout: a trial run in channels-last (a CPU "
                                  "speed-up the harness tries by itself) failed (torch: view size is not compatible "
                                  "with input tensor's size and stride (at least one dimension spans across two "
                                  "contiguous subspaces)); nothing needs to change in your model or config: the "
                                  "results are the same, only the speed differs")
    assert "reshape" not in line[1] and "instead" not in line[1]
