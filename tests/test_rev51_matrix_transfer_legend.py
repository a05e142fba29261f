"""The matrices' legend called every record with transfer attacks a "compare record" whose transfer attacks were
"crafted on the other compared models", but ``evaluate`` given ``transfer_sources=`` (the API's) writes such a
record too, crafted on the sources it was given. The line now says "records with transfer attacks" and names both."""

from __future__ import annotations

import copy

from eval_helpers import tiny_kwta_data
from kwta_robust.config import EvalConfig
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
