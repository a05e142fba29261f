"""Session 50's noise reporting, names and notes: one name per noise probe in every table and note (``noise numenta``,
``noise numenta [2]`` for the second of its kind: the paired rows wrote ``noise[1] numenta`` or the bare kind, the
matrices ``noise numenta [2]``, the notes the settings alone), and compare's notes give the Gaussian, uniform and
salt-and-pepper probes' noise score with its interval, as evaluate's long table does."""

from __future__ import annotations

from eval_helpers import make_record
from kwta_robust.formats import render_stdout
from kwta_robust.html_noise import noise_section
from kwta_robust.noise_matrix import noise_metrics
from kwta_robust.noise_notes import noise_score_notes, other_noise_notes, probe_notes
from kwta_robust.paired import noise_pairs, paired_table
from kwta_robust.report import cell_text
from kwta_robust.results import EvalRecord, NoiseResult
from test_noise50_intervals import _record

NAMES = ["noise numenta [1]", "noise numenta [2]", "noise gaussian"]


def _probe(kind: str, value: float, seed: int, counts: list[list[int]]) -> NoiseResult:
    n = len(counts[0])
    result = {"kind": kind, "params": {"value": value} if kind == "numenta" else {}, "num_samples": n,
              "correct_counts": counts, "accuracy": [sum(row) / n for row in counts],
              "noise_score": float(sum(map(sum, counts)))}
    return NoiseResult(kind, [0.0, 0.5], 1, seed, result, 0.1)


def _records(n: int = 40) -> list[EvalRecord]:
    """noise.yaml's shape: two numenta probes (pixel values 1 and 0.7469) and a Gaussian one, on both models."""
    out = []
    for label, shift in (("kwta", 0), ("relu", 1)):
        record = make_record(n=n, label=label)
        counts = [[1] * n, [int((i + shift) % 3 > 0) for i in range(n)]]
        record.noise += [_probe("numenta", 1.0, 0, counts), _probe("numenta", 0.7469, 0, counts),
                         _probe("gaussian", 0.0, 0, counts)]
        out.append(record)
    return out


def test_every_table_and_note_names_a_probe_one_way() -> None:
    kwta, relu = _records()
    pairs, _ = noise_pairs(kwta, relu)
    assert [c.name for c in pairs] == NAMES  # it was noise[0] numenta, noise[1] numenta, gaussian
    rows = [cell_text(r[1]) for r in paired_table([kwta, relu]).rows if cell_text(r[1]) != "clean"]
    assert [row.rpartition(" vs ")[0].rpartition(" ")[0] for row in rows] == NAMES
    assert list(noise_metrics([kwta, relu])) == NAMES  # the matrices' names, as before
    assert [note.partition(":")[0] for note in probe_notes(kwta)] == NAMES
    others, = [note for note in noise_score_notes([kwta]) if "numenta probes" in note]
    assert "the noise score column shows noise numenta [1], the first of 2 numenta probes; the others: " \
           "noise numenta [2]: levels 0 / 0.5, 1 draw, noise pixel value 0.7469, noise score " in others
    assert [note.partition(":")[0] for note in other_noise_notes([kwta, relu])] == ["[kwta] noise gaussian",
                                                                                    "[relu] noise gaussian"]
    html = str(noise_section([kwta]).body)
    assert "<td>noise numenta [2] (noise pixel value 0.7469)</td>" in html


def test_a_probe_without_a_pair_is_named_so_in_its_note() -> None:
    kwta, relu = _records()
    relu.noise[1] = NoiseResult("numenta", [0.0, 0.5], 1, 5, relu.noise[1].result, 0.1)  # another seed: other noise
    _, notes = noise_pairs(kwta, relu)
    assert [note.partition(":")[0] for note in notes] == ["noise numenta [2]"]  # it was noise[1] numenta


def test_compares_notes_give_each_probes_score_and_interval_as_evaluates_do() -> None:
    """The Gaussian probe's note under compare's tables (md, wide) is evaluate's long-table note, record-prefixed:
    its noise score and the score's 95% interval, which compare's notes lacked."""
    records = [_record(40, 1, "kwta", kind="gaussian"), _record(40, 2, "relu", kind="gaussian")]
    for record in records:
        long_note, = probe_notes(record)
        assert ", noise score " in long_note and "(95% interval " in long_note
        for fmt in ("md", "wide"):
            assert f"[{record.label}] {long_note}" in " ".join(render_stdout(records, fmt).split())
