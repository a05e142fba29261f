"""A noise probe whose ``num_samples`` is ``null`` (small49 item 4): the notes and the HTML take its samples as the
record's ``n`` (:func:`kwta_robust.noise_ci.probe_samples`), but a noise matrix's cell read the null as no number and
showed ``—``, so the one probe had a score with an interval in the notes and none in the matrix. The matrix takes
them as :func:`probe_samples` does now."""

from __future__ import annotations

from html_helpers import quickstart_records
from kwta_robust.matrix import build_matrices, matrix_table
from kwta_robust.noise_ci import probe_samples, record_score_interval
from kwta_robust.noise_matrix import NoiseLevel, NoiseScore
from kwta_robust.report import cell_text


def test_a_null_num_samples_is_the_records_n_in_the_matrices_as_in_the_notes() -> None:
    records = quickstart_records()
    kwta = next(rec for rec in records if rec.label == "kwta")
    probe = kwta.noise[0]
    probe.result["num_samples"] = None
    assert probe_samples(probe, kwta) == kwta.clean.n == 200
    low, high = record_score_interval(kwta)
    matrices = build_matrices(records, title="", noise_levels=True)
    score, = [m for m in matrices if m.noise]
    cells = {score.labels.get(key): value for key, value in score.cells.items()}
    assert set(cells) == {"kwta", "relu"}, cells  # before: no kwta cell (its matrix cell read —)
    cell = cells["kwta"]
    assert isinstance(cell, NoiseScore) and (cell.n, cell.score_low, cell.score_high) == (200, low, high)
    # '!': its record's critical flag (adaptive-beats-pgd) marks the cell in every matrix (mwarn53)
    assert "1539 (1467–1611)!" in [cell_text(c) for row in matrix_table(score).rows for c in row]
    level = next(m for m in matrices if m.noise_level)
    at_level = next(value for key, value in level.cells.items() if level.labels.get(key) == "kwta")
    assert isinstance(at_level, NoiseLevel) and at_level.n == 200 and at_level.ci_low < at_level.accuracy
