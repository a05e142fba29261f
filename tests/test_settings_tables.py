"""Tables that put records side by side say when an attack of one label ran with other effective settings in some of
them (a plain table, the paired comparison, a robustness matrix): a note in the rendered output (``table`` also logs one
warning); equal settings, and records written before settings were stored, give neither. Also the one JSON walk
(:func:`kwta_robust.json_diff.json_differences`) behind the settings check, the resume check and ``diff``."""

from __future__ import annotations

import json
import logging

import pytest
from torch import nn

from attacks.base import create_attack
from attacks.settings import attack_settings
from eval_helpers import SEED_ONLY_HASH, make_record, make_result
from kwta_robust.cli import main
from kwta_robust.comparability import OTHER_VERSION, settings_differences, settings_notes
from kwta_robust.formats import render_records_as_matrices, render_stdout
from kwta_robust.html_report import build_report
from kwta_robust.json_diff import ABSENT, json_differences
from kwta_robust.paired import paired_table
from kwta_robust.report import compare_table
from kwta_robust.results import EvalRecord, save_record
from test_matrix import grid_records

PGD = {"steps": 40, "step_size": "2.5*eps/steps", "restarts": 1, "loss": "ce", "random_start": True}
FLAGS = [1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
NOTE = "attack settings differ between the records, so their numbers are not comparable: "


def pgd_record(label: str, settings: dict | None = None, *, config_hash: str = SEED_ONLY_HASH,
               **changed: object) -> EvalRecord:
    """A record whose PGD unit stored ``PGD`` with ``changed`` (``settings`` given: those; ``None``: an older record
    without settings), and a sanity attack with fixed settings; by default its config's own hash (another
    ``config_hash``: a record only a renderer given it in memory reads, the record checks refuse it)."""
    unit = make_result("pgd", FLAGS)
    unit.settings = {**PGD, **changed} if settings is None else settings
    sanity = make_result("sanity-pgd", [0] * len(FLAGS), eps=1.0)
    sanity.settings = {**PGD, "steps": 100}
    record = make_record([unit], label=label, sanity=[sanity])
    record.config_hash = config_hash
    return record


def older_record(label: str) -> EvalRecord:
    record = pgd_record(label)
    for unit in [*record.results, *record.sanity]:
        unit.settings = None
    return record


def named(*records: EvalRecord) -> list[tuple[str, EvalRecord]]:
    return [(r.label, r) for r in records]


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings logged anywhere in the package (the library renders notes; only ``table`` logs them)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("kwta_robust") and r.levelno == logging.WARNING]


def test_the_first_differing_setting_is_named_with_its_values_and_records() -> None:
    line = f"pgd: steps 40 in kwta, 100 in relu{OTHER_VERSION}"
    assert settings_differences(named(pgd_record("kwta"), pgd_record("relu", steps=100))) == [line]
    cells = [pgd_record(f"c{i}", config_hash="x") for i in range(8)] + [pgd_record("odd", config_hash="y", steps=100)]
    assert settings_differences(named(*cells), "cells") == ["pgd: steps 100 in odd, 40 in the other 8 cells"]
    mixed = [pgd_record("a"), pgd_record("b"), pgd_record("c"), pgd_record("d", steps=100), pgd_record("e", steps=60),
             pgd_record("f", step_size=0.01)]
    assert settings_differences(named(*mixed)) == [
        "pgd: steps 100 in d, 60 in e, 40 in the other 4 records; f: step_size 0.01 instead of 2.5*eps/steps"
        + OTHER_VERSION]
    assert settings_differences(named(pgd_record("a"), pgd_record("b", random_start=1))) == [
        f"pgd: random_start true in a, 1 in b{OTHER_VERSION}"]  # JSON's true is not 1, as in the resume check
    assert settings_differences(named(pgd_record("a"), pgd_record("b", settings={**PGD, "restarts": 5}))) == [
        f"pgd: restarts 1 in a, 5 in b{OTHER_VERSION}"]
    nested = [pgd_record(name, settings={**PGD, "inner": [{"attack": "apgd-ce", "steps": n}]})
              for name, n in (("a", 100), ("b", 150))]
    assert settings_differences(named(*nested)) == [f"pgd: inner[0].steps 100 in a, 150 in b{OTHER_VERSION}"]
    older_default = {k: v for k, v in PGD.items() if k != "loss"}
    assert settings_differences(named(pgd_record("a"), pgd_record("b", settings=older_default))) == [
        f"pgd: loss ce in a, (none) in b{OTHER_VERSION}"]


