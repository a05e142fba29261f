"""NaN or infinite logits are no classification (:func:`attacks.verdicts.finite_predictions`), and the record says
where they occurred (the ``non-finite-logits`` flag, :func:`kwta_robust.probe_checks.check_non_finite_logits`).

Before: torch's ``argmax`` takes a NaN as the largest logit, so a row of NaN "predicted" class 0 and every
class-0 sample an attack drove into NaN counted as robust: a model returning NaN on every attacked input kept the
class-0 share of its samples as robust accuracy (10% on 100 mnist5k images), and no flag said why."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attacks.verdicts import classify, finite_predictions
from eval_helpers import make_record, make_result
from kwta_robust.api import evaluate_model
from kwta_robust.diagnostics import Thresholds, run_checks
from kwta_robust.record_checks import check_record

NAN = float("nan")


class NaNOffGrid(nn.Module):
    """Finite logits on images whose pixels are multiples of 1/255 (the data), NaN logits on any other input (what
    an attack or a noise probe makes of them): a model whose numerics fail off the data."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc(x.flatten(1))
        off = ((x * 255) - (x * 255).round()).abs().flatten(1).amax(1) > 1e-3
        return torch.where(off[:, None], torch.full_like(out, NAN), out)


def grid_data(n: int = 12) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=gen).float() / 255
    return x, NaNOffGrid()(x).argmax(1)  # labels: the model's own clean predictions (clean accuracy 100%)


def test_a_row_that_is_not_all_finite_predicts_a_class_other_than_the_label() -> None:
    logits = torch.tensor([[NAN, 1.0], [1.0, 2.0], [math.inf, 0.0], [NAN, NAN], [0.0, -math.inf]])
    y = torch.tensor([0, 1, 0, 1, 0])
    # worked by hand: rows 0, 2, 3 and 4 hold a NaN or an infinity -> the first class that is not their label
    assert finite_predictions(logits, y).tolist() == [1, 1, 1, 0, 1]
    assert logits.argmax(1).tolist()[:4] == [0, 1, 0, 0]  # what argmax alone says: rows 0 and 2 "right"


def test_a_verdict_on_nan_logits_is_wrong_with_no_margin() -> None:
    model = NaNOffGrid().eval()
    x, y = grid_data()
    assert (y == 0).any()  # argmax on a NaN row says class 0: those rows would have been "right"
    verdict = classify(model, x + 0.5 / 255, y)  # off the grid: every row NaN
    assert (verdict.pred != y).all() and verdict.margin.isnan().all() and (verdict.error_rate == 1).all()
    assert torch.equal(classify(model, x, y).pred, y)  # on the grid: the model's own predictions


def test_attacks_and_noise_on_nan_logits_count_as_broken_and_are_flagged() -> None:
    x, y = grid_data()
    assert 0 < int((y == 0).sum()) < len(y)  # some class-0 samples: argmax on NaN would have kept them robust
    config = {"n_examples": len(y), "batch_size": len(y), "seed": 0, "mode": "independent",
              "threats": [{"norm": "linf", "epsilons": [0.1]}],
              "attacks": [{"attack": "fgsm"}, {"attack": "pgd", "params": {"steps": 3}}],
              "noise": [{"kind": "gaussian", "levels": [0.0, 0.1]}]}
    record = evaluate_model(NaNOffGrid().eval(), config, x, y, threads=1, progress=False)
    check_record(record, "record")
    assert record.clean.accuracy == 1.0
    assert [r.robust.accuracy for r in record.results] == [0.0, 0.0]
    assert record.worst("linf", 0.1).robust.accuracy == 0.0
    assert record.noise[0].result["accuracy"] == [1.0, 0.0]
    flag = next(f for f in record.diagnostics if f.code == "non-finite-logits")
    assert flag.severity == "warning"
    assert flag.evidence == {"clean": 0, "attacks": [{"attack": "fgsm", "norm": "linf", "eps": 0.1, "inputs": 12},
                                                     {"attack": "pgd", "norm": "linf", "eps": 0.1, "inputs": 12}],
                             "noise": [{"kind": "gaussian", "level": 0.1, "inputs": 12}]}  # level 0: the data, finite
    assert ("NaN or infinite logits on 12 inputs of fgsm at Linf 0.1; 12 inputs of pgd at Linf 0.1; 12 inputs of "
            "noise probe gaussian at level 0.1") in flag.message


def test_the_flag_counts_attacked_inputs_without_a_margin_and_only_with_one_draw() -> None:
    attacked = make_result("pgd", [1, 0, 0, -1])
    attacked.margins = [-1.0, None, 2.0, None]  # sample 1: no margin, attacked -> counted; sample 3 not attacked
    record = make_record([attacked], clean_flags=[1, 1, 1, 0])
    record.clean_margins = [-1.0, -1.0, -1.0, None]  # a clean verdict without a margin: NaN clean logits
    flags = [f for f in run_checks(record, Thresholds()) if f.code == "non-finite-logits"]
    assert [f.evidence for f in flags] == [{"clean": 1, "attacks": [{"attack": "pgd", "norm": "linf", "eps": 0.3,
                                                                      "inputs": 1}]}]
    record.provenance["randomness"] = {"draws": 5, "max_output_diff": 0.1}  # margins are vote shares there
    assert not [f for f in run_checks(record, Thresholds()) if f.code == "non-finite-logits"]
    attacked.margins = [-1.0, 0.5, 2.0, None]
    record.clean_margins = [-1.0, -1.0, -1.0, -2.0]
    del record.provenance["randomness"]
    assert not [f for f in run_checks(record, Thresholds()) if f.code == "non-finite-logits"]
