"""Out of memory inside ``evaluate_model`` / ``compare_models_in_memory`` is one ConfigError line naming the batch
settings to lower, as the CLI's ``error:`` line is; the record written before it stays.

torch's ``OutOfMemoryError`` used to leave the Python API as itself, with a traceback naming no setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.errors import ConfigError
from test_cli_eval import run_error, write_config
from test_cli_out_of_memory import CPU_OOM

GPU_OOM = "CUDA out of memory. Tried to allocate 2.30 GiB"
LIMIT = 4  # the largest batch the fake model takes with gradients on


class OutOfMemoryAboveLimit(nn.Module):
    """A linear classifier whose forwards with gradients on (an attack's) fail above ``LIMIT`` inputs, as torch's
    allocators do: the clean pass (no gradients) finishes and is written; the first attack batch fails."""

    def __init__(self, error: Exception, features: int) -> None:
        super().__init__()
        self.error = error
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > LIMIT and torch.is_grad_enabled():
            raise self.error
        return self.net(x)


def make_gpu_oom_mlp() -> nn.Module:
    """Factory used through --model-factory test_guard_out_of_memory:make_gpu_oom_mlp (28 x 28 inputs)."""
    torch.manual_seed(0)
    return OutOfMemoryAboveLimit(torch.OutOfMemoryError(GPU_OOM), 784)


def config(batch_size: int) -> dict:
    return {"n_examples": 8, "batch_size": batch_size, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
            "attacks": ["fgsm"], "diagnostics": {"enabled": False}}


def problem(error: Exception) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = OutOfMemoryAboveLimit(error, 20)
    x = torch.rand(8, 1, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # labels the model gets right, so that the attack runs on every sample
        return model, x, model(x).argmax(1)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError(GPU_OOM), RuntimeError(CPU_OOM),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")])
def test_evaluate_model_names_the_batch_settings_and_keeps_the_record(tmp_path: Path, error: Exception) -> None:
    model, x, y = problem(error)
    out = tmp_path / "r.json"
    with pytest.raises(ConfigError) as caught:
        evaluate_model(model, config(8), x, y, out_path=out)
    message = str(caught.value)
    assert message.startswith(f"out of memory ({str(error).splitlines()[0]}); lower batch_size, "
                              "diagnostics.gradient_batch")  # the config key: the API has no --batch-size
    assert "forward_batch_size" in message and "resume=False" in message and "\n" not in message
    kept = json.loads(out.read_text())  # the clean pass, written before the attack ran out of memory
    assert kept["status"] == "partial" and kept["clean_flags"] == [1] * 8 and kept["results"] == []
    assert evaluate_model(model, config(LIMIT), x, y).results[0].robust.n == 8  # a smaller batch fits


def test_compare_models_in_memory_names_the_batch_settings() -> None:
    model, x, y = problem(torch.OutOfMemoryError(GPU_OOM))
    with pytest.raises(ConfigError, match=r"^out of memory \(CUDA out of memory\. Tried to allocate 2\.30 GiB\); "
                                          r"lower batch_size, diagnostics\.gradient_batch"):  # the API's key
        compare_models_in_memory({"a": model, "b": problem(torch.OutOfMemoryError(GPU_OOM))[0]}, config(8), x, y)


def test_a_runtime_error_that_is_not_out_of_memory_keeps_its_own_message() -> None:
    """Only allocation failures name the batch: a bug in the model's code is reported as one (model_failures)."""
    model, x, y = problem(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(ConfigError) as caught:
        evaluate_model(model, config(8), x, y)
    assert str(caught.value).startswith("attack 'fgsm' at Linf 0.1 raised RuntimeError: mat1 and mat2 shapes cannot "
                                        "be multiplied")
    assert "batch_size" not in str(caught.value)


def test_a_runtime_error_of_the_library_that_is_not_out_of_memory_leaves_as_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's out-of-memory translation (``_input_errors``) re-raises any other RuntimeError unchanged: a bug of
    ours surfaces with its own type and traceback, not as an "out of memory" line naming batch settings."""
    model, x, y = problem(torch.OutOfMemoryError(GPU_OOM))
    bug = RuntimeError("an internal bug of the runner")

    def broken_evaluate(*_args: object, **_kwargs: object) -> None:
        raise bug

    monkeypatch.setattr("kwta_robust.api.evaluate", broken_evaluate)
    with pytest.raises(RuntimeError) as caught:
        evaluate_model(model, config(8), x, y)
    assert caught.value is bug and not isinstance(caught.value, ConfigError)


def gpu_oom_files(tmp_path: Path) -> Path:
    """In ``tmp_path``: the OOM model's weights ``w.pt``, 8 inputs it classifies (its own predictions as labels)
    ``data.pt``, and the config ``c.yaml`` of :func:`config` (returned)."""
    torch.save(make_gpu_oom_mlp().state_dict(), tmp_path / "w.pt")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save({"x": x, "y": make_gpu_oom_mlp()(x).argmax(1)}, tmp_path / "data.pt")
    return write_config(tmp_path / "c.yaml", noise=[], **config(8))


def test_the_cli_prints_one_line_for_torch_out_of_memory_error(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    cfg = gpu_oom_files(tmp_path)
    line = run_error(capsys, ["evaluate", "--model-factory", "test_guard_out_of_memory:make_gpu_oom_mlp", "--weights",
                              str(tmp_path / "w.pt"), "--config", str(cfg), "--data", str(tmp_path / "data.pt"),
                              "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert line.startswith(f"error: out of memory ({GPU_OOM}); lower batch_size (--batch-size)")
    assert "forward_batch_size" in line and "--no-resume" in line
    assert json.loads((tmp_path / "r.json").read_text())["clean_flags"] == [1] * 8  # kept for a resume
