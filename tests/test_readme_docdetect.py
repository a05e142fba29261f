"""What the model-inspection docstrings promise and no other test pinned (README-truth audit, docdetect section):
the layer probe's randomized threshold (1e-5 of the largest output), a cut graph read as ``input_gradient: none``,
the caller's RNG and the parameters' gradients left alone, BPDA's record of native and wrapped layers, the
constant-count watch's four-sample minimum, the narrow tables' cell limit, the sampled bracket's Weyl step and
the three forwards of the model probe."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from bpda_models import kwta_mlp
from test_gates_fuzz import X, argmax_loop_mask, blocks
from attacks.bpda_wrap import LayerTarget
from kwta_robust.bpda_layers import describe_targets, resolve_bpda_layers
from kwta_robust.detect import RANDOM_RTOL, RANDOMIZED, detect_layers
from kwta_robust.hidden_sparsity import MIN_SPARSITY_BATCH
from kwta_robust.model_checks import probe_model
from kwta_robust.narrow import WIDTH, aligned_markdown
from kwta_robust.report import Cell, Table
from kwta_robust.selection import sample_columns


class Drift(nn.Module):
    """Adds ``step`` times the number of its earlier calls: two calls on one input differ by exactly ``step``."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x + self.step * (self.calls - 1)


def test_a_module_is_randomized_only_above_1e_5_of_its_largest_output() -> None:
    x = torch.full((4, 8), 0.5, dtype=torch.float64)
    x[:, 0] = 100.0  # the largest output of the model's own call (the first: no drift yet)
    assert RANDOM_RTOL == 1e-5
    # calls differing by 5e-4 (above 1e-5 absolute, but 5e-6 of the largest output 100): nothing to report
    below = detect_layers(nn.Sequential(Drift(5e-4)), x)
    assert below.finding("0") is None
    above = detect_layers(nn.Sequential(Drift(2e-3)), x).finding("0")  # 2e-5 of the largest output
    assert above is not None and above.kinds == [RANDOMIZED]
    assert abs(above.evidence["max_call_difference"] - 2e-3) < 1e-12
    assert above.evidence["max_abs_output"] == 100.0


class FloorNoGrad(nn.Module):
    """Quantizes under ``torch.no_grad()``: its output does not depend on its input through autograd at all."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.floor(x * 4) / 4


def test_an_output_cut_from_autograd_is_piecewise_constant_with_no_input_gradient() -> None:
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(0))
    finding = detect_layers(nn.Sequential(FloorNoGrad()), x).finding("0")
    assert finding is not None and finding.kinds == ["piecewise-constant"]
    assert finding.evidence["input_gradient"] == "none"  # "zero" is for a graph whose gradient is 0


class Noisy(nn.Module):
    """Noise kept at inference: draws from the global RNG in every call."""

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.1 * torch.randn_like(x)


def test_the_probe_leaves_the_callers_rng_and_the_parameters_gradients_alone() -> None:
    model = kwta_mlp(extra=Noisy())
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    found = detect_layers(model, x, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert found.names(RANDOMIZED) == ["4"]  # the noise drew from the (forked) global RNG
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_the_record_names_a_protocol_layer_native_and_a_foreign_module_wrapped() -> None:
    model = kwta_mlp()
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(2))
    targets = resolve_bpda_layers(model, ["auto", "0"], detect_layers(model, x))
    assert targets["0"] == LayerTarget()  # a Linear the probe did not classify
    assert describe_targets(model, targets) == {"0": "wrapped module", "1": "native", "3": "native"}


def test_a_top_k_without_selection_operations_is_noted_from_four_samples_on() -> None:
    assert MIN_SPARSITY_BATCH == 4
    for n, noted in ((3, 0), (4, 2)):  # two blocks, each a Linear and its hidden top-k
        selections = detect_layers(blocks(argmax_loop_mask), X[:n]).selections
        assert [s["kind"] for s in selections] == ["sparsity"] * noted, n


def test_a_cell_longer_than_half_the_width_less_seven_is_shortened() -> None:
    limit = (WIDTH - 7) // 2
    assert limit == 56
    kept = aligned_markdown(Table(["a", "b"], [[Cell("x" * limit), Cell("y")]], [], ""))
    cut = aligned_markdown(Table(["a", "b"], [[Cell("x" * (limit + 1)), Cell("y")]], [], ""))
    assert "x" * limit + " |" in kept and "…" not in kept
    assert "x" * (limit - 1) + "… |" in cut and "x" * limit not in cut
    # at an odd width the formula is not (width - 8) // 2: 121 keeps 57 characters, cuts 58
    wide = Table(["a", "b"], [[Cell("x" * 57), Cell("y")], [Cell("z" * 58), Cell("y")]], [], "")
    shown = aligned_markdown(wide, width=121)
    assert "x" * 57 + " |" in shown and "z" * 56 + "… |" in shown and "z" * 57 not in shown


def test_the_sampled_columns_step_is_the_first_coprime_integer_from_the_floor_of_0618_n() -> None:
    assert sample_columns(7, 3).tolist() == [0, 4, 1]  # floor(4.33) = 4, coprime to 7 (below 0.618 · 7)
    assert sample_columns(10, 3).tolist() == [0, 7, 4]  # floor(6.18) = 6 shares 2 with 10: 7
    assert sample_columns(11, 3).tolist() == [0, 6, 1]  # floor(6.80) = 6, not rounded up to 7
    assert len(set(sample_columns(3136, 784).tolist())) == 784 and sample_columns(3136, 2).dtype == np.intp


class Calls(nn.Module):
    """A linear classifier noting each forward's batch size and whether its input requires a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.seen = nn.Linear(4, 3), []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append((x.shape[0], x.requires_grad))
        return self.fc(x.flatten(1))


def test_the_model_probe_runs_the_batch_then_its_first_sample_alone_and_with_gradients() -> None:
    model = Calls()
    probe_model(model, torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)), 3, "model m")
    assert model.seen == [(4, False), (1, False), (1, True)]
    assert model.training and all(p.grad is None for p in model.parameters())