def test_equal_settings_and_older_records_are_no_difference() -> None:
    assert settings_differences(named(pgd_record("kwta"), pgd_record("relu"))) == []
    assert settings_differences(named(pgd_record("kwta"), older_record("relu"), pgd_record("other"))) == []
    assert settings_differences(named(older_record("kwta"), pgd_record("relu", steps=100))) == []  # nothing to compare
    assert settings_differences(named(pgd_record("kwta", steps=100))) == []
    reordered = dict(reversed(list(PGD.items())))  # the order of the keys is not a setting
    assert settings_differences(named(pgd_record("a"), pgd_record("b", settings=reordered))) == []


def test_another_config_gets_no_other_version_hint() -> None:
    found = settings_differences(named(pgd_record("kwta", config_hash="a"), pgd_record("relu", config_hash="b",
                                                                                           steps=100)))
    assert found == ["pgd: steps 40 in kwta, 100 in relu"]


def test_what_differs_per_model_is_not_a_setting() -> None:
    """A transfer attack's source model and its seed differ between a kWTA model's record and its ReLU twin's; its
    settings (what the record stores) do not."""
    def transfer(source: nn.Module, name: str, seed: int) -> dict:
        built = create_attack("transfer", source=source, inner="pgd", inner_params={"steps": 3}, source_name=name,
                              seed=seed)
        return attack_settings(built, {"inner": "pgd", "inner_params": {"steps": 3}})

    a, b = transfer(nn.Linear(4, 2), "relu", 1), transfer(nn.Sequential(nn.Linear(4, 2)), "kwta", 2)
    assert a == b and a["inner"]["steps"] == 3
    records = [pgd_record("kwta"), pgd_record("relu")]
    for record, settings, source in zip(records, (a, b), ("relu", "kwta")):
        unit = make_result("transfer", FLAGS, kind="transfer", position=1, cumulative=True)
        unit.settings, unit.source = settings, source
        record.results.append(unit)
    assert settings_differences(named(*records)) == []


def test_settings_notes_are_returned_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    records = named(pgd_record("kwta"), pgd_record("relu", steps=100))
    with caplog.at_level(logging.WARNING):
        first, again = settings_notes(records), settings_notes(records)
    assert first == again == [f"{NOTE}pgd: steps 40 in kwta, 100 in relu{OTHER_VERSION}"]
    assert warnings_in(caplog) == []  # a command renders one table into several outputs: the notes are in each


def test_a_plain_table_warns_in_every_format_and_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    records = [pgd_record("kwta"), pgd_record("relu", steps=100)]
    note = f"{NOTE}pgd: steps 40 in kwta, 100 in relu"
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        assert any(n.startswith(note) for n in compare_table(records).notes)
        narrow = render_stdout(records, "md")
        wide = render_stdout(records, "wide")
        notes = json.loads(render_stdout(records, "json"))["notes"]
        html = build_report(records)
    assert " ".join(narrow.split()).count(note) == 1  # the table's note and the paired table's: said once
    assert wide.count(note) == 2  # the wide table and the paired table, each with its notes
    assert any(n.startswith(note) for n in notes)
    assert note in html
    assert warnings_in(caplog) == []  # rendering logs nothing: the note is in every output


def test_tables_of_equal_or_older_settings_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    for records in ([pgd_record("kwta"), pgd_record("relu")], [pgd_record("kwta"), older_record("relu")]):
        with caplog.at_level(logging.WARNING, logger="kwta_robust"):
            text = render_stdout(records, "wide") + build_report(records)
        assert "attack settings differ" not in text
    assert warnings_in(caplog) == []


