"""A user's model that passes the checks on one and two samples but raises later, inside its own code, during the
runner's passes (:mod:`kwta_robust.model_failures`): one line naming the model, where it raised and the fix.

Before: ``kwta-robust evaluate`` on a model that refuses batches of more than 4 ended in a raw ``ValueError``
traceback from the layout probe (32 samples); within an attack the same failure was already one line."""

from __future__ import annotations

import re
from pathlib import Path
from traceback import FrameSummary

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.errors import ConfigError
from kwta_robust.layers import kwta
from kwta_robust.model_failures import model_code_failures, model_files, raised_at

CONFIG = {"n_examples": 8, "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "fgsm"}], "noise": []}


class SmallBatchesOnly(nn.Module):
    """Runs on batches of up to 4 (the checks use one and two samples), raises on more: a buffer sized for the
    training batch, in the field."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 4:
            raise ValueError("batch too large for this model")
        return self.fc(x.flatten(1))


def data8() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)


def test_a_model_failing_on_a_larger_batch_is_one_line_naming_where() -> None:
    x, y = data8()
    with pytest.raises(ConfigError) as caught:
        evaluate_model(SmallBatchesOnly().eval(), CONFIG, x, y, threads=1, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model: its forward raised ValueError: batch too large for this model (at ")
    assert re.search(r"test_model_failures\.py:\d+\) after passing the checks on one and two samples", message)
    assert message.endswith("fix the model's code there (-v logs the traceback)")


def test_the_model_files_are_the_users_not_torchs_or_ours() -> None:
    files = model_files(nn.Sequential(SmallBatchesOnly(), nn.ReLU()))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["test_model_failures.py"]
    assert model_files(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == set()


def test_a_transfer_source_is_named_and_other_failures_pass_through() -> None:
    with pytest.raises(ConfigError, match=r"^transfer source relu: its forward raised ValueError: batch too large"):
        with model_code_failures(nn.Linear(64, 10), {"relu": SmallBatchesOnly()}):
            SmallBatchesOnly()(torch.rand(5, 1, 8, 8))
    with pytest.raises(ValueError, match="^not the model's$"):  # a model of torch's classes only: no user code
        with model_code_failures(nn.Linear(2, 2), {}):
            raise ValueError("not the model's")
    with pytest.raises(torch.OutOfMemoryError):  # the run's own out-of-memory line, not this one
        with model_code_failures(SmallBatchesOnly(), {}):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")


class ScoresOfTheWrongShape(nn.Module):
    """Calls the package's kWTA with scores of the wrong shape on batches of more than 4: torch raises inside
    kwta_robust/layers.py, but the bug — and the fix — is on the user's line below."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        scores = h if x.shape[0] <= 4 else h[:, :10]
        return self.fc(kwta(h, 8, "dense", scores=scores))  # the user's line: the message names it


USER_LINE = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1) if "the user's line:" in line)


def test_a_failure_inside_our_kwta_layer_names_the_users_line() -> None:
    x, y = data8()
    with pytest.raises(ConfigError) as caught:
        evaluate_model(ScoresOfTheWrongShape().eval(), CONFIG, x, y, threads=1, progress=False)
    message = str(caught.value)
    assert message.startswith("model: its forward raised RuntimeError: The size of tensor a (10) must match")
    assert f"(at {Path(__file__).resolve()}:{USER_LINE})" in message, message
    assert "layers.py" not in message


def test_the_frame_named_is_the_users_then_ours_then_torchs() -> None:
    """Two frames of each kind, outer (line 7) then inner (line 9): the innermost of the first kind present."""
    paths = (Path(__file__), Path(kwta.__code__.co_filename), Path(torch.__file__))
    user, ours, theirs = ([FrameSummary(str(path), line, "f") for line in (7, 9)] for path in paths)
    assert raised_at([user[0], ours[0], user[1], ours[1], theirs[0], theirs[1]]) is user[1]
    assert raised_at([ours[0], theirs[0], ours[1], theirs[1]]) is ours[1]  # no user frame: a bug of ours, named there
    assert raised_at(theirs) is theirs[1]
