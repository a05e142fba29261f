"""noisewalk49: a noise-score matrix cites Ahmad & Scheinkman (2019) as the source of the score only for their
pixel-noise protocol (``numenta``); a Gaussian probe's score is the same sum over its own levels, which the paper
never reported, so its legend says so instead of attributing the number to the paper."""

from __future__ import annotations

from test_matrix import grid_records
from kwta_robust.matrix import build_matrices
from kwta_robust.results import NoiseResult


def _probe(kind: str, score: float) -> NoiseResult:
    params = {"value": 1.0} if kind == "numenta" else {}
    return NoiseResult(kind, [0.0, 0.25, 0.5], 1, 0, {"noise_score": score, "num_samples": 10, "params": params}, 0.1)


def _notes() -> dict[str, str]:
    records = grid_records()  # n = 10, four cells
    for record in records:
        record.noise += [_probe("numenta", 20.0), _probe("gaussian", 25.0)]
    return {m.metric: " ".join(m.notes) for m in build_matrices(records) if m.noise}


def test_gaussian_score_legend_does_not_attribute_the_number_to_the_paper() -> None:
    notes = _notes()
    gaussian = notes["noise gaussian"]
    assert "noise gaussian: noise score of the gaussian probe (levels 0 / 0.25 / 0.5, 1 draw, seed 0; Numenta's " \
           "score (Ahmad & Scheinkman 2019) taken over the gaussian probe's levels, not the paper's pixel noise): " \
           "correct classifications summed over the 3 levels" in gaussian
    assert "seed 0; Ahmad & Scheinkman 2019)" not in gaussian


def test_numenta_score_legend_still_cites_the_paper() -> None:
    assert "noise numenta: noise score of the numenta probe (levels 0 / 0.25 / 0.5, 1 draw, noise pixel value 1, " \
           "seed 0; Ahmad & Scheinkman 2019): correct classifications" in _notes()["noise numenta"]
