"""Session 51: the legends of the noise levels' intervals name only the methods the table shown holds
(:func:`kwta_robust.noise_ci.methods_text`). They named Wilson and the t interval whatever the rows held: ``else t
over the images`` under a probe of several draws on fewer than 30 images (no level but 0 has an interval there), and
``else the t interval ... from n = 30`` under one draw (the quickstart's: Wilson at every level)."""

from __future__ import annotations

import json

from kwta_robust.formats import render_stdout
from kwta_robust.html_noise import noise_section
from kwta_robust.noise_matrix import noise_metrics
from kwta_robust.noise_notes import probe_notes
from test_noise50_intervals import _record


def test_the_notes_name_only_the_intervals_a_probe_shows() -> None:
    few, many, one = _record(12, 1, "few", draws=3), _record(40, 2, "many", draws=3), _record(12, 3, "one", draws=1)
    assert "(95% interval: Wilson at level 0, else none below 30 images) " in probe_notes(few)[0]  # was: else t
    assert "(95% interval: Wilson at level 0, else t over the images) " in probe_notes(many)[0]
    assert "(95% interval: Wilson) " in probe_notes(one)[0]
    from kwta_robust.noise_ci import methods_text  # new in session 51 (here: the test runs on the old code too)

    pairs = [(r.noise[0], r.clean.n) for r in (few, many, one)]
    assert methods_text(pairs) == "Wilson at level 0 and with one draw, else t over the images from n = 30, none below"
    assert methods_text(pairs[:1], noisy=True) == ""  # the noisy levels of 12 images: no interval at all


def test_the_html_legend_names_the_methods_of_its_rows() -> None:
    one = str(noise_section([_record(40, 1, "kwta", draws=1), _record(40, 2, "relu", draws=1)]).body)
    assert "95% interval (Wilson). The probe column" in one
    assert "t interval over the images from n" not in one and "else" not in one.split("per level, ")[1][:60]
    few = str(noise_section([_record(12, 1, "kwta", draws=3)]).body)
    assert "95% interval (Wilson at level 0, else none below 30 images). The probe column" in few


def test_the_json_columns_note_and_the_level_matrices_legend_name_them_too() -> None:
    notes = json.loads(render_stdout([_record(40, 1, "kwta", draws=1)], "json"))["notes"]
    note, = [n for n in notes if n.startswith("noise columns (after flags)")]
    assert "NAME level L (%), its accuracy at level L with its 95% interval (Wilson);" in note
    few = noise_metrics([_record(12, 1, "a", draws=3), _record(12, 2, "b", draws=3)], levels=True)
    level_note = few["noise numenta level 0.25"].note
    assert "t over the images" not in level_note and "the accuracy alone (no cell holds per-sample counts" in level_note
    many = noise_metrics([_record(12, 1, "a", draws=3), _record(40, 2, "b", draws=3)], levels=True)
    assert "with its 95% interval (t over the images from n = 30, none below)" in many["noise numenta level 0.25"].note
    ones = noise_metrics([_record(12, 1, "a", draws=1)], levels=True)["noise numenta level 0.25"].note
    assert "with its 95% interval (Wilson) where" in ones and "several draws" not in ones
