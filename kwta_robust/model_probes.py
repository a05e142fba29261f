"""Measurements on the model for the gradient-masking diagnostics (:mod:`kwta_robust.diagnostics`): input
gradients, determinism and the output's form on one batch of evaluation inputs (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", §5: zero or NaN gradients, randomness, probabilities instead of logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import all_zero_or_one, eval_mode, input_gradient, margin_loss
from attacks.gates import true_fraction
from attacks.precision import is_low_precision, loss_logits, sum_tolerance
from kwta_robust.diagnostics_base import Thresholds
from kwta_robust.grad_cut import locate_cut


def measure_model(model: nn.Module, x: Tensor, y: Tensor, thresholds: Thresholds | None = None) -> dict:
    """Probe the model on one batch (``x`` ``[B, ...]`` in [0, 1], ``y`` ``[B]``) in eval mode.

    Returns plain numbers: the fraction of samples with an all-zero / non-finite input gradient of the margin loss
    (margin, not cross-entropy, so a saturated softmax does not fake a zero gradient), whether the logits have no
    input gradient at all (the graph is cut; then ``grad_cut``, where: :func:`kwta_robust.grad_cut.locate_cut`),
    the fraction whose cross-entropy gradient is all zero where the
    margin's is not (a saturated softmax; taken as the attacks take it, float16/bfloat16 logits in float32:
    :func:`attacks.precision.loss_logits`), the logits' dtype and, for float16/bfloat16 logits, that fraction with
    the loss in their own precision (``low_precision_ce_grad_zero_fraction``: what an attack taking it there
    sees; ``None`` otherwise), the largest difference between two forward passes and the predictions
    it changed, whether the outputs look like probabilities (and, of those, like one-hot hard labels), and
    whether a sample's output depends on the rest of
    the batch (:func:`_batch_dependence`). The model's parameters receive no gradient
    (``torch.autograd.grad`` w.r.t. the input only).
    """
    thresholds = thresholds or Thresholds()
    n = int(x.shape[0])
    with eval_mode(model):
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = model(xg)
            margin = margin_loss(logits, y).sum()
            found = (torch.autograd.grad(margin, xg, retain_graph=True, allow_unused=True)[0]
                     if margin.requires_grad else None)
            # no input gradient at all: the graph is cut between the input and the logits (no_grad, detach, NumPy)
            missing = found is None
            grad = torch.zeros_like(xg) if found is None else found
            low = is_low_precision(logits)
            ce_grad = input_gradient(F.cross_entropy(loss_logits(logits, rescale=True), y, reduction="sum"), xg,
                                     retain_graph=low)
            native = input_gradient(F.cross_entropy(logits, y, reduction="sum"), xg) if low else None
        flat = grad.detach().flatten(1)
        nonfinite = ~torch.isfinite(flat).all(dim=1)
        zero = (flat == 0).all(dim=1) & ~nonfinite
        # cross-entropy's gradient zero where the margin's is not: the softmax rounds to one-hot (saturated)
        ce_zero = (ce_grad.detach().flatten(1) == 0).all(dim=1) & ~zero & ~nonfinite
        native_zero = None if native is None else (native.detach().flatten(1) == 0).all(dim=1) & ~zero & ~nonfinite
        with torch.no_grad():
            first = model(x)
            second = model(x)
            diff = float((first - second).abs().max()) if n else 0.0
            scale = float(first.abs().max()) if n else 0.0
            # the first half alone: a deterministic model whose outputs change depends on the rest of the batch
            repeatable = n >= 2 and diff <= thresholds.output_rtol * max(scale, 1e-12)
            half = model(x[: n // 2]) if repeatable else None
    wide = loss_logits(first)  # float16 rows summed in float32; float32 and float64 as they are
    row_err = float((wide.sum(dim=1) - 1).abs().max()) if n else 0.0
    atol = sum_tolerance(first.dtype, thresholds.probability_atol)  # float16/bfloat16: each entry is rounded
    looks_prob = bool(n) and bool((wide >= -atol).all() and (wide <= 1 + atol).all()) and row_err <= atol
    # one-hot rows: the model returns its decision only (argmax then one_hot), no score an attack could follow
    hard = looks_prob and all_zero_or_one(first)
    return {
        "n": n,
        "grad_zero_fraction": true_fraction(zero),  # exact counts: 1 of 10 in float32 exceeds a 0.1 bar
        "grad_nonfinite_fraction": true_fraction(nonfinite),
        "grad_missing": bool(n) and missing,
        "ce_grad_zero_fraction": true_fraction(ce_zero),
        "output_dtype": str(first.dtype).removeprefix("torch."),
        "low_precision_ce_grad_zero_fraction": None if native_zero is None else true_fraction(native_zero),
        "mean_grad_l1": float(flat[~nonfinite].abs().sum(dim=1).mean()) if bool((~nonfinite).any()) else 0.0,
        "max_output_diff": diff,
        "max_abs_output": scale,
        "prediction_changes": int((first.argmax(dim=1) != second.argmax(dim=1)).sum()),
        "outputs_look_like_probabilities": looks_prob,
        "outputs_look_like_hard_labels": hard,
        "max_row_sum_error": row_err,
        **_batch_dependence(model, first, half),
        # where the forward cuts the graph (the last call that saw a gradient), named by the zero-gradients flag
        "grad_cut": locate_cut(model, x) if n and missing else None,
    }


def batch_statistics_layers(model: nn.Module) -> list[str]:
    """Names of the batch-norm layers that normalize with batch statistics in eval mode
    (``track_running_stats=False``): their output for a sample depends on the rest of its batch."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats]


def _batch_dependence(model: nn.Module, first: Tensor, half: Tensor | None) -> dict:
    """How the outputs for the first ``m = n // 2`` inputs change when they run without the other half: the largest
    logit difference and the predictions it changed (``None`` when the model is randomized or the batch too small),
    and the batch-norm layers that normalize with batch statistics in eval mode (``track_running_stats=False``)."""
    norms = batch_statistics_layers(model)
    if half is None:
        return {"batch_half": None, "batch_max_output_diff": None, "batch_prediction_changes": None,
                "batch_statistics_layers": norms}
    together = first[: half.shape[0]]
    return {"batch_half": int(half.shape[0]), "batch_max_output_diff": float((half - together).abs().max()),
            "batch_prediction_changes": int((half.argmax(dim=1) != together.argmax(dim=1)).sum()),
            "batch_statistics_layers": norms}
