"""Session 49's mutation review of :mod:`kwta_robust.noise_notes`: the "noise score" legend of records whose numenta
probes ran with different settings names each record's settings after its per-image score and no shared settings
(a mutant named one record's settings for all, another dropped the per-record ones); the per-image interval is the
score's t interval over the images (Student 1908) divided by ``levels × n``, computed here with numpy. Two records of
40 images, 3 levels, seeded counts ``[levels][n]``."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t

from eval_helpers import make_record
from kwta_robust.noise_notes import noise_score_notes, params_text
from test_noise_intervals import counts_for, numenta


def _per_image_text(counts: list[list[int]], draws: int) -> str:
    """``61.7% (55.0–68.4)``: the mean per-image score over the levels in %, with n × its t interval / (levels × n),
    its bounds rounded outward to 0.1 (as the notes write them: never narrower than computed)."""
    scores = np.asarray(counts, dtype=float).sum(axis=0) / draws
    levels, n = len(counts), scores.size
    half = t.ppf(0.975, n - 1) * scores.std(ddof=1) / math.sqrt(n)
    low, high = max(0.0, scores.mean() - half) / levels, min(levels, scores.mean() + half) / levels
    down, up = math.floor(1000 * low + 1e-9) / 10, math.ceil(1000 * high - 1e-9) / 10  # bounds rounded outward
    return f"{100 * scores.mean() / levels:.1f}% ({down:.1f}–{up:.1f})"


def test_records_with_different_probe_settings_name_each_ones_after_its_score() -> None:
    kwta, relu = make_record(n=40, label="kwta"), make_record(n=40, label="relu")
    one, two = counts_for(40, (1.0, 0.7, 0.3), seed=1), counts_for(40, (1.0, 0.6, 0.2), draws=2, seed=2)
    kwta.noise.append(numenta(one))
    relu.noise.append(numenta(two, draws=2))
    note = noise_score_notes([kwta, relu])[0]
    head, per_image = note.split("; per image and level: ")
    assert head.endswith("(the paper counts MNIST's 10,000 test images)")  # no settings shared by both
    assert per_image.startswith(
        f"kwta {_per_image_text(one, 1)} (levels 0 / 0.25 / 0.5, 1 draw, noise pixel value 1), "
        f"relu {_per_image_text(two, 2)} (levels 0 / 0.25 / 0.5, 2 draws, noise pixel value 1); in parentheses")


def test_records_with_the_same_settings_name_them_once_before_the_scores() -> None:
    kwta, relu = make_record(n=40, label="kwta"), make_record(n=40, label="relu")
    one, two = counts_for(40, (1.0, 0.7, 0.3), seed=3), counts_for(40, (1.0, 0.6, 0.2), seed=4)
    kwta.noise.append(numenta(one))
    relu.noise.append(numenta(two))
    note = noise_score_notes([kwta, relu])[0]
    assert ("test images); levels 0 / 0.25 / 0.5, 1 draw, noise pixel value 1; per image and level: "
            f"kwta {_per_image_text(one, 1)}, relu {_per_image_text(two, 1)}; in parentheses") in note


def test_a_parameter_without_a_value_is_written_none_as_the_protocol_writes_it() -> None:
    """A record writes a NaN or infinite parameter as ``null``: the notes say ``none``, not Python's ``None``."""
    assert params_text({"value": None, "std": 0.25}) == "noise pixel value none, std 0.25"
