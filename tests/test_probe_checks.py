"""The masking checks over the model probes on models that mask gradients the way defences other than kWTA do
(Athalye et al. 2018; Carlini et al. 2019): a saturated softmax, a gradient cut by ``torch.no_grad()``, a
randomized input layer. Each is measured on a real module, and the cut-gradient model is evaluated end to end."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from eval_helpers import make_record, make_result
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from kwta_robust.model_probes import measure_model
from kwta_robust.probe_checks import maximises_cross_entropy

PGD_FLAGS = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]


class Net(nn.Module):
    """A fixed linear classifier on ``[N, 1, 3, 4]`` inputs, 3 classes; ``scale`` multiplies the logits."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 3)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.fc(x.flatten(1))


class NoGradBlur(Net):
    """A smoothing 'denoiser' computed under ``torch.no_grad()`` before the classifier: the gradient is cut."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            x = (x + x.roll(1, dims=-1)) / 2
        return self.fc(x.flatten(1))


class NoisyInput(Net):
    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x + 0.3 * torch.randn_like(x)).flatten(1))


@pytest.fixture()
def batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 3, 4, generator=gen)
    with torch.no_grad():
        y = Net()(x).argmax(dim=1)  # every sample correctly classified
    return x, y


def flags_of(probes: dict, *results) -> dict:
    return {f.code: f for f in run_checks(make_record(list(results) or [make_result("pgd", PGD_FLAGS)],
                                                      probes=probes))}


def test_a_saturated_softmax_is_measured_and_flagged(batch) -> None:
    x, y = batch
    honest, scaled = measure_model(Net(), x, y), measure_model(Net(scale=1e4), x, y)
    assert honest["ce_grad_zero_fraction"] == 0.0 and honest["grad_zero_fraction"] == 0.0
    assert scaled["ce_grad_zero_fraction"] > 0.5 and scaled["grad_zero_fraction"] == 0.0
    assert "saturated-softmax" not in flags_of(honest)
    flag = flags_of(scaled)["saturated-softmax"]
    assert flag.severity == "critical" and flag.evidence["cross_entropy_attacks"] == ["pgd"]
    assert "attacks climbing cross-entropy (pgd) stand still there" in flag.message
    assert "add a margin- or DLR-loss attack" in flag.message
    # with an attack of another objective in the record, its column is trustworthy: a warning naming it
    dlr = make_result("apgd-dlr", PGD_FLAGS, position=1)
    flag = flags_of(scaled, make_result("pgd", PGD_FLAGS), dlr)["saturated-softmax"]
    assert flag.severity == "warning" and flag.evidence["other_gradient_attacks"] == ["apgd-dlr"]
    # without any gradient attack (Square alone) no column stood still: a warning, not "their numbers overstate"
    flag = flags_of(scaled, make_result("square", PGD_FLAGS, kind="black-box"))["saturated-softmax"]
    assert flag.severity == "warning" and flag.evidence["cross_entropy_attacks"] == []
    assert "stand still there; no gradient attack of this record follows it" in flag.message
    assert "overstate" not in flag.message


@pytest.mark.parametrize(
    "attack, params, expected",
    [
        ("pgd", {}, True), ("pgd", {"loss": "margin"}, False), ("fgsm", {"loss": "ce"}, True), ("apgd-ce", {}, True),
        ("apgd-dlr", {}, False), ("apgd-t", {}, False), ("cw", {}, False), ("fab", {}, False), ("eot", {}, True),
        ("bpda", {"inner": "apgd-ce"}, True), ("bpda", {"inner": "pgd", "inner_params": {"loss": "margin"}}, False),
        ("bpda", {}, True), ("no-such-attack", {}, False),
    ],
)
def test_which_attacks_climb_cross_entropy(attack: str, params: dict, expected: bool) -> None:
    assert maximises_cross_entropy(attack, params) is expected


def test_a_gradient_cut_by_no_grad_is_named_and_attacks_stand_still(batch) -> None:
    x, y = batch
    probes = measure_model(NoGradBlur(), x, y)
    assert probes["grad_missing"] is True and probes["grad_zero_fraction"] == 1.0
    flag = flags_of(probes)["zero-gradients"]
    assert flag.severity == "critical" and "no input gradient at all" in flag.message
    assert "torch.no_grad()" in flag.message and "surrogate: identity" in flag.message
    assert measure_model(Net(), x, y)["grad_missing"] is False
    model = NoGradBlur().requires_grad_(False)
    threat = ThreatModel("linf", 0.1)
    for name in ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "deepfool", "fab", "eot", "cw"):
        params = {"steps": 3} if name in ("pgd", "apgd-ce", "apgd-dlr", "deepfool", "fab") else {}
        adv = create_attack(name, **params)(model, x, y, ThreatModel("l2", 0.5) if name == "cw" else threat)
        assert adv.shape == x.shape and bool(torch.isfinite(adv).all())


def test_a_cut_gradient_model_evaluates_to_a_flagged_record(tmp_path) -> None:
    """Before: PGD ended the run in ``RuntimeError: element 0 of tensors does not require grad``."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(24, 1, 3, 4, generator=gen)
    with torch.no_grad():
        y = NoGradBlur()(x).argmax(dim=1)
    data = TensorData(x, y, "toy", 3, torch.arange(24, dtype=torch.long))
    cfg = EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 24, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.3]}],
        "attacks": [{"attack": "pgd", "params": {"steps": 5}}, {"attack": "square", "params": {"n_queries": 50}}],
        "diagnostics": {"enabled": True, "gradient_batch": 24},
    })
    record = evaluate(NoGradBlur(), data, cfg, {}, progress=False, out_path=tmp_path / "r.json")
    codes = {f.code: f.severity for f in record.diagnostics}
    assert codes["zero-gradients"] == "critical" and record.probes["grad_missing"] is True
    assert sorted({r.label for r in record.results}) == ["pgd", "square"] and (tmp_path / "r.json").exists()


