"""A caller who sets TF32 through torch's ``fp32_precision`` API (torch >= 2.9, the one torch's CUDA notes now
recommend: ``torch.backends.fp32_precision = "tf32"``) made every evaluation fail at its start with a raw traceback:
``provenance.determinism`` read the legacy ``allow_tf32`` flags, which torch then refuses ("mix of the legacy and new
APIs"). Each case runs in a fresh interpreter, so the process-wide switches of this test process stay untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli_eval import write_checkpoint, write_config

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}

READ = """
import json, sys, torch
exec(sys.argv[1])
from kwta_robust.runtime import determinism_settings, torch_determinism
settings = determinism_settings()
with torch_determinism(settings):  # an in-process shard job: the driver's own settings
    inside = determinism_settings()
print(json.dumps({"settings": settings, "inside": inside, "after": determinism_settings()}))
"""


def _read(setup: str) -> dict:
    done = subprocess.run([sys.executable, "-c", READ, setup], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_tf32_set_through_the_fp32_precision_api_is_read_not_raised() -> None:
    seen = _read("torch.backends.fp32_precision = 'tf32'")
    tf32 = {k: seen["settings"][k] for k in ("cudnn_allow_tf32", "cuda_matmul_allow_tf32", "float32_matmul_precision")}
    assert tf32 == {"cudnn_allow_tf32": True, "cuda_matmul_allow_tf32": True, "float32_matmul_precision": "high"}
    assert seen["inside"] == seen["settings"] == seen["after"]


def test_ieee_convolutions_set_through_the_fp32_precision_api_read_as_no_tf32() -> None:
    seen = _read("torch.backends.cudnn.fp32_precision = 'ieee'")
    assert seen["settings"]["cudnn_allow_tf32"] is False
    assert seen["settings"]["cuda_matmul_allow_tf32"] is False  # torch's default for matrix products
    assert seen["settings"]["float32_matmul_precision"] == "highest"


def test_the_legacy_reads_are_kept_where_torch_allows_them() -> None:
    seen = _read("torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = False")
    assert (seen["settings"]["cuda_matmul_allow_tf32"], seen["settings"]["cudnn_allow_tf32"]) == (True, False)
    assert seen["settings"]["float32_matmul_precision"] == "high"  # torch ties it to the matmul flag


EVALUATE = """
import sys, torch
torch.backends.fp32_precision = "tf32"
from kwta_robust.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_evaluation_runs_and_records_tf32_set_through_the_fp32_precision_api(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "relu.pt")
    cfg = write_config(tmp_path / "c.yaml", n_examples=4, batch_size=4, attacks=["fgsm"], noise=[],
                       threats=[{"norm": "linf", "epsilons": [0.1]}])
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-c", EVALUATE, "evaluate", str(ckpt), "--config", str(cfg),
                           "--no-progress", "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    determinism = json.loads(out.read_text(encoding="utf-8"))["provenance"]["determinism"]
    assert (determinism["cuda_matmul_allow_tf32"], determinism["float32_matmul_precision"]) == (True, "high")
