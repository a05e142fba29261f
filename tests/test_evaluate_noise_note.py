"""`evaluate` prints one record in the long layout under an overview table whose "noise score" column is a count
(correct classifications summed over the levels, on the n images evaluated): its notes say so, as `compare` and
`table` do. Before, the overview's notes were dropped there and a researcher read a bare `137` on 20 images."""

from __future__ import annotations

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_stdout
from kwta_robust.results import NoiseResult


def test_evaluate_layout_explains_the_noise_score_column() -> None:
    record = make_record([make_result("pgd", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], eps=0.1)], label="mine")
    record.noise.append(NoiseResult("numenta", [0.0, 0.5], 1, 3, {"noise_score": 15, "num_samples": 10}, 0.2))
    text = render_stdout([record], "md", detail=True)
    assert "| noise score |" in text
    flat = " ".join(text.split())
    assert "noise score: Numenta's pixel-noise score (Ahmad & Scheinkman 2019), correct classifications summed " \
           "over the noise levels" in flat
    assert "per image and level: 75.0%" in flat
    # after the probe's own note, once
    assert flat.index("noise numenta: levels 0 / 0.5, 1 draw, noise score 15") < flat.index("noise score: Numenta")
    assert flat.count("noise score: Numenta") == 1
    # the same words as the side-by-side layout gives it
    assert "per image and level: 75.0%" in " ".join(render_stdout([record], "md").split())
    # and a record without noise probes gets no such note
    bare = make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label="mine")
    assert "noise score" not in render_stdout([bare], "md", detail=True)
