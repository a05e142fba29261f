"""A user's kWTA that zeroes the losers of a ReLU's output in place, ``h = relu(x); h[h < t] = 0`` (found by the
wild-model fuzzer): its forward runs, with gradients too, but its backward raises (autograd saved the ReLU's output,
changed since). The gradient probe met it first and the evaluation ended in a raw traceback from the autograd
engine; now the model checks run one backward and refuse the model in one line naming it and the fix. The same
gate on a convolution's output, which autograd does not save, still runs. Inputs ``[6, 1, 8, 8]``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.errors import KwtaRobustError

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
CONFIG = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
          "attacks": [{"attack": "pgd", "params": {"steps": 2}}],
          "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}


class InPlaceTopK(nn.Module):
    """Each sample's 25 % largest units of ``[N, C, H, W]`` kept, the rest zeroed in place (after a ReLU or not)."""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(x) if self.relu else x
        t = h.flatten(1).topk(h[0].numel() // 4, dim=1).values[:, -1:]
        h[h < t.view(-1, 1, 1, 1)] = 0
        return h


def net(relu: bool) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), InPlaceTopK(relu), nn.Flatten(),
                             nn.Linear(256, 3)).eval()


def labels(model: nn.Module) -> Tensor:
    with torch.no_grad():
        return model(X).argmax(1)


def test_a_model_whose_backward_raises_is_refused_in_one_line_and_one_whose_does_not_runs() -> None:
    model = net(relu=True)
    with pytest.raises(KwtaRobustError) as caught:
        evaluate_model(model, CONFIG, X, labels(model), threads=1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model model: runs with gradients but its backward raises (RuntimeError: ")
    assert "write the step out of place" in message
    model = net(relu=False)  # the same gate on a convolution's output, which autograd did not save, still runs
    record = evaluate_model(model, CONFIG, X, labels(model), threads=1)
    assert record.clean.n == 6 and len(record.results) == 1
