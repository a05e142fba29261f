"""A sharded run on the process executor: a Python caller's changed torch determinism settings (cuDNN benchmark mode,
TF32 matrix products) did not reach the spawned workers, whose part records (and so the merged record's
``provenance.determinism``) named torch's defaults. The driver now ships its settings with every job and each worker
applies them for the job (as it applies the driver's thread count)."""

from __future__ import annotations

from pathlib import Path

import torch

from kwta_robust.cli import main
from kwta_robust.results import load_record
from kwta_robust.runtime import determinism_settings, torch_determinism
from test_cli_eval import write_checkpoint, write_config


def test_the_merged_record_names_the_callers_determinism_settings(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "relu.pt")
    cfg = write_config(tmp_path / "c.yaml", n_examples=12, batch_size=6, attacks=["fgsm"], noise=[],
                       threats=[{"norm": "linf", "epsilons": [0.1]}])
    before = determinism_settings()
    try:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
        changed = determinism_settings()
        assert changed["cudnn_benchmark"] and changed["float32_matmul_precision"] == "high" and changed != before
        assert main(["evaluate", str(ckpt), "--config", str(cfg), "--no-progress", "--out", str(tmp_path / "r.json"),
                     "--shards", "2", "--executor", "process"]) == 0
        assert determinism_settings() == changed  # the driver's own settings are left as the caller set them
    finally:
        torch.backends.cudnn.benchmark = before["cudnn_benchmark"]
        torch.set_float32_matmul_precision(before["float32_matmul_precision"])
    record = load_record(tmp_path / "r.json")
    assert record.provenance["shards"]["executor"]["name"] == "pool"
    assert record.provenance["determinism"] == changed


def test_a_job_applies_the_drivers_settings_and_puts_its_own_back() -> None:
    before = determinism_settings()
    wanted = {**before, "cudnn_benchmark": not before["cudnn_benchmark"], "float32_matmul_precision": "medium",
              "cuda_matmul_allow_tf32": True}
    with torch_determinism(wanted):
        assert determinism_settings() == wanted
    assert determinism_settings() == before
    with torch_determinism(None):  # a job built without them (an older driver): the worker's own, untouched
        assert determinism_settings() == before
