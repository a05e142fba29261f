"""Models that are not float32 (float16 / bfloat16 / float64): the attacks' losses on low-precision logits
(:mod:`attacks.precision`), the ``low-precision`` flag, the probes' dtypes and the one-line errors. Low precision is a
known source of false robustness (Carlini et al. 2019, §5): float16 cross-entropy gradients vanish on confident
samples. Float32 models must see exactly what they saw before."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.apgd import dlr_loss
from attacks.base import NonLogitOutputWarning, ThreatModel, check_logits, create_attack, margin_loss
from attacks.precision import loss_logits
from eval_helpers import make_record, make_result
from kwta_robust.checkpoint import load_checkpoint, save_checkpoint
from kwta_robust.datafile import model_num_classes
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import DataError
from kwta_robust.loading import model_info
from kwta_robust.model_probes import measure_model
from kwta_robust.layers import ActivationSpec
from kwta_robust.models import ModelSpec


class Confident(nn.Module):
    """Three classes on ``[N, 1, 4, 4]`` inputs, logits ``(4s, 44 - 4s, 0)`` with ``s`` the sum of the pixels: at
    ``x = 0.5`` class 0 wins by a margin of 20 (``p_1 = e^-20``, below float16's smallest subnormal) and an Linf step
    of 0.25 down flips it to class 1. ``dtype`` is the precision it computes in (its input cast first)."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[4.0] * 16, [-4.0] * 16, [0.0] * 16]))
            self.fc.bias.copy_(torch.tensor([0.0, 44.0, 0.0]))
        self.fc.to(dtype)
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.to(self.dtype).flatten(1))


X, Y = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)
LINF = ThreatModel("linf", 0.25)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fgsm_on_a_low_precision_model_breaks_what_it_breaks_in_float32(dtype: torch.dtype) -> None:
    fgsm = create_attack("fgsm", seed=0)
    for model in (Confident(), Confident(dtype)):
        adv = fgsm(model, X, Y, LINF)
        assert LINF.contains(adv, X).all()
        # before: float16 cross-entropy had an all-zero gradient (margin 20), so FGSM stood still in float16
        assert (model(adv).argmax(dim=1) != Y).all(), dtype


def test_apgd_ce_on_a_float16_model_breaks_it() -> None:
    adv = create_attack("apgd-ce", steps=5, seed=0)(Confident(torch.float16), X, Y, LINF)
    assert (Confident(torch.float16)(adv).argmax(dim=1) != Y).all()


def test_loss_logits_leaves_float32_and_float64_alone_and_upcasts_half() -> None:
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(3, 4, dtype=dtype)
        assert loss_logits(z) is z and loss_logits(z, rescale=True) is z
    z = torch.randn(3, 4).half()
    up = loss_logits(z)
    assert up.dtype == torch.float32 and torch.equal(up, z.float())


def test_rescaled_gradient_keeps_each_samples_direction() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    logits = (x * torch.tensor([1e-3, 5.0])).half()
    loss = loss_logits(logits, rescale=True).mul(torch.tensor([[1e-9, 0.0], [0.0, 3.0]])).sum()
    (grad,) = torch.autograd.grad(loss, x)
    # per row the largest |d loss / d logit| is scaled into [0.5, 1) by a power of two: nothing flushes to zero
    assert torch.equal(grad.sign(), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_dlr_and_margin_on_half_logits_stay_finite() -> None:
    tied = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).half()  # z_(1) = z_(3): float16's 1e-12 was 0, so 0 / 0
    assert torch.isfinite(dlr_loss(tied, torch.tensor([0]))).all()
    wide = torch.tensor([[-60000.0, 60000.0]]).half()  # the difference 120000 overflows float16
    assert margin_loss(wide, torch.tensor([0])).item() == 120000.0
    z = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    true = z.gather(1, y[:, None]).squeeze(1)
    assert torch.equal(margin_loss(z, y), z.scatter(1, y[:, None], float("-inf")).amax(dim=1) - true)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_probabilities_are_recognised(dtype: torch.dtype) -> None:
    class Softmax(nn.Module):
        """A softmax taken in ``dtype``: its rows sum to 1 only within a few of its epsilons."""

        def forward(self, x: Tensor) -> Tensor:
            return F.softmax(2 * torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(0)).to(dtype), 1)

    x, y = torch.rand(64, 1, 4, 4), torch.zeros(64, dtype=torch.long)
    # before: float16 rows missed the probes' 1e-4, bfloat16 rows (summed in bfloat16: 0.996) check_logits' 1e-3
    assert measure_model(Softmax(), x, y)["outputs_look_like_probabilities"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_logits(Softmax()(x))
    assert any(issubclass(w.category, NonLogitOutputWarning) for w in seen) or dtype == torch.float16


def test_integer_one_hot_outputs_still_warn_of_hard_labels() -> None:
    """check_logits's tolerance reads the dtype's epsilon only for floating-point outputs: a decision-only model
    returning ``one_hot(argmax)`` (int64) got the hard-label warning, not ``torch.finfo``'s TypeError."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_logits(F.one_hot(torch.tensor([1, 0, 2]), 3))
    assert any(issubclass(w.category, NonLogitOutputWarning) and "one-hot" in str(w.message) for w in seen)


def test_probe_measures_the_dtype_and_the_half_precision_zero_gradients() -> None:
    half = measure_model(Confident(torch.float16), X, Y)
    assert half["output_dtype"] == "float16"
    assert half["low_precision_ce_grad_zero_fraction"] == 1.0  # what a float16 loss sees
    assert half["ce_grad_zero_fraction"] == 0.0  # what the attacks see (float32 loss, rescaled gradient)
    full = measure_model(Confident(), X, Y)
    assert full["output_dtype"] == "float32" and full["low_precision_ce_grad_zero_fraction"] is None


def _flags(model: nn.Module) -> dict:
    record = make_record([make_result("pgd", [1, 1])], probes=measure_model(model, X, Y))
    record.model.update(parameter_dtypes=model_info(model, "m", "here")["parameter_dtypes"])
    return {f.code: f for f in run_checks(record)}


def test_low_precision_flag_with_evidence_and_never_on_float32_or_float64() -> None:
    flag = _flags(Confident(torch.float16))["low-precision"]
    assert flag.severity == "warning"
    assert flag.evidence["parameter_dtypes"] == ["float16"] and flag.evidence["output_dtype"] == "float16"
    assert flag.evidence["low_precision_ce_grad_zero_fraction"] == 1.0
    assert flag.evidence["logit_resolution"] == pytest.approx(2 ** -10 * 32)  # float16 in [32, 64)
    assert "re-evaluate it in float32 (model.float()" in flag.message
    assert _flags(Confident(torch.bfloat16))["low-precision"].evidence["output_dtype"] == "bfloat16"
    assert "low-precision" not in _flags(Confident())
    assert "low-precision" not in _flags(Confident(torch.float64))


def test_half_model_on_float32_data_names_the_precision() -> None:
    with pytest.raises(DataError, match=r"parameters are float16 but the data are float32 .*model\.float\(\)"):
        model_num_classes(Confident(torch.float16).fc, torch.rand(1, 16), "data x")


def test_float16_checkpoint_loads_into_float32_and_says_so(tmp_path) -> None:
    spec = ModelSpec.from_args("cnn", ActivationSpec("relu"), in_channels=1, input_size=8, channels=[2, 2], hidden=4)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", spec.build().half(), spec, {})
    loaded = load_checkpoint(path)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert any("from float16 to the model's float32" in n for n in loaded.metadata["weights_normalization"])
    assert model_info(loaded.model, "m", "here")["parameter_dtypes"] == ["float32"]
