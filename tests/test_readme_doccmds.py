"""Docstring claims of the command modules and their helpers (README-truth audit "doccmds"), each checked against
what the code does: the console's warning and progress-bar policy, the grouping count of a layer probe, the
comparison's refusals, the training-budget notes and the user-error helpers."""

from __future__ import annotations

import io
import logging
import sys
import warnings

import pytest
import torch
from torch import nn

from attacks.base import ThreatModel, create_attack
from attacks.errors import is_out_of_memory
from attacks.gates import block_groupings, candidate_groupings, infer_grouping
from kwta_robust.commands.console import configure_logging, progress_bars
from kwta_robust.compare import check_comparable, model_labels
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError, check_flag
from kwta_robust.loading import ModelForEval
from kwta_robust.shards import Sharding
from kwta_robust.training_text import beyond_training_notes, training_text
from tests.eval_helpers import make_record, make_result


def test_a_pgd_warning_is_logged_under_the_module_it_is_attributed_to(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """console.WarningLogger's example: a PGD attack on a model returning probabilities logs
    ``WARNING attacks.gradient: <message> (NonLogitOutputWarning)`` (there is no module ``attacks.pgd``)."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_logging(0, False)
        with caplog.at_level(logging.WARNING):
            create_attack("pgd", steps=1)(model, x, y, ThreatModel("linf", 0.1))
            create_attack("pgd", steps=1)(model, x, y, ThreatModel("linf", 0.1))  # same message: logged once
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if "probabilities" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0][:2] == ("attacks.gradient", "WARNING")
    assert lines[0][2].endswith("(NonLogitOutputWarning)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_and_never_with_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """console.progress_bars: bars only when stderr is a terminal (tqdm's default would draw them on a log file)."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bars(False) is False
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress_bars(False) is True
    assert progress_bars(True) is False


def test_a_relu_of_a_resnet_is_read_under_thirteen_groupings_at_512_channels() -> None:
    """gates.gate_fit's docstring: five groupings plus one per block size (2, 4, ..., 256: eight) at 512 channels;
    a ReLU's output passes the mask checks, so every one of them is tried, and none is a top-k gate."""
    tried = candidate_groupings(4) + block_groupings((2, 512, 4, 4))
    assert len(tried) == 13
    assert tried[5:] == tuple(f"block-{2 ** i}" for i in range(1, 9))
    torch.manual_seed(0)
    x = torch.randn(2, 512, 4, 4)
    assert infer_grouping(x, torch.relu(x)) is None


def test_labels_need_one_non_empty_name_per_model() -> None:
    """compare.model_labels: one non-empty name per checkpoint, else one line naming --labels and the count."""
    for labels in (["only-one"], ["a", ""], ["a", "b", "c"]):
        with pytest.raises(ConfigError, match=r"^--labels: give one non-empty name per checkpoint \(2\)$"):
            model_labels(["runs/a.pt", "runs/b.pt"], labels)
    assert model_labels(["runs/a.pt", "runs/b.pt"], ["kwta", "relu"]) == ["kwta", "relu"]
    assert model_labels(["x/m.pt", "y/m.pt"]) == ["m", "m-2"]


def _model(label: str) -> ModelForEval:
    return ModelForEval(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), {}, label, {})


def test_a_comparison_in_shards_needs_an_output_folder() -> None:
    """compare.check_comparable: shards write their parts next to the records, so out_dir=None is refused."""
    cfg = EvalConfig.from_dict({"dataset": "mnist5k", "n_examples": 4, "batch_size": 2, "device": "cpu",
                                "threats": [{"norm": "linf", "epsilons": [0.1]}], "attacks": [{"attack": "fgsm"}]})
    with pytest.raises(ConfigError, match="compare: shards write their parts next to the records; give an output"):
        check_comparable([_model("a"), _model("b")], cfg, None, Sharding(2))
    with pytest.raises(ConfigError, match="compare: give at least two models"):
        check_comparable([_model("a")], cfg, None, None)


def _trained(method: str, adversarial: dict | None, eps: float = 0.1, norm: str = "linf"):
    record = make_record([make_result("pgd", [1, 0, 1], norm=norm, eps=eps)])
    record.model["training"] = {"method": method, "training": {"adversarial": adversarial}}
    return record


def test_training_text_and_the_beyond_budget_note() -> None:
    """training_text: ``pgd Linf 0.1, 10 steps``, ``trades ..., beta 6``, the method alone for standard training,
    ``?`` where the record does not say; a note per record evaluated beyond its training budget, none within it."""
    pgd = {"norm": "linf", "eps": 0.1, "steps": 10}
    assert training_text(_trained("pgd", pgd)) == "pgd Linf 0.1, 10 steps"
    assert training_text(_trained("trades", {**pgd, "trades_beta": 6.0})) == "trades Linf 0.1, 10 steps, beta 6"
    # a standard checkpoint still records TrainConfig's default adversarial: block; the method alone decides
    assert training_text(_trained("standard", pgd)) == "standard"
    assert training_text(make_record([make_result("pgd", [1, 0])])) == "?"
    assert beyond_training_notes([_trained("pgd", pgd, eps=0.1)]) == []
    notes = beyond_training_notes([_trained("pgd", pgd, eps=0.3), _trained("pgd", pgd, eps=0.05, norm="l2")])
    assert len(notes) == 2
    assert notes[0].startswith("[model] BEYOND THE TRAINING BUDGET at Linf 0.3: the model was adversarially trained "
                               "(pgd) at Linf 0.1 only")
    # another norm is beyond the budget whatever its epsilon: L2 0.05 is below the training's 0.1, yet noted
    assert notes[1].startswith("[model] BEYOND THE TRAINING BUDGET at L2 0.05: the model was adversarially trained "
                               "(pgd) at Linf 0.1 only")
    assert beyond_training_notes([_trained("standard", pgd, eps=0.3)]) == []


def test_check_flag_takes_true_or_false_only() -> None:
    """errors.check_flag: a Python API switch is True or False; 'no' (truthy to Python) is one line naming it."""
    assert check_flag("resume", True) is True and check_flag("resume", False) is False
    for value, shown in (("no", "'no'"), (1, "1"), (None, "None")):
        with pytest.raises(ConfigError, match=rf"^resume: expected True or False, got {shown}$"):
            check_flag("resume", value)


def test_is_out_of_memory_reads_the_three_kinds() -> None:
    """attacks.errors.is_out_of_memory: MemoryError, torch.OutOfMemoryError and the CPU allocator's RuntimeError."""
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough "
                                         "memory: you tried to allocate 8 bytes"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("not enough memory"))  # the words count on a RuntimeError only
