"""The attack protocol table (kwta_robust.protocol, ``kwta-robust table --protocol``, the HTML report's attack
parameters): a row per record and attack label with the model's own cost, the effective settings in compact text
(in md listed once for the models where they read the same), numbers that stay numbers in CSV and JSON, and older
records without settings shown honestly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from eval_helpers import make_record, make_result
from kwta_robust.cli import main
from kwta_robust.formats import FORMATS
from kwta_robust.html_report import build_report
from kwta_robust.protocol import NO_LAYER, NOT_RECORDED, protocol_table, render_protocol, settings_text
from kwta_robust.results import save_record

PGD = {"steps": 10, "step_size": "2.5*eps/steps", "restarts": 1, "loss": "ce", "random_start": True}
BPDA = {"surrogate": "smooth", "temperatures": [0.05, {"log_uniform": [0.02, 0.1]}, [0.3, 0.1]],
        "stage_keep": [1.0, 0.5, 0.5],
        "inner": [{"attack": "apgd-ce", "loss": "ce", "steps": 100, "rho": 0.75},
                  {"attack": "apgd-ce", "loss": "ce", "steps": 150, "rho": 0.75},
                  {"attack": "apgd-ce", "loss": "ce", "steps": 400, "rho": 0.75}]}


def unit(label: str, flags: list[int], settings: dict | None, *, eps: float = 0.1, queries: int | None = 60,
         **kw):
    result = make_result(label, flags, eps=eps, **kw)
    result.settings, result.queries = settings, queries
    return result


def two_records():
    kwta = make_record([unit("pgd", [1, 0, 1, 1], PGD, params={"steps": 10}),
                        unit("pgd", [0, 0, 1, 1], PGD, eps=0.3, params={"steps": 10}, queries=40),
                        unit("bpda", [0, 0, 1, 1], BPDA, attack="bpda", kind="bpda", position=1)], label="kwta")
    relu = make_record([unit("pgd", [1, 1, 1, 1], PGD, params={"steps": 10}),
                        unit("pgd", [1, 0, 1, 1], PGD, eps=0.3, params={"steps": 10}, queries=40),
                        unit("bpda", [1, 1, 1, 1], {**BPDA, "surrogate": "identity"}, attack="bpda", kind="bpda",
                             position=1)], label="relu")
    return kwta, relu


def test_settings_text_is_compact_and_nests_inner_attacks() -> None:
    assert settings_text(PGD) == "steps 10, step size 2.5*eps/steps, restarts 1, loss ce, random start true"
    assert settings_text(BPDA) == ("surrogate smooth, temperatures 0.05/(log uniform [0.02, 0.1])/[0.3, 0.1], "
                                   "stage keep 1/0.5/0.5; inner apgd-ce: loss ce, steps 100/150/400, rho 0.75")
    assert settings_text({"steps": 8, "_complete": False, "_note": "foolbox's defaults"}) == (
        "steps 8 (incomplete: foolbox's defaults)")
    assert settings_text(None, {"steps": 10}) == f"steps 10 ({NOT_RECORDED})"


def test_a_row_per_record_and_label_with_the_models_own_cost() -> None:
    kwta, relu = two_records()
    relu.results[0].queries = 100  # the same settings cost the twin more at Linf 0.1
    table = protocol_table([kwta, relu])
    rows = [[c.value for c in row] for row in table.rows]
    assert table.headers == ["model", "label", "attack", "kind", "threats", "seed", "queries/sample", "time (s)",
                             "settings"]
    assert [row[:2] for row in rows] == [["kwta", "pgd"], ["kwta", "bpda"], ["relu", "pgd"], ["relu", "bpda"]]
    kwta_pgd, _, relu_pgd, relu_bpda = rows
    assert kwta_pgd[:6] == ["kwta", "pgd", "pgd", "white-box", "Linf 0.1, 0.3", 0]
    # 60 + 40 queries over 4 + 4 attacked samples; the twin's 100 + 40 over its own 8: not one mean of both models
    assert kwta_pgd[6] == (60 + 40) / 8 and relu_pgd[6] == (100 + 40) / 8 and kwta_pgd[7] == 1.0
    assert kwta_pgd[8] == relu_pgd[8] and "surrogate identity" in relu_bpda[8]


def test_the_md_list_names_each_settings_text_once_with_its_models() -> None:
    text = render_protocol(two_records(), "md")
    listed = [line for line in text.splitlines() if line.startswith("- ")]
    assert listed[0] == f"- pgd (kwta, relu): {settings_text(PGD)}"
    assert [line.split(":")[0] for line in listed[:3]] == ["- pgd (kwta, relu)", "- bpda (kwta)", "- bpda (relu)"]


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "latex", "wide"])
def test_every_format_renders_the_protocol(fmt: str) -> None:
    text = render_protocol(two_records(), fmt)
    assert "apgd-ce" in text and ("2.5*eps/steps" in text)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows[0]["queries/sample"] == "12.5" and rows[0]["model"] == "kwta"
    if fmt == "json":
        rows = json.loads(text)["rows"]
        assert rows[0]["queries/sample"] == 12.5 and rows[0]["time (s)"] == 1.0 and rows[0]["seed"] == 0
        assert rows[0]["threats"] == "Linf 0.1, 0.3"
    if fmt == "latex":
        assert r"\begin{tabular}" in text and r"queries/sample & time (s) & settings \\" in text
        assert "step size 2.5*eps/steps" in text and r"random start true" in text
    assert fmt in FORMATS.names()


def test_an_older_record_and_a_transfer_attack_show_what_they_hold() -> None:
    old = make_record([unit("pgd", [1, 0, 1, 1], None, params={"steps": 10}, queries=None),
                       unit("transfer", [1, 1, 1, 1], {"inner": {"attack": "pgd", **PGD}}, attack="transfer",
                            kind="transfer", position=1, queries=0)])
    old.results[1].source = "relu"
    rows = [[c.value for c in row] for row in protocol_table([old]).rows]
    assert rows[0][6] is None and rows[0][8] == f"steps 10 ({NOT_RECORDED})"
    assert rows[1][8] == ("source relu; inner pgd: steps 10, step size 2.5*eps/steps, restarts 1, loss ce, random "
                          "start true")
    assert "|              — |" in render_protocol([old], "md")  # no queries counted: aligned, not 0


def test_the_md_protocol_fits_120_columns_with_each_rows_settings_listed_below() -> None:
    kwta, relu = two_records()
    long = {**BPDA, "inner": [{**stage, "note": f"x{i}" * 12} for i, stage in enumerate(BPDA["inner"])]}
    kwta.results[2].settings = long
    text = render_protocol([kwta, relu], "md")
    assert max(len(line) for line in text.splitlines()) <= 120
    head = text.splitlines()[2]
    assert "settings" not in head and "queries/sample" in head
    assert "- pgd (kwta, relu): steps 10, step size 2.5*eps/steps, restarts 1, loss ce, random start true" in text
    listed = text[text.index("- bpda (kwta): "):text.index("- bpda (relu): ")]
    assert " ".join(listed.split()) == f"- bpda (kwta): {settings_text(long)}"  # wrapped, nothing cut
    assert "note " + "x0" * 12 + "/" + "x1" * 12 + "/" + "x2" * 12 in settings_text(long)


def test_table_protocol_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for rec in two_records():
        paths.append(str(tmp_path / f"{rec.label}.json"))
        save_record(rec, paths[-1])
    assert main(["table", "--protocol", *paths, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["queries/sample"] == 12.5
    assert main(["table", "--protocol", "--matrix", *paths]) == 2
    assert capsys.readouterr().err.strip() == "error: --protocol: give either --protocol or --matrix, not both"


def test_the_html_report_shows_the_settings() -> None:
    page = build_report(list(two_records()))
    details = page[page.index("attack parameters"):]
    assert "step size 2.5*eps/steps" in details and "inner apgd-ce: loss ce, steps 100/150" in details
    assert "As the config gave them (params):" in details


def test_an_inner_attacks_incomplete_settings_say_so() -> None:
    hsj = {"attack": "hopskipjump", "steps": 64, "_complete": False, "_note": "foolbox's own defaults"}
    assert settings_text({"inner": hsj}) == "inner hopskipjump: steps 64 (incomplete: foolbox's own defaults)"
    assert settings_text({"inner": [hsj, {**hsj, "steps": 8}]}) == (
        "inner hopskipjump: steps 64/8 (incomplete: foolbox's own defaults)")  # one note for the stages


def test_a_bpda_attack_that_acted_on_no_layer_says_only_its_first_stage_ran() -> None:
    kwta, relu = two_records()
    relu.results[2].settings = kwta.results[2].settings  # the same settings, as in the quickstart
    kwta.results[2].bpda_layers, relu.results[2].bpda_layers = {"features.2": "native"}, {}
    rows = {row[0].value: row[8].value for row in protocol_table([kwta, relu]).rows if row[1].value == "bpda"}
    assert rows == {"kwta": settings_text(BPDA), "relu": f"{NO_LAYER}; {settings_text(BPDA)}"}
    rows = [row[8].value for row in protocol_table([relu]).rows if row[1].value == "bpda"]
    assert rows == [f"{NO_LAYER}; {settings_text(BPDA)}"]


def test_only_a_list_of_one_value_per_bpda_stage_reads_a_b() -> None:
    """``a/b`` is a BPDA stage each (the notes say so); any other list is one value: gradient estimation's
    ``samples_schedule`` or an inner attack's list are not stages, and a cycled temperature is one stage's value."""
    estimation = {"steps": 100, "samples_schedule": [[50, 20], [100, 200]], "levels": [0.1, 0.2]}
    assert settings_text(estimation) == "steps 100, samples schedule [[50, 20], [100, 200]], levels [0.1, 0.2]"
    bpda = {"temperatures": [1.0, [0.3, 0.1]], "stage_keep": [1.0, 0.5],
            "inner": [{"attack": "x", "levels": [0.1, 0.2]}, {"attack": "x", "levels": [0.1, 0.2]}]}
    assert settings_text(bpda) == "temperatures 1/[0.3, 0.1], stage keep 1/0.5; inner x: levels [0.1, 0.2]"
    assert settings_text(None, {"stage_steps": [100, 150]}) == f"stage steps [100, 150] ({NOT_RECORDED})"
