"""Fuzzing round: every attack on odd but valid models (float64 / float16 weights, non-square and 1x1 images,
2 and 1000 classes, huge logits, kWTA at k=1, channels_last, frozen parameters). An attack either runs to a
record that passes :func:`kwta_robust.record_checks.check_record` with sane numbers and leaves the model as it was,
or stops with one line naming the field and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kwta_robust.api import evaluate_model
from kwta_robust.record_checks import check_record


class Cast(nn.Module):
    """Casts the input to the model's dtype (a float64 / float16 model fed float32 images)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


def cast_mlp(dtype: torch.dtype, classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(Cast(dtype), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, classes))
    return net.to(dtype).eval()


def correct_data(model: nn.Module, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 1x8x8 images labelled with the model's own predictions (all correct clean)."""
    x = torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).float().argmax(1)


def config(attack: str, params: dict, norm: str) -> dict:
    return {"n_examples": 4, "batch_size": 2, "seed": 0, "noise": [],
            "threats": [{"norm": norm, "epsilons": [0.1 if norm == "linf" else 0.5]}],
            "attacks": [{"attack": attack, "params": params}], "diagnostics": {"budget_check": {"enabled": False}}}


def state(model: nn.Module) -> dict[str, tuple[torch.dtype, torch.Tensor]]:
    return {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("attack,params", [("fab", {"steps": 2}), ("fab-t", {"steps": 2, "n_target_classes": 1})])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_on_a_float64_model_runs(attack, params, norm):
    """A float64 model (its logits float64, the images float32) stopped FAB at its first broken sample with 'attack
    'fab' raised RuntimeError: Index put requires the source and destination dtypes match ... fix the code there'."""
    model = cast_mlp(torch.float64)
    x, y = correct_data(model)
    before = state(model)
    record = evaluate_model(model, config(attack, params, norm), x, y)
    check_record(record)
    (result,) = record.results
    assert record.clean.correct == 4 and result.n_attacked == 4 and result.queries > 0
    assert 0 <= result.robust.accuracy <= record.clean.accuracy and result.violations == 0
    after = state(model)
    assert after.keys() == before.keys()
    assert all(after[k][0] == torch.float64 and torch.equal(after[k][1], before[k][1]) for k in before)


class OffGridMask(nn.Module):
    """A linear net whose last class's logit is -inf on inputs off the 1/255 grid (every attacked input): the true
    class still wins there, but the row is not all finite."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        off = ((x * 255 - (x * 255).round()).abs() > 1e-3).flatten(1).any(1, keepdim=True)
        return z.masked_fill(off & (torch.arange(z.shape[1]) == z.shape[1] - 1), float("-inf"))


def test_a_verdict_on_logits_with_an_infinity_has_no_margin():
    """A row [2, 0, -inf] of label 0 counts as wrong (not all finite) but its margin was 0 - 2 = -2 (right)."""
    from attacks.verdicts import classify

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[2.0, 0.0, float("-inf")], [2.0, 0.0, 1.0]])

    verdict = classify(Fixed(), torch.zeros(2, 1, 1, 1), torch.tensor([0, 0]))
    assert verdict.pred.tolist() == [1, 0] and verdict.error_rate.tolist() == [1.0, 0.0]
    assert torch.isnan(verdict.margin[0]) and verdict.margin[1].item() == -1.0


def test_an_attacked_input_with_an_infinite_logit_keeps_a_consistent_record(tmp_path):
    """FGSM at Linf 0.001 moves every input off the grid: the model answers -inf for class 9 there, so each sample
    counts as broken, yet the record stored the finite margin (true class still ahead) and failed its own check
    ('margins: entry 0 (-0.114569) contradicts flags (0)'), its file then unreadable for a resume."""
    from kwta_robust.results import load_record

    model = OffGridMask().eval()
    x = (torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    cfg = {**config("fgsm", {}, "linf"), "threats": [{"norm": "linf", "epsilons": [0.001]}]}
    out = tmp_path / "rec.json"
    record = evaluate_model(model, cfg, x, y, out_path=out)
    check_record(record)
    (result,) = record.results
    assert record.clean_flags == [1, 1, 1, 1] and result.flags == [0, 0, 0, 0] and result.margins == [None] * 4
    assert "non-finite-logits" in [f.code for f in record.diagnostics]
    assert load_record(out).results[0].flags == [0, 0, 0, 0]


@pytest.mark.parametrize("mode,shape,k", [("dense", (2, 6), 6), ("local", (2, 3, 2, 2), 3),
                                         ("volume", (1, 2, 2, 2), 9)])
def test_the_smooth_relaxation_of_a_kwta_where_every_unit_wins_has_the_identity_gradient(mode, shape, k):
    """k >= the group size: the gate is sigmoid(+inf) = 1, but the graph through T·std(s) back-propagated NaN."""
    from kwta_robust.layers import smooth_kwta

    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = smooth_kwta(x, k, mode, 0.5)
    out.sum().backward()
    assert torch.equal(out, x) and torch.equal(x.grad, torch.ones(shape))


def test_bpda_smooth_on_a_kwta_of_ratio_one_attacks():
    """KWTA(ratio=1.0) (every unit wins): BPDA-smooth's inner APGD got NaN gradients and returned NaN inputs for every
    sample (replaced by the clean ones: an attack that did nothing, flagged out-of-ball-outputs)."""
    from kwta_robust.layers import KWTA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), KWTA(ratio=1.0), nn.Linear(16, 10)).eval()
    x, y = correct_data(model)
    params = {"surrogate": "smooth", "inner": "apgd-ce", "inner_params": {"steps": 2}}
    record = evaluate_model(model, config("bpda", params, "l2"), x, y)
    check_record(record)
    (result,) = record.results
    assert result.n_attacked == 4 and result.violations == 0 and result.queries > 0
    assert "out-of-ball-outputs" not in [f.code for f in record.diagnostics]


def float64_net() -> nn.Module:
    """``--model-factory test_matrix_fuzz:float64_net``: a float64 MLP on 1x8x8 images."""
    return cast_mlp(torch.float64)


def test_cli_fab_on_a_float64_factory_model_writes_a_valid_record(tmp_path, capsys):
    """Through the CLI the same float64 model stopped FAB with exit 2 and 'error: ... raised RuntimeError: Index put
    requires the source and destination dtypes match ... fix the code there'."""
    import yaml

    from kwta_robust.cli import main
    from kwta_robust.results import load_record

    model = float64_net()
    x, y = correct_data(model, 6)
    torch.save(model.state_dict(), tmp_path / "net.pt")
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    cfg = {**config("fab", {"steps": 2}, "linf"), "n_examples": 6, "dataset": {"file": str(tmp_path / "data.pt")}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["evaluate", "--model-factory", "test_matrix_fuzz:float64_net", "--weights", str(tmp_path / "net.pt"),
               "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "rec.json")])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err and "error:" not in err
    record = load_record(tmp_path / "rec.json")
    check_record(record)
    (result,) = record.results
    assert result.attack == "fab" and result.n_attacked == 6 and result.n_broken >= 1 and result.queries > 0
    assert result.robust.correct == 6 - result.n_broken
