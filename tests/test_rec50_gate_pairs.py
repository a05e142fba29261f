"""The k/N a record of a top-k of your own is told to declare (``matrix_checks.declarable_ratio``) is the one its
tables then show as declared (``layer_text.declared_ratio``): both read the same measured ``(k, N)`` of its gates
(``layer_text.gate_pairs``), as does the check a declaration gets (``grid_ratio_conflict``). Session 49 gathered
them two ways: the suggestion left out a module gate whose evidence holds its ``k_per_shape`` but no top-level ``k``
(a gate shared by layers, as a hand-edited or trimmed record may keep it), so it offered 0.1 for gates of 10/100
and 31/300, which the tables then did not show as declared (31 is not 0.1 · 300 rounded either way: the exact rule
of session 50's second read, ``layer_text.fits_every_gate``)."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.layer_text import declared_ratio, gate_pairs
from kwta_robust.matrix_checks import declarable_ratio, grid_ratio_conflict


def _own() -> object:
    layers = [{"name": "act1", "kinds": ["gate"], "grouping": "channel", "evidence": {"k": 10, "group_size": 100}},
              {"name": "act2", "kinds": ["gate"], "grouping": "channel",
               "evidence": {"k_per_shape": [[[4, 300], 31, 300], [[2, 300], 31, 300]]}}]
    record = make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label="mine",
                         detection={"n": 4, "probed": 7, "layers": layers})
    record.model.update({"activation": "none", "kwta_ratio": None})
    return record


def test_the_ratio_suggested_is_the_ratio_shown_once_declared() -> None:
    record = _own()
    assert gate_pairs(record) == [(10, 100), (31, 300), (31, 300)]
    suggested = declarable_ratio(record)
    assert suggested == 0.103  # session 49: 0.1, from act1 alone
    record.model["grid_cell"] = {"kwta_ratio": suggested, "weight_sparsity": 0.0, "pruning_method": "declared"}
    assert declared_ratio(record) == suggested
    assert grid_ratio_conflict(record) is None
