"""Pins for README sentences added today that no test held (the second README-truth audit): the ``grid-cell-ratio``
check takes the k the package's layers keep in eval mode, ``k_inference_factor`` included; a config with
diagnostics turned off gets no flag at all, ``sanity-not-run`` included; ``provenance.determinism`` names exactly the
seven settings the README lists."""

from __future__ import annotations

import torch
from torch import nn

from eval_helpers import make_record
from kwta_robust.detect import detect_layers
from kwta_robust.layers import KWTA
from kwta_robust.matrix_checks import grid_ratio_conflict
from kwta_robust.models.describe import describe_model
from kwta_robust.results import EvalRecord
from kwta_robust.runtime import determinism_settings
from test_ideas_records import CONFIG, _evaluate
from test_python_api import toy_data


def _factor_record(declared: float) -> EvalRecord:
    """A record of an MLP whose package KWTA layer (k/N 0.1 over 50 units) keeps twice its k in eval mode, as
    ``describe_model`` and the layer probe see it, declared at ``declared``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 50), KWTA(ratio=0.1, k_inference_factor=2.0),
                        nn.Linear(50, 10)).eval()
    record = make_record(n=4)
    record.model.update(describe_model(net), grid_cell={"kwta_ratio": declared, "weight_sparsity": 0.0,
                                                        "pruning_method": "dense"})
    record.detection = detect_layers(net, toy_data()[0][:8], log=False).to_dict()
    return record


def test_the_ratio_check_scales_k_by_the_inference_factor() -> None:
    """KWTA(ratio 0.1, k_inference_factor 2) over 50 units keeps round(5 · 2) = 10 in eval mode: declared 0.1 is
    its ratio (floor(0.1 · 50) = 5 alone would be 5 units off); declared 0.2 gives round(10 · 2) = 20, 10 off."""
    record = _factor_record(0.1)
    assert record.model["k_inference_factor"] == 2.0
    assert [l["evidence"]["k"] for l in record.detection["layers"]] == [10]  # what the probe measured
    assert grid_ratio_conflict(record) is None
    flagged = grid_ratio_conflict(_factor_record(0.2))
    assert flagged is not None and flagged.startswith("declared --grid-cell kwta_ratio=0.2 but the layer probe "
                                                      "measured k/N 10/50 (0.2)")


def test_diagnostics_turned_off_raise_no_flag_not_even_sanity_not_run() -> None:
    """README: ``enabled: false`` under ``diagnostics``: no flag and no budget check."""
    record = _evaluate({**CONFIG, "diagnostics": {"enabled": False}})
    assert record.config["diagnostics"]["sanity"] is None and record.diagnostics == []


def test_provenance_determinism_names_the_seven_settings_the_readme_lists() -> None:
    record = _evaluate(CONFIG)
    assert sorted(record.provenance["determinism"]) == sorted(
        ["deterministic_algorithms", "deterministic_warn_only", "cudnn_deterministic", "cudnn_benchmark",
         "cudnn_allow_tf32", "cuda_matmul_allow_tf32", "float32_matmul_precision"])
    assert record.provenance["determinism"] == determinism_settings()
