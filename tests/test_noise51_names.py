"""Session 51: ``table --protocol``, ``evaluate --dry-run`` and ``diff`` name a noise probe as every result table
does (``noise numenta``, ``noise numenta [2]`` for the second of its kind: :func:`kwta_robust.noise_notes.probe_names`);
they wrote ``noise[i]`` (the protocol and the plan) or the bare kind (``diff``), so a row could not be matched to the
notes, the paired rows or the CSV columns."""

from __future__ import annotations

import copy

from eval_helpers import make_record
from kwta_robust.config import EvalConfig
from kwta_robust.dry_run import DryRun, plan_notes, plan_table
from kwta_robust.noise_notes import probe_names
from kwta_robust.protocol import NOISE_NOTE, protocol_table, render_protocol
from kwta_robust.record_diff import differences
from kwta_robust.report import cell_text
from kwta_robust.results import NoiseResult
from test_dryrun_mutants import CONFIG, model_plan

NAMES = ["noise numenta [1]", "noise numenta [2]", "noise gaussian"]


def _record():
    record = make_record(n=4, label="kwta")
    record.noise += [NoiseResult("numenta", [0.0, 0.5], 1, 11, {"params": {"value": 1.0}}, 0.5),
                     NoiseResult("numenta", [0.0, 0.5], 1, 12, {"params": {"value": 0.7469}}, 0.5),
                     NoiseResult("gaussian", [0.0, 0.1], 1, 13, {"params": {}}, 0.5)]
    return record


def test_the_protocol_names_each_probe_as_the_result_tables_do() -> None:
    record = _record()
    table = protocol_table([record])
    assert [cell_text(row[1]) for row in table.rows] == NAMES == probe_names(record.noise)
    assert not NOISE_NOTE.startswith("noise[i]") and "noise KIND [i]" in NOISE_NOTE
    listed = render_protocol([record], "md")
    assert "- noise numenta [2] (kwta): levels [0, 0.5], draws 1, value 0.7469, seed 12" in listed
    assert "noise[" not in render_protocol([record], "csv")


def test_the_dry_run_names_each_configured_probe_as_its_record_will() -> None:
    cfg = EvalConfig.from_dict({**CONFIG, "noise": [*CONFIG["noise"], {"kind": "gaussian", "levels": [0.1]}]})
    plan = DryRun([model_plan("kwta")], cfg, 1000)
    rows = [[cell_text(c) for c in row[:3]] for row in plan_table(plan).rows if cell_text(row[3]) == "noise"]
    assert rows == [["kwta", name, kind] for name, kind in zip(NAMES, ["numenta", "numenta", "gaussian"])]
    notes = plan_notes(plan)
    assert "noise probe numenta [2]: levels 0.1, 1 draw per level" in notes
    assert "noise probe gaussian: levels 0.1, 1 draw per level" in notes


def test_diff_names_the_probe_a_difference_is_in() -> None:
    probes = [{"kind": kind, "levels": [0.0, 0.5], "result": {"levels": [0.0, 0.5], "accuracy": [1.0, 0.5]}}
              for kind in ("numenta", "numenta", "gaussian")]
    changed = copy.deepcopy(probes)
    for probe in changed:
        probe["result"]["accuracy"][1] = 0.25
    lines = [found.labelled.partition(": ")[0] for found in differences({"noise": probes}, {"noise": changed})]
    assert lines == [f"noise[{i}].result.accuracy[1] ({name}; level 0.5)" for i, name in enumerate(NAMES)]
    only = [found.labelled for found in differences({"noise": probes[:1]}, {"noise": probes[:1] + probes[2:]})]
    assert only == ["noise[1] (noise gaussian): only in the second"]
