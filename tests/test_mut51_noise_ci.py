"""Mutation review (mut51) of :mod:`kwta_robust.noise_ci`'s per-level intervals: which rows get Wilson (one draw, or
level 0 with each image right in all draws or none), the t interval from exactly 30 images, its clipping to
``[0, 1]`` on both sides, the entry :func:`level_interval` picks, and the score's bounds rounded outward."""

from __future__ import annotations

from kwta_robust.noise_ci import (T_OVER_IMAGES, WILSON, level_interval, level_intervals, level_methods,
                                  paired_t_interval, score_bounds_text)
from kwta_robust.results import NoiseResult, wilson_interval

N = 30  # the fewest images a t interval is given from


def probe(rows: list[list[int]], draws: int = 3, levels: list[float] | None = None) -> NoiseResult:
    """A numenta probe of ``draws`` draws with ``correct_counts`` ``rows``, ``[levels][n]``."""
    levels = levels if levels is not None else [0.0, 0.1, 0.2][:len(rows)]
    return NoiseResult("numenta", levels, draws, 0, {"correct_counts": rows, "num_samples": len(rows[0])}, 0.0)


def test_wilson_only_at_level_0_or_with_one_draw_and_t_from_exactly_30_images() -> None:
    all_or_none = [3] * 20 + [0] * 10  # each image right in every draw or in none
    hand_edited = [3] * 19 + [1] + [0] * 10  # level 0 cannot hold a 1 of 3 draws: keeps the t interval
    p = probe([all_or_none, all_or_none, hand_edited], levels=[0.0, 0.1, 0.0])
    assert level_methods(p, N) == [WILSON, T_OVER_IMAGES, T_OVER_IMAGES]
    assert level_methods(probe([all_or_none, all_or_none], draws=1), N) == [WILSON, WILSON]
    assert level_methods(probe([r[:29] for r in (all_or_none, all_or_none)]), 29) == [WILSON, None]
    intervals = level_intervals(p, N)
    assert intervals[0] == wilson_interval(20, N)
    assert intervals[1] == paired_t_interval([c / 3 for c in all_or_none])


def test_t_intervals_of_levels_are_clipped_to_0_and_1() -> None:
    top, bottom, middle = [3] * 29 + [0], [0] * 29 + [3], [0, 1, 2, 3, 1, 2] * 5
    p = probe([[3] * N, top, bottom], levels=[0.0, 0.1, 0.2])
    low, high = paired_t_interval([c / 3 for c in top])
    assert high > 1.0 and level_intervals(p, N)[1] == (low, 1.0)
    low, high = paired_t_interval([c / 3 for c in bottom])
    assert low < 0.0 and level_intervals(p, N)[2] == (0.0, high)
    assert level_intervals(probe([[3] * N, middle]), N)[1] == paired_t_interval([c / 3 for c in middle])


def test_level_interval_is_the_entry_of_its_level() -> None:
    p = probe([[3] * N, [3] * 29 + [0], [0, 1, 2, 3, 1, 2] * 5])
    assert [level_interval(p, N, i) for i in range(3)] == level_intervals(p, N)
    assert len(set(level_intervals(p, N))) == 3


def test_score_bounds_are_rounded_outward_to_whole_answers() -> None:
    assert score_bounds_text(1467.3, 1610.7) == ("1467", "1611")
    assert score_bounds_text(1467.9, 1610.1) == ("1467", "1611")
