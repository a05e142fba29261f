"""The noise note's score per image and level (audit 49): its interval in % was rounded to nearest (``66.7–73.2``)
while the noise score's own interval is rounded outward to whole classifications (``1467–1611``), so the % interval
read narrower than computed. It is now rounded outward too: the lower bound down, the upper bound up."""

from __future__ import annotations

from html_helpers import quickstart_records
from kwta_robust.noise_ci import record_score_interval
from kwta_robust.noise_notes import noise_score_notes


def test_the_per_image_interval_is_rounded_outward() -> None:
    kwta, relu = quickstart_records()
    low, high = record_score_interval(kwta)
    cells = 11 * 200
    assert 0.6665 < low / cells < 0.667 and 0.7321 < high / cells < 0.7325  # nearest rounding: 66.7 and 73.2
    note, = [n for n in noise_score_notes([kwta, relu]) if n.startswith("noise score:")]
    assert "per image and level: kwta 70.0% (66.6–73.3), relu 44.6% (40.3–48.8);" in note


def test_an_upper_bound_is_rounded_up_and_an_exact_one_kept() -> None:
    from kwta_robust.numbers import upper_bound_percent_text  # new in units 49: the old code fails on this import

    assert [upper_bound_percent_text(v) for v in (0.73214, 0.732, 0.0, 1.0, 0.1 + 0.2)] == \
        ["73.3", "73.2", "0.0", "100.0", "30.0"]
