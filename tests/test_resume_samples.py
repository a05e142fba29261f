"""A run resumes a record only on the same sample values (``dataset.samples_sha256``): MNIST raw files replaced
under one ``data_root`` keep the config, the data set's name, root and indices, so before, the next run resumed the
old record's finished units and mixed two test sets in one number."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import kwta_robust.resume as resume_module
import kwta_robust.shards as shards_module
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData, load_dataset, values_sha256
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.models import ModelSpec
from kwta_robust.results import load_record, save_record
from kwta_robust.resume import StalePolicy, stale_reason
from kwta_robust.shards import sharded_record
from test_cli_eval import write_checkpoint, write_config
from test_data import _write_idx
from test_evaluate import register  # noqa: F401  (a fixture: registers a test attack for one test)
from test_resume import fresh_record
from test_shard_merge import whole_record
from test_shards_mutants import BASE

SWAPPED = "holds a record of other images or labels (the data under its name and root changed since: " \
          "dataset.samples_sha256)"


def write_mnist(root: Path, model: nn.Module, seed: int, n: int = 8) -> None:
    """MNIST idx files under ``root/MNIST/raw``: random images labelled with ``model``'s own predictions, so the
    model is right on every sample of any set written here (its clean predictions cannot tell two sets apart)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for prefix, count in (("train", 2), ("t10k", n)):
        images = rng.randint(0, 256, size=(count, 28, 28)).astype(np.uint8)
        with torch.no_grad():
            labels = model(torch.from_numpy(images).float().unsqueeze(1) / 255.0).argmax(1).numpy()
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


class Stopping:
    """Leaves every input as it is (finds nothing); raises KeyboardInterrupt at eps ``stop["at"]`` (a killed run)."""

    name = "stopping"
    calls: list[float] = []
    stop: dict[str, Any] = {"at": None}

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: Any) -> Tensor:
        Stopping.calls.append(threat.eps)
        if threat.eps == Stopping.stop["at"]:
            raise KeyboardInterrupt
        return x.clone()


@pytest.fixture
def stopping(register: Any) -> type[Stopping]:  # noqa: F811
    register("test-stopping", Stopping)
    Stopping.calls, Stopping.stop = [], {"at": None}
    return Stopping


def mnist_config(root: Path) -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "mnist", "data_root": str(root), "n_examples": 8, "batch_size": 8, "seed": 0,
        "threats": [{"norm": "linf", "epsilons": [0.1, 0.2]}], "attacks": ["test-stopping"],
        "diagnostics": {"enabled": False}})


def interrupted_run(tmp_path: Path, stopping: type[Stopping]) -> tuple[nn.Module, Path, Path, EvalConfig]:
    """A run on the MNIST files of seed 0 killed at its second eps: a partial record of one unit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    root, out = tmp_path / "data", tmp_path / "rec.json"
    write_mnist(root, model, 0)
    cfg = mnist_config(root)
    stopping.stop["at"] = 0.2
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, load_dataset("mnist", "test", root=root), cfg, {}, out_path=out, progress=False)
    stopping.stop["at"], stopping.calls[:] = None, []
    return model, root, out, cfg


def test_replaced_mnist_files_are_not_resumed(tmp_path: Path, stopping: type[Stopping]) -> None:
    model, root, out, cfg = interrupted_run(tmp_path, stopping)
    partial = out.read_text()
    assert load_record(out).status == "partial" and [r.eps for r in load_record(out).results] == [0.1]
    write_mnist(root, model, 1)  # another test set under the same root: same name, root, indices and clean flags
    with pytest.raises(ConfigError) as refused:
        evaluate(model, load_dataset("mnist", "test", root=root), cfg, {}, out_path=out, progress=False)
    assert str(refused.value) == f"--out: {out} {SWAPPED}; use a new --out or --no-resume"
    assert out.read_text() == partial and stopping.calls == []  # the partial record kept, nothing attacked


def test_the_same_files_resume_without_recomputing(tmp_path: Path, stopping: type[Stopping],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    model, root, out, cfg = interrupted_run(tmp_path, stopping)
    data = load_dataset("mnist", "test", root=root)
    with caplog.at_level(logging.INFO):
        done = evaluate(model, data, cfg, {}, out_path=out, progress=False)
    assert stopping.calls == [0.2]  # the finished unit at 0.1 was kept, not attacked again
    assert f"resuming {out}: 1 finished units kept" in caplog.text
    assert done.status == "complete" and len(done.provenance["resumed_at"]) == 1
    chosen = data.subset(torch.tensor([data.indices.tolist().index(i) for i in done.dataset["indices"]]))
    assert done.dataset["samples_sha256"] == values_sha256(chosen.x, chosen.y)  # the evaluated samples' digest


def test_a_record_without_the_digest_resumes_with_a_warning(tmp_path: Path, stopping: type[Stopping],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A partial record written before records kept the digest (this version's, the key removed) still resumes."""
    model, root, out, cfg = interrupted_run(tmp_path, stopping)
    data = json.loads(out.read_text())
    del data["dataset"]["samples_sha256"]
    out.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        done = evaluate(model, load_dataset("mnist", "test", root=root), cfg, {}, out_path=out, progress=False)
    assert done.status == "complete" and stopping.calls == [0.2]
    assert "written before records kept the digest of their samples (dataset.samples_sha256)" in caplog.text


