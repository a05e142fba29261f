"""Out of memory in the one-sample forward that reads the models' number of classes, before any evaluation, is the
same one :class:`~kwta_robust.errors.EvalOutOfMemory` line as in the evaluation, for ``compare_models_in_memory`` and
``evaluate_model`` (the check ran outside the conversion: torch's ``OutOfMemoryError`` left the call as itself, with
every line of its text); the CLI's ``compare`` prints one ``error:`` line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.errors import EVAL_BATCH_SETTINGS, EvalOutOfMemory
from test_fix2_evaluate_out_of_memory import CLI_OUT_OF_MEMORY, compare_error
from test_guard_out_of_memory import GPU_OOM, config, make_gpu_oom_mlp, problem

#: torch's message has more lines (the GPU's capacity, what PyTorch holds); only the first is the line's.
LONG_OOM = GPU_OOM + "\nGPU 0 has a total capacity of 79.10 GiB of which 1.02 GiB is free."


def _out_of_memory(x: torch.Tensor) -> torch.Tensor:
    raise torch.OutOfMemoryError(LONG_OOM)


def _expected(option: str) -> str:
    return (f"out of memory ({GPU_OOM}); lower {EVAL_BATCH_SETTINGS} in the config, with another {option} or "
            "resume=False (another batch size is another evaluation), or free memory")


def test_compare_models_in_memory_class_check_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    first, x, y = problem(RuntimeError("unused"))
    second, _, _ = problem(RuntimeError("unused"))
    monkeypatch.setattr(second, "forward", _out_of_memory)  # every forward: the class check's is the first
    with pytest.raises(EvalOutOfMemory) as caught:
        compare_models_in_memory({"a": first, "b": second}, config(8), x, y)
    assert str(caught.value) == _expected("out_dir")
    assert isinstance(caught.value.original, torch.OutOfMemoryError)


def test_evaluate_model_class_check_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = problem(RuntimeError("unused"))
    monkeypatch.setattr(model, "forward", _out_of_memory)
    with pytest.raises(EvalOutOfMemory) as caught:
        evaluate_model(model, config(8), x, y)
    assert str(caught.value) == _expected("out_path")


def make_always_oom() -> torch.nn.Module:
    """Factory used through ``test_edges_class_check_oom:make_always_oom`` (the OOM model's state dict)."""
    model = make_gpu_oom_mlp()
    model.forward = _out_of_memory  # type: ignore[method-assign]
    return model


def test_cli_compare_class_check_out_of_memory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert compare_error(capsys, tmp_path, "test_edges_class_check_oom:make_always_oom") == CLI_OUT_OF_MEMORY
    assert not (tmp_path / "out" / "a.json").exists()
