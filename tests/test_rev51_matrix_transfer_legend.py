"""The matrices' legend called every record with transfer attacks a "compare record" whose transfer attacks were
"crafted on the other compared models", but ``evaluate`` given ``transfer_sources=`` (the API's) writes such a
record too, crafted on the sources it was given. The line now says "records with transfer attacks" and names both;
so does the error for such a record the matrices cannot place (it said "a compare record")."""

from __future__ import annotations

import copy

import pytest

from eval_helpers import tiny_kwta_data
from kwta_robust.config import EvalConfig
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from kwta_robust.matrix import build_matrices, legend


def test_an_evaluate_record_with_transfer_sources_is_not_called_a_compare_record() -> None:
    model, data = tiny_kwta_data()
    cfg = EvalConfig.from_dict({"dataset": "toy", "n_examples": 8, "batch_size": 8, "seed": 0,
                                "threats": [{"norm": "linf", "epsilons": [0.05]}],
                                "attacks": [{"attack": "pgd", "params": {"steps": 2}}]})
    record = evaluate(model, data, cfg, {"activation": "kwta", "kwta_ratio": 0.25},
                      transfer_sources={"twin": copy.deepcopy(model)}, progress=False)
    assert [r.source for r in record.results] == [None, "twin"]
    notes = legend(build_matrices([record]))
    line = next(n for n in notes if "transfer attacks" in n and "left out of the matrices" in n)
    assert line.startswith("records with transfer attacks: ")
    assert "compare record" not in line and "evaluate_model's on its transfer_sources" in line


def test_the_matrix_error_for_such_a_record_names_evaluate_model_too() -> None:
    model, data = tiny_kwta_data()
    cfg = EvalConfig.from_dict({"dataset": "toy", "n_examples": 4, "batch_size": 4, "seed": 0,
                                "threats": [{"norm": "linf", "epsilons": [0.05]}],
                                "attacks": [{"attack": "pgd", "params": {"steps": 1}}]})
    record = evaluate(model, data, cfg, {}, transfer_sources={"twin": copy.deepcopy(model)}, progress=False)
    with pytest.raises(ConfigError) as caught:  # top-k gates found, no kWTA ratio described: no row to place it in
        build_matrices([record])
    message = str(caught.value)
    assert "a record with transfer attacks, compare's or evaluate_model's given transfer_sources=, is not resumed by " \
        "evaluate), or, for a compare record, run its compare again adding --grid-cell" in message
