"""README claims of the last wave (a top-k gate inline in the model's own ``forward``), pinned where no test held
them: the flag's advice for such a gate no BPDA attack acted on, and that ``bpda_layers`` cannot name the model
itself (README: "one left out of an explicit ``bpda_layers``, which cannot name the model itself (add ``auto``)")."""

from __future__ import annotations

import pytest

import wild_kwta_models as wild
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data
from test_rootgate_inline import X, DenseRoot

PGD_ONLY = [{"attack": "pgd", "params": {"steps": 1}}]


def test_a_root_gate_no_bpda_acted_on_is_flagged_with_auto_as_the_fix() -> None:
    """``auto`` acts on the model itself where its own forward builds the gate: the advice is to add BPDA, not to move
    the gate into a module of its own or to name a module around it (the model itself cannot be named)."""
    model = wild.seeded(DenseRoot)
    record = evaluate(model, data(model, X), config(attacks=PGD_ONLY), {}, progress=False)
    flag, = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert flag.severity == "critical"
    assert flag.message.endswith(
        "add bpda with bpda_layers: auto (surrogate smooth, the default, or identity), which relaxes the gate where it "
        "is built (topk in the forward of the model itself), the model's own forward included")
    assert "move the selection into a module of its own" not in flag.message


def test_bpda_layers_cannot_name_the_model_itself_by_its_class() -> None:
    model = wild.seeded(DenseRoot)
    with pytest.raises(ConfigError, match=r"^bpda_layers: 'DenseRoot' matches no module \(by name, glob or class "
                                          r"name\); candidates: fc1 \(Linear\), fc2 \(Linear\)$"):
        evaluate(model, data(model, X), config(bpda_layers=["DenseRoot"]), {}, progress=False)
