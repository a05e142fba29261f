"""A per-level noise matrix's note, where no cell has an interval, said "no cell holds per-sample counts on 30
samples or more, which a t interval over several draws needs" for a one-draw probe too, whose levels take Wilson's
interval at any n: it lacks the counts (``correct_counts``, absent in an older record) alone. Numbers unchanged."""

from __future__ import annotations

from kwta_robust.noise_matrix import level_metrics
from kwta_robust.results import NoiseResult


def probe(draws: int, counts: bool, n: int = 8) -> NoiseResult:
    result = {"accuracy": [1.0, 0.5], "num_samples": n}
    if counts:
        result["correct_counts"] = [[draws] * n, [draws * (i % 2) for i in range(n)]]
    return NoiseResult("gaussian", [0.0, 0.1], draws, 1, result, 0.0)


def note(p: NoiseResult, n: int = 8) -> str:
    (metric,) = level_metrics("noise gaussian", p, [(p, n)]).values()
    return metric.note


def test_a_one_draw_probe_without_counts_lacks_the_counts_alone() -> None:
    one = note(probe(1, counts=False))
    assert "the accuracy alone (no cell holds per-sample counts (correct_counts))" in one
    assert "several draws" not in one and "30 samples" not in one
    several = note(probe(3, counts=True))  # 8 images: no t interval
    assert "no cell holds per-sample counts (correct_counts) on 30 samples or more, which a t interval over several " \
        "draws needs" in several
    assert "with its 95% interval (Wilson)" in note(probe(1, counts=True))