def test_the_paired_comparison_notes_the_pairs_it_compares() -> None:
    kwta, relu = pgd_record("kwta"), pgd_record("relu", steps=100)
    elsewhere = pgd_record("elsewhere", steps=60)
    elsewhere.dataset["indices"] = list(range(1, 11))  # other samples: not paired, so not in its note
    notes = paired_table([kwta, relu, elsewhere]).notes
    assert f"{NOTE}pgd: steps 40 in kwta, 100 in relu{OTHER_VERSION}" in notes
    assert not any("attack settings differ" in n for n in paired_table([kwta, pgd_record("twin")]).notes)


def with_pgd_steps(records: list[EvalRecord], steps: list[int | None]) -> list[EvalRecord]:
    for record, n in zip(records, steps):
        for unit in record.results:
            unit.settings = None if n is None else ({**PGD, "steps": n} if unit.label == "pgd" else {"surrogate": "x"})
    return records


def test_a_matrix_names_the_cells_whose_settings_differ(caplog: pytest.LogCaptureFixture) -> None:
    records = with_pgd_steps(grid_records(), [40, 40, 100, 40])  # the third: k/N 0.1, dense
    note = ("attack settings differ between the cells, so their numbers are not comparable: pgd: steps 100 in "
            f"k/N 0.1 × 0 (dense), 40 in the other 3 cells{OTHER_VERSION}")
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        markdown = render_records_as_matrices(records, "wide")
        legend = json.loads(render_records_as_matrices(records, "json"))["notes"]
    assert f"- {note}\n" in markdown and note in legend
    assert warnings_in(caplog) == []
    sparse = with_pgd_steps(grid_records(), [40, 40, 40, 100])  # a pruned cell is named with its method
    assert "steps 100 in k/N 0.1 × 0.8 (magnitude), 40 in the other 3 cells" in render_records_as_matrices(sparse,
                                                                                                      "wide")


def test_a_matrix_of_equal_or_older_settings_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        for steps in ([40, 40, 40, 40], [40, None, 100, None], [None] * 4):
            text = render_records_as_matrices(with_pgd_steps(grid_records(), steps), "md")
            assert ("attack settings differ" in text) == (steps == [40, None, 100, None])
    assert warnings_in(caplog) == []


def test_the_table_command_prints_the_note_and_logs_the_warning(tmp_path, capsys, caplog) -> None:
    paths = []
    for record in (pgd_record("kwta"), pgd_record("relu", steps=100)):
        paths.append(tmp_path / f"{record.label}.json")
        save_record(record, paths[-1])
    with caplog.at_level(logging.WARNING, logger="kwta_robust"):
        assert main(["table", *map(str, paths), "--format", "wide"]) == 0
    assert f"{NOTE}pgd: steps 40 in kwta, 100 in relu" in capsys.readouterr().out
    assert warnings_in(caplog) == [f"{NOTE}pgd: steps 40 in {paths[0]}, 100 in {paths[1]}{OTHER_VERSION}"]


def test_one_walk_yields_every_difference_under_each_callers_rules() -> None:
    a = {"steps": 40, "inner": [{"rho": 0.75}, {"rho": 0.5}], "random_start": True, "wall_time_s": 1.0}
    b = {"steps": 100, "inner": [{"rho": 0.75}, {"rho": 0.6}], "random_start": 1, "wall_time_s": 2.0, "new": "x"}
    assert list(json_differences(a, b, skip=lambda path: path == "wall_time_s")) == [
        ("steps", 40, 100), ("inner[1].rho", 0.5, 0.6), ("new", ABSENT, "x")]  # true == 1 for ``diff``
    assert ("random_start", True, 1) in list(json_differences(a, b, strict_bool=True))
    assert list(json_differences({"inner": [1]}, {"inner": [1, 2]})) == [("inner", [1], [1, 2])]
    assert list(json_differences({"x": {"a": 1}}, {"x": {"b": 1}})) == [("x.a", 1, ABSENT), ("x.b", ABSENT, 1)]
    assert list(json_differences({"x": {"a": 1}}, {"x": {"b": 1}}, whole_disjoint=True)) == [
        ("x", {"a": 1}, {"b": 1})]
    assert list(json_differences(a, dict(a))) == []
