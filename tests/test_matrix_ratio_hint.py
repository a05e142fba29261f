"""`table --matrix` on a record of a model of your own that declares no grid cell: the one line names the row to
declare when every gate the layer probe found keeps one k/N (the k/N its tables print), not a bare
`kwta_ratio=R`: a researcher with Xiao et al.'s `int(0.1 · N)` gates (1254/12544, 627/6272, 10/100) had to work
the ratio out from the probe's counts."""

from __future__ import annotations

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.errors import ConfigError
from kwta_robust.matrix import cell_coordinates


def _gate(name: str, k: int, size: int) -> dict:
    return {"name": name, "kinds": ["gate"], "grouping": "volume", "evidence": {"k": k, "group_size": size}}


def _own(*gates: dict):
    record = make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label="mine",
                         detection={"n": 4, "probed": 10, "layers": list(gates)})
    record.model.update({"activation": "none", "kwta_ratio": None})
    return record


def test_the_refusal_names_the_ratio_every_gate_keeps() -> None:
    record = _own(_gate("1", 1254, 12544), _gate("4", 627, 6272), _gate("8", 10, 100))
    with pytest.raises(ConfigError) as info:
        cell_coordinates(record)
    message = str(info.value)
    assert "--grid-cell kwta_ratio=0.1,weight_sparsity=S (k/N 0.1: every gate's;" in message
    assert "layers 1 (k/N 1254/12544), 4 (k/N 627/6272), 8 (k/N 10/100)" in message and "\n" not in message
    # gates of two ratios: no row to suggest, the placeholder stays
    with pytest.raises(ConfigError) as info:
        cell_coordinates(_own(_gate("1", 1254, 12544), _gate("8", 50, 100)))
    assert "--grid-cell kwta_ratio=R,weight_sparsity=S" in str(info.value)
