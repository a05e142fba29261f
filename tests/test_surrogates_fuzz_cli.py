"""`evaluate` with BPDA's learned and model surrogates through the CLI: fit settings of another type and a fit that
diverges are one `error:` line naming the field (exit 2, no traceback; were a raw TypeError, or a NaN surrogate that
silently made BPDA a no-op), and two runs with the same seed write the same record (`diff`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kwta_robust.checkpoint import load_checkpoint
from kwta_robust.results import load_record
from test_cli_bpda_layers import run_error, run_ok, write_config
from test_cli_eval import write_checkpoint

KWTA = {"name": "kwta", "ratio": 0.25}


def model_and_data(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny kWTA MLP checkpoint and a --data file of 8 images it labels itself (every sample is attacked)."""
    ckpt = write_checkpoint(tmp_path / "kwta.pt", KWTA)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = load_checkpoint(ckpt).model.eval()(x).argmax(1)
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    return ckpt, tmp_path / "data.pt"


def bpda_config(path: Path, **params: object) -> Path:
    bpda = {"surrogate": "learned", "inner": "pgd", "inner_params": {"steps": 2}, "fit_steps": 5, "distill_steps": 2}
    bpda.update(params)
    return write_config(path, n_examples=8, batch_size=4, attacks=[{"attack": "bpda", "params": bpda}])


@pytest.mark.parametrize("params, text", [
    ({"fit_steps": 2.5}, "error: attacks[0]: fit_steps: must be an integer >= 0, got 2.5"),
    ({"fit_hidden": True}, "error: attacks[0]: fit_hidden: must be an integer >= 1, got True"),
    ({"fit_max_rows": float("nan")}, "error: attacks[0]: fit_max_rows: must be an integer >= 1, got nan"),
    ({"surrogate": "model", "distill_lr": "0.1"}, "error: attacks[0]: distill_lr: must be a finite number > 0 "
                                                  "within float32's range, 1.2e-38 to 3.4e+38, got '0.1'"),
    ({"fit_lr": 1e30}, "error: fit_lr: the learned surrogate of layer 'net.2' diverged (relative MSE nan) at fit_lr "
                       "1e+30; lower fit_lr (default 0.01)"),
    ({"surrogate": "model", "distill_lr": 1e30}, "error: distill_lr: the distilled model twin diverged (logit "
                                                 "relative MSE nan) at distill_lr 1e+30; lower distill_lr"),
])
def test_bad_fit_settings_are_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture, params: dict,
                                             text: str) -> None:
    ckpt, data = model_and_data(tmp_path)
    cfg = bpda_config(tmp_path / "c.yaml", **params)
    line = run_error(["evaluate", str(ckpt), "--config", str(cfg), "--data", str(data),
                      "--out", str(tmp_path / "r.json"), "--threads", "1"], capsys)
    assert line.startswith(text)


@pytest.mark.parametrize("surrogate", ["learned", "model"])
def test_the_same_seed_writes_the_same_record(tmp_path: Path, capsys: pytest.CaptureFixture, surrogate: str) -> None:
    ckpt, data = model_and_data(tmp_path)
    cfg = bpda_config(tmp_path / "c.yaml", surrogate=surrogate, seed=7)
    for name in ("a.json", "b.json"):
        run_ok(["evaluate", str(ckpt), "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / name),
                "--threads", "1"], capsys)
    out = run_ok(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")], capsys)
    assert out.startswith("same result")
    record = load_record(tmp_path / "a.json")
    assert [r.bpda_layers for r in record.results] == [{"net.2": "native"}]
    assert record.results[0].n_attacked == 8  # every sample was attacked
    assert record.results[0].params["surrogate"] == surrogate