@pytest.mark.parametrize("with_eot", [False, True, "bpda"])
def test_a_randomized_model_is_critical_until_eot_runs(with_eot: bool | str, batch) -> None:
    """``bpda`` with ``inner: eot`` averages over the draws too; before, its record still read "no attack averaged
    over its randomness ... add expectation over transformation" (critical). An ``eot`` of one draw per gradient
    (plain PGD on single draws) does not count; before, it made the flag a warning."""
    x, y = batch
    probes = measure_model(NoisyInput(), x, y)
    results = [make_result("pgd", PGD_FLAGS),
               make_result("eot-1", PGD_FLAGS, attack="eot", kind="adaptive", position=3, params={"eot_samples": 1}),
               make_result("bpda-eot-1", PGD_FLAGS, attack="bpda", kind="bpda", position=4,
                           params={"inner": "eot", "inner_params": {"eot_samples": 1}})]
    if with_eot == "bpda":
        results.append(make_result("bpda-eot", PGD_FLAGS, attack="bpda", kind="bpda", position=1,
                                   params={"surrogate": "smooth", "inner": "eot"}))
        results.append(make_result("bpda-pgd", PGD_FLAGS, attack="bpda", kind="bpda", position=2,
                                   params={"surrogate": "smooth", "inner": "pgd"}))
    elif with_eot:
        results.append(make_result("eot", PGD_FLAGS, kind="adaptive", position=1))
    flag = flags_of(probes, *results)["non-deterministic"]
    if with_eot:
        label = "bpda-eot" if with_eot == "bpda" else "eot"
        assert flag.severity == "warning" and f": the model is randomized; {label} attacked its expectation" \
            in flag.message and flag.evidence["eot_attacks"] == [label]
    else:
        assert flag.severity == "critical" and "add expectation over transformation (attack: eot)" in flag.message


class BatchStatsNet(Net):
    """Batch norm that normalizes with the batch's statistics in eval mode (``track_running_stats=False``; with
    ``track``, the usual running statistics): a sample's logits depend on the other samples of its batch."""

    def __init__(self, track: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.BatchNorm1d(12, track_running_stats=track)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x.flatten(1)))


def test_a_model_whose_outputs_depend_on_the_batch_is_critical(batch) -> None:
    x, y = batch
    probes = measure_model(BatchStatsNet(track=False), x, y)
    assert probes["batch_half"] == 8 and probes["batch_prediction_changes"] >= 0
    assert probes["batch_max_output_diff"] > 1e-2 * probes["max_abs_output"]
    assert probes["batch_statistics_layers"] == ["norm"]
    flag = flags_of(probes)["batch-dependent"]
    assert flag.severity == "critical" and flag.message.startswith("the outputs for 8 inputs change when they run "
                                                                   "without the other 8 of the batch")
    assert "norm normalize with batch statistics in eval mode (track_running_stats=False)" in flag.message
    tracked = measure_model(BatchStatsNet(track=True), x, y)
    assert tracked["batch_max_output_diff"] <= 1e-6 * tracked["max_abs_output"]
    assert tracked["batch_statistics_layers"] == [] and "batch-dependent" not in flags_of(tracked)
    noisy = measure_model(NoisyInput(), x, y)  # randomized: two passes differ already, the half is not compared
    assert noisy["batch_half"] is None and "batch-dependent" not in flags_of(noisy)
    assert "batch-dependent" not in flags_of({"n": 16, "max_abs_output": 3.0})  # a record from before the probe


def test_a_prediction_flipped_by_rounding_alone_is_not_batch_dependence() -> None:
    """Kernels chosen per batch size round differently: a near tie may flip on ~1e-7; without batch-statistics
    layers that is no evidence, with them it is."""
    rounding = {"n": 16, "max_abs_output": 3.0, "batch_half": 8, "batch_max_output_diff": 1e-7,
                "batch_prediction_changes": 1, "batch_statistics_layers": []}
    assert "batch-dependent" not in flags_of(rounding)
    assert "batch-dependent" in flags_of({**rounding, "batch_statistics_layers": ["bn"]})
    assert "batch-dependent" in flags_of({**rounding, "batch_max_output_diff": 0.5})


class DeadBelowHalf(Net):
    """``fc(relu(x - 0.5))``: a sample with every pixel below 0.5 has an all-zero input gradient."""

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(x - 0.5).flatten(1))


@pytest.mark.parametrize("dead, flagged", [(1, False), (2, True)])
def test_the_zero_gradient_fraction_is_an_exact_count_at_the_bar(dead: int, flagged: bool) -> None:
    """1 dead sample of 10 is exactly the 0.1 bar (not above it); in float32 it read 0.10000000149 and was flagged."""
    x = torch.full((10, 1, 3, 4), 0.9)
    x[:dead] = 0.1
    with torch.no_grad():
        y = DeadBelowHalf()(x).argmax(dim=1)
    probes = measure_model(DeadBelowHalf(), x, y)
    assert probes["grad_zero_fraction"] == dead / 10
    assert ("zero-gradients" in flags_of(probes)) is flagged
