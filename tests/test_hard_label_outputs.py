"""A model that returns one-hot hard labels (decision-only; Brendel, Rauber & Bethge, ICLR 2018): the probes tell it
from a softmax, the flag ``hard-label-outputs`` says which attacks apply (critical until a labels-only attack ran),
and the attacks' entry warning names the decision-based attacks instead of asking to remove a softmax."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from attacks.base import REGISTRY, NonLogitOutputWarning, check_logits
from eval_helpers import make_record, make_result
from kwta_robust.diagnostics import run_checks
from kwta_robust.model_probes import measure_model

FLAGS = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]


class Net(nn.Module):
    """A fixed linear classifier on ``[N, 1, 3, 4]``, 3 classes; ``output``: logits, softmax or one-hot labels."""

    def __init__(self, output: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.output = nn.Linear(12, 3), output

    def forward(self, x: Tensor) -> Tensor:
        z = self.fc(x.flatten(1))
        if self.output == "softmax":
            return z.softmax(dim=1)
        if self.output == "one-hot":
            return nn.functional.one_hot(z.argmax(dim=1), 3).to(x.dtype)
        return z


@pytest.fixture()
def probes_of() -> dict[str, dict]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 3, 4, generator=gen)
    y = torch.randint(0, 3, (16,), generator=gen)
    return {out: measure_model(Net(out), x, y) for out in ("logits", "softmax", "one-hot")}


def _codes(probes: dict, *attacks: str) -> dict[str, str]:
    results = [make_result(a, FLAGS, position=i) for i, a in enumerate(attacks or ("pgd",))]
    return {f.code: f.severity for f in run_checks(make_record(results, probes=probes))}


def test_one_hot_outputs_are_hard_labels_not_probabilities(probes_of: dict[str, dict]) -> None:
    assert [probes_of[o]["outputs_look_like_hard_labels"] for o in ("logits", "softmax", "one-hot")] == \
        [False, False, True]
    softmax, one_hot = _codes(probes_of["softmax"]), _codes(probes_of["one-hot"])
    assert softmax.get("probabilities-not-logits") == "critical" and "hard-label-outputs" not in softmax
    assert one_hot.get("hard-label-outputs") == "critical" and "probabilities-not-logits" not in one_hot
    assert "hard-label-outputs" not in _codes({"n": 8, "outputs_look_like_probabilities": True})  # older records


@pytest.mark.parametrize("attacks, severity", [(("pgd", "square"), "critical"), (("pgd", "hopskipjump"), "warning"),
                                               (("pgd", "boundary"), "warning")])
def test_hard_labels_are_critical_until_a_decision_based_attack_ran(probes_of: dict[str, dict], attacks: tuple,
                                                                    severity: str) -> None:
    assert _codes(probes_of["one-hot"], *attacks)["hard-label-outputs"] == severity
    flag = next(f for f in run_checks(make_record([make_result(a, FLAGS, position=i) for i, a in enumerate(attacks)],
                                                  probes=probes_of["one-hot"])) if f.code == "hard-label-outputs")
    assert "returns hard labels (decision-only)" in flag.message


def test_labels_only_is_the_registration_of_decision_based_and_transfer_attacks() -> None:
    assert sorted(n for n in REGISTRY.names() if REGISTRY.get(n).labels_only) == ["boundary", "hopskipjump", "transfer"]


def test_the_attack_entry_warning_names_hard_labels() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_logits(torch.eye(3)[[0, 2, 1]])
        check_logits(torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]]))
    messages = [str(w.message) for w in caught if issubclass(w.category, NonLogitOutputWarning)]
    assert "returns hard labels (decision-only)" in messages[0] and "remove the final softmax" in messages[1]
