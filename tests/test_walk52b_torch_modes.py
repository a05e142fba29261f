"""A notebook's torch modes around an API call (``kwta_robust.api``): a call made inside ``with torch.no_grad():``
or ``torch.inference_mode()`` evaluates as outside it (it stopped at the model probe, blaming the model's backward,
or with torch's own ``RuntimeError``), and an autocast the caller entered does not reach the model's forward (a
bfloat16 autocast around the call gave other numbers than the CLI's); the caller's modes are back afterwards.
A config naming CUDA on a machine without it is refused naming the config key, not the CLI's flag."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

from kwta_robust.api import compare_models_in_memory, evaluate_model
from kwta_robust.errors import KwtaRobustError

CONFIG = {"n_examples": 12, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 3}}], "noise": [{"kind": "numenta"}]}


class ModeSpy(nn.Module):
    """Identity that notes, at each forward, whether a CPU autocast and inference mode were on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.is_inference_mode_enabled()))
        return h


def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3), ModeSpy())


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(12, 1, 8, 8, generator=generator), torch.randint(0, 3, (12,), generator=generator)


def _numbers(record: Any) -> tuple:
    return (record.clean.correct, [(r.label, r.robust.correct) for r in record.results],
            [n.result["correct_counts"] for n in record.noise])


MODES: dict[str, Callable[[], Any]] = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_evaluate_model_inside_a_torch_mode_is_the_call_outside_it(mode: str) -> None:
    x, y = _data()
    net = _net(0)
    outside = _numbers(evaluate_model(net, CONFIG, x, y, threads=1))
    net[-1].seen.clear()
    with MODES[mode]():
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        autocast = torch.is_autocast_enabled("cpu")
        inside = _numbers(evaluate_model(net, CONFIG, x, y, threads=1))
        assert (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == (grad, inference)
        assert torch.is_autocast_enabled("cpu") == autocast  # the caller's modes, back
    assert inside == outside
    assert net[-1].seen and not any(a or i for a, i in net[-1].seen)


def test_compare_models_in_memory_inside_no_grad_is_the_call_outside_it() -> None:
    x, y = _data()
    models = {"a": _net(0), "b": _net(1)}
    outside = [_numbers(r) for r in compare_models_in_memory(models, CONFIG, x, y, threads=1)]
    with torch.no_grad():
        inside = [_numbers(r) for r in compare_models_in_memory(models, CONFIG, x, y, threads=1)]
        assert not torch.is_grad_enabled()
    assert inside == outside


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of a config's CUDA device on a CPU-only machine")
def test_a_config_naming_cuda_on_a_cpu_machine_names_the_config_key_not_the_cli_flag() -> None:
    x, y = _data()
    with pytest.raises(KwtaRobustError) as caught:
        evaluate_model(_net(0), {**CONFIG, "device": "cuda"}, x, y)
    assert str(caught.value) == ("device: 'cuda' requested but CUDA is not available; set device: cpu or auto in the "
                                 "config (a model is evaluated where it is)")  # it said: use --device cpu