def test_the_digest_is_of_the_values_only() -> None:
    """Hand-worked: sha256 over "dtype|shape|" and the raw bytes of x, then of y; indices and names do not enter."""
    x, y = torch.tensor([[[[0.5]]]]), torch.tensor([3])
    expected = hashlib.sha256(b"torch.float32|(1, 1, 1, 1)|" + np.float32(0.5).tobytes()
                              + b"torch.int64|(1,)|" + np.int64(3).tobytes()).hexdigest()
    assert values_sha256(x, y) == expected
    one = TensorData(x, y, "a", 4, torch.tensor([0]))
    assert TensorData(x.clone(), y.clone(), "b", 5, torch.tensor([7])).values_sha256() == one.values_sha256()


@pytest.mark.parametrize(("change", "reason"), [
    (lambda r: r.dataset.update(samples_sha256="a"), SWAPPED),
    (lambda r: r.dataset.update(samples_sha256="a", indices=[0, 1, 2, 5]), "holds a record of other samples"),
    (lambda r: (r.dataset.update(samples_sha256="a"), setattr(r, "config_hash", "other")),
     "holds a record of another config"),  # the config (its data file, n_examples ...) explains other values
    (lambda r: r.dataset.update(samples_sha256="b"), None),
])
def test_stale_reason_compares_the_samples_digest(change: Any, reason: str | None) -> None:
    fresh = fresh_record()
    fresh.dataset["samples_sha256"] = "b"
    old = copy.deepcopy(fresh)
    change(old)
    assert stale_reason(old, fresh) == reason


def test_cli_refuses_replaced_files_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = write_checkpoint(tmp_path / "relu.pt")
    torch.manual_seed(0)  # the checkpoint's model, rebuilt: its predictions label the files
    model = ModelSpec.from_args("mlp", activation="relu", num_classes=10, in_channels=1, input_size=28,
                                hidden=[16]).build().eval()
    root, out = tmp_path / "data", tmp_path / "rec.json"
    write_mnist(root, model, 0)
    cfg = write_config(tmp_path / "c.yaml", dataset="mnist", data_root=str(root), n_examples=8, batch_size=8,
                       threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[])
    argv = ["evaluate", str(ckpt), "--config", str(cfg), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    before = out.read_text()
    write_mnist(root, model, 1)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        f"error: --out: {out} {SWAPPED}; use a new --out or --no-resume"]
    assert out.read_text() == before


def test_a_sharded_run_checks_the_selected_samples_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sharded run's check of the record at its output (:func:`kwta_robust.shards.sharded_record`) is given the
    digest of the selected samples' values (``differences`` captured; its record checks stubbed, as this synthetic
    record does not meet them)."""
    given: dict[str, Any] = {}

    def differences(old: Any, **found: Any) -> str:
        given.update(found)
        return SWAPPED

    monkeypatch.setattr(shards_module, "differences", differences)
    monkeypatch.setattr(resume_module, "check_resumable", lambda record, source: None)
    out = tmp_path / "model.json"
    save_record(whole_record(), out)
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 1, 0])
    selected = TensorData(x, y, "toy", 2, torch.arange(4))
    loaded = SimpleNamespace(model=nn.Linear(2, 2), info={"label": "model"})
    with pytest.raises(ConfigError) as refused:
        sharded_record(out, loaded, EvalConfig.from_dict(BASE), selected, {}, True, StalePolicy())
    assert str(refused.value) == f"--out: {out} {SWAPPED}; use a new --out or --no-resume"
    assert given["samples_sha256"] == values_sha256(x, y)
