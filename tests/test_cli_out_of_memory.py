"""An out-of-memory error during an evaluation is one ``error:`` line naming the batch settings to lower.

At ImageNet sizes (a ResNet-18 at 224 x 224) one attack batch holds gigabytes; torch's allocation failure used to end
``evaluate`` with a raw traceback naming neither ``--batch-size`` nor ``diagnostics.gradient_batch``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kwta_robust.cli import out_of_memory
from kwta_robust.errors import DataError
from test_cli_eval import run_error, write_config

CPU_OOM = ("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: you tried to allocate "
           "2466250752 bytes.")


class OutOfMemoryInAttacks(nn.Module):
    """An MLP whose forward with gradients (an attack's, not the clean pass) fails as torch's CPU allocator does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError(CPU_OOM)
        return self.net(x)


def make_oom_mlp() -> nn.Module:
    """Factory used through --model-factory test_cli_out_of_memory:make_oom_mlp."""
    torch.manual_seed(0)
    return OutOfMemoryInAttacks()


def test_out_of_memory_in_an_attack_is_one_line_naming_the_batch(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "w.pt"
    model = make_oom_mlp()
    torch.save(model.state_dict(), weights)
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # labels the model gets right, so that the attack runs
        torch.save({"x": x, "y": model(x).argmax(1)}, tmp_path / "data.pt")
    cfg = write_config(tmp_path / "c.yaml", threats=[{"norm": "linf", "epsilons": [0.1]}], attacks=["fgsm"], noise=[],
                       diagnostics={"enabled": False})
    line = run_error(capsys, ["evaluate", "--model-factory", "test_cli_out_of_memory:make_oom_mlp", "--weights",
                              str(weights), "--config", str(cfg), "--data", str(tmp_path / "data.pt"),
                              "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert line.startswith("error: out of memory ([enforce fail at alloc_cpu.cpp:121]")
    assert "--batch-size" in line and "diagnostics.gradient_batch" in line and "--no-resume" in line
    assert "forward_batch_size" in line
    assert not (tmp_path / "r.json.lock").exists()


def test_out_of_memory_is_recognised_by_class_and_words_only() -> None:
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.30 GiB"), "compare")
    assert "training batch (--batch-size)" in str(out_of_memory(MemoryError(), "train"))
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "evaluate") is None


def test_a_data_file_too_large_for_memory_names_the_file_not_the_batch(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole --data file becomes float32 (a 50,000-image ImageNet uint8 file: 30 GiB) before n_examples are
    selected, so an out-of-memory error there is about the file, not the batch size."""
    import kwta_robust.datafile as datafile

    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((3, 3, 4, 4), dtype=np.uint8), y=np.zeros(3, dtype=np.int64))

    def no_memory(x: torch.Tensor, where: str) -> torch.Tensor:
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(datafile, "_images", no_memory)
    with pytest.raises(DataError, match=r"x.npz: out of memory holding its 3 images as float32 \(0.0 GiB; .*"
                                        r"DefaultCPUAllocator.*save only the samples to evaluate in a smaller file"):
        datafile.load_data_file(path)

    def shape_error(x: torch.Tensor, where: str) -> torch.Tensor:
        raise RuntimeError("shape '[3, 48]' is invalid")

    monkeypatch.setattr(datafile, "_images", shape_error)
    with pytest.raises(RuntimeError, match="is invalid"):  # any other error is not called a memory error
        datafile.load_data_file(path)
