"""``layer_text.probe_ratio`` and the k/N of a table's gate text read a gate's ``(k, N)`` wherever ``k and size``
held, while :func:`~kwta_robust.layer_text.gate_pairs` (the declared ratio and the grid checks) reads counts only
(integers, ``0 < k <= N``). Both now read the same pairs; on records the probe writes (counts) nothing moves."""

from __future__ import annotations

import pytest

from eval_helpers import make_record
from kwta_robust.fresh_record import probed_model
from kwta_robust.layer_text import detected_gates_text, gate_pairs, probe_ratio


def _record(gates: list[tuple[str, object, object]]):
    """A model without our kWTA layers whose probe entries hold these ``(name, k, group size)``."""
    layers = [{"name": name, "module_class": "TopK", "kinds": ["gate"], "grouping": "dense",
               "evidence": {"grouping": "dense", "k": k, "group_size": n}} for name, k, n in gates]
    record = make_record(detection={"layers": layers})
    record.model.update(activation="relu", num_kwta_layers=0, kwta_ratio=None)
    return record


@pytest.mark.parametrize("bad", [(40, 32), ("8", 32), (True, 32), (-8, 32)])
def test_an_entry_that_is_no_count_is_read_as_gate_pairs_reads_it(bad: tuple[object, object]) -> None:
    counts, two = _record([("a", 8, 32), ("b", 16, 64)]), _record([("a", 8, 32), ("b", 16, 32)])
    assert (probe_ratio(counts), detected_gates_text(counts)) == (0.25, "top-k 0.25 dense (2 found by the probe)")
    assert (probe_ratio(two), detected_gates_text(two)) == (None, "top-k dense (2 found by the probe)")  # as before
    record = _record([("a", 8, 32), ("b", 16, 64), ("c", *bad)])
    assert gate_pairs(record) == [(8, 32), (16, 64)]
    assert probe_ratio(record) == 0.25
    assert detected_gates_text(record) == "top-k 0.25 dense (3 found by the probe)"
    assert probed_model(record)["detected_kwta_ratio"] == 0.25

