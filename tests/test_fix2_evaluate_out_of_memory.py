"""Out of memory in a direct call of :func:`kwta_robust.evaluate.evaluate` (the runner's public function) is one
:class:`~kwta_robust.errors.ConfigError` line naming the batch settings, as ``evaluate_model`` and the CLI say it; the
record written before it stays. The conversion is made once, in ``evaluate`` (and ``compare_models``, whose
pre-checks probe the models before any evaluation): ``evaluate_model`` gives the same line, not a wrapped one.

``evaluate()`` used to let torch's ``OutOfMemoryError`` through as itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kwta_robust.api import as_config, evaluate_model, in_memory_data
from kwta_robust.errors import EVAL_BATCH_SETTINGS, OTHER_BATCH_SETTINGS, ConfigError, EvalOutOfMemory
from kwta_robust.evaluate import evaluate
from kwta_robust.resume import StalePolicy
from test_guard_out_of_memory import GPU_OOM, LIMIT, config, problem


def _expected(option: str, restart: str) -> str:
    return (f"out of memory ({GPU_OOM}); lower {EVAL_BATCH_SETTINGS} in the config, with another {option} or "
            f"{restart} (another batch size is another evaluation), or free memory")


def test_evaluate_names_the_batch_settings_and_keeps_the_record(tmp_path: Path) -> None:
    model, x, y = problem(torch.OutOfMemoryError(GPU_OOM))
    data = in_memory_data(x, y, {"m": model})
    out = tmp_path / "r.json"
    with pytest.raises(ConfigError) as caught:
        evaluate(model, data, as_config({**config(8), "dataset": "in-memory"}), out_path=out, progress=False)
    assert str(caught.value) == _expected("--out", "--no-resume")  # evaluate's own default names (StalePolicy())
    assert isinstance(caught.value, EvalOutOfMemory) and isinstance(caught.value.original, torch.OutOfMemoryError)
    kept = json.loads(out.read_text())  # the clean pass, written before the attack ran out of memory
    assert kept["status"] == "partial" and kept["clean_flags"] == [1] * 8 and kept["results"] == []
    with pytest.raises(ConfigError) as caught:  # the caller's names for its output and for starting over
        evaluate(model, data, as_config({**config(8), "dataset": "in-memory"}), out_path=tmp_path / "s.json",
                 progress=False, stale=StalePolicy("out_path", "resume=False"))
    assert str(caught.value) == _expected("out_path", "resume=False")
    smaller = evaluate(model, data, as_config({**config(LIMIT), "dataset": "in-memory"}), progress=False)
    assert smaller.results[0].robust.n == 8  # a batch that fits runs


def test_evaluate_model_gives_the_same_line_once() -> None:
    model, x, y = problem(torch.OutOfMemoryError(GPU_OOM))
    with pytest.raises(ConfigError) as caught:
        evaluate_model(model, config(8), x, y)
    assert str(caught.value) == _expected("out_path", "resume=False")  # not wrapped a second time


def test_a_run_that_sets_stale_records_aside_says_so(tmp_path: Path) -> None:
    """A sweep cell or the quickstart moves a record of another batch size aside by itself: no option to name."""
    model, x, y = problem(torch.OutOfMemoryError(GPU_OOM))
    data = in_memory_data(x, y, {"m": model})
    with pytest.raises(ConfigError) as caught:
        evaluate(model, data, as_config({**config(8), "dataset": "in-memory"}), out_path=tmp_path / "r.json",
                 progress=False, stale=StalePolicy("--out-dir", "--retrain", set_aside=True))
    assert str(caught.value) == (f"out of memory ({GPU_OOM}); lower {EVAL_BATCH_SETTINGS} in the config (another "
                                 "batch size is another evaluation: the record written so far is then set aside), or "
                                 "free memory")


def test_the_cli_keeps_its_own_words_for_an_evaluation_out_of_memory(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """The CLI words the fix with its options (``a new --out``), from the allocator's error the line carries."""
    assert compare_error(capsys, tmp_path, "test_guard_out_of_memory:make_gpu_oom_mlp") == CLI_OUT_OF_MEMORY


#: The CLI's out-of-memory line for an evaluation (its own options named as the fix).
CLI_OUT_OF_MEMORY = (f"error: out of memory ({GPU_OOM}); lower batch_size (--batch-size), {OTHER_BATCH_SETTINGS} "
                     "in the config, with a new --out "
                     "or --no-resume (another batch size is another evaluation), or free memory")


def compare_error(capsys: pytest.CaptureFixture, tmp_path: Path, factory: str) -> str:
    """The error line of ``compare`` of the model ``factory`` builds (weights and data from
    :func:`test_guard_out_of_memory.gpu_oom_files`) with itself, to ``tmp_path/out``."""
    from test_cli_eval import run_error
    from test_guard_out_of_memory import gpu_oom_files

    cfg = gpu_oom_files(tmp_path)
    model = f"{factory}={tmp_path / 'w.pt'}"
    return run_error(capsys, ["compare", model, model, "--labels", "a,b", "--config", str(cfg), "--data",
                              str(tmp_path / "data.pt"), "--out-dir", str(tmp_path / "out"), "--no-progress"])
