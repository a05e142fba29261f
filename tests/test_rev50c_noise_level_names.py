"""Noise levels that read alike in 6 significant digits (``0.3`` and ``0.1 * 3 = 0.30000000000000004``, two levels
to a probe, which refuses only an exact repeat) got one name: the CSV / JSON noise columns
(:mod:`kwta_robust.noise_columns`) wrote two ``noise numenta level 0.3`` columns (JSON rows, a dict per row, kept one)
and the per-level matrices (:func:`kwta_robust.noise_matrix.level_metrics`) one matrix for both. Now such levels are
named by their ``repr``; every other level keeps its name (rev50c)."""

from __future__ import annotations

import random

from eval_helpers import make_record
from kwta_robust.noise_columns import with_noise_columns
from kwta_robust.noise_matrix import level_metrics
from kwta_robust.report import compare_table
from kwta_robust.results import NoiseResult

LEVELS = [0.0, 0.25, 0.3, 0.1 * 3]


def _record(seed: int, label: str, n: int = 12) -> tuple:
    rng = random.Random(seed)
    counts = [[1] * n] + [[int(rng.random() < 0.5) for _ in range(n)] for _ in LEVELS[1:]]
    result = {"kind": "numenta", "params": {"value": 1.0}, "num_samples": n, "correct_counts": counts,
              "accuracy": [sum(row) / n for row in counts], "noise_score": float(sum(map(sum, counts)))}
    record = make_record(n=n, label=label)
    record.noise.append(NoiseResult("numenta", list(LEVELS), 1, 0, result, 0.1))
    return record


def test_levels_that_read_alike_get_a_column_and_a_matrix_each() -> None:
    records = [_record(1, "a"), _record(2, "b")]
    table = with_noise_columns(compare_table(records), records)
    levels = [h for h in table.headers if " level " in h]
    assert levels == ["noise numenta level 0", "noise numenta level 0.25", "noise numenta level 0.3",
                      "noise numenta level 0.30000000000000004"]
    assert len(set(table.headers)) == len(table.headers)
    assert list(level_metrics("noise numenta", records[0].noise[0])) == [
        "noise numenta level 0.25", "noise numenta level 0.3", "noise numenta level 0.30000000000000004"]
