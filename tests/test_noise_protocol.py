"""Noise probes in the protocol views: ``table --protocol`` lists each record's noise probes (kind, levels, draws,
params, seed) after its attacks, and ``evaluate --dry-run`` lists the configured ones in its plan; with a noise-only
config both listed nothing (and the dry run printed an empty plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import make_record
from kwta_robust.attack_plan import noise_seed
from kwta_robust.config import EvalConfig
from kwta_robust.protocol import NOISE_NOTE, protocol_table, render_protocol
from kwta_robust.report import cell_text
from kwta_robust.results import NoiseResult
from test_dry_run import notes, run, write_checkpoint, write_config


def test_table_protocol_lists_a_records_noise_probes() -> None:
    record = make_record(n=4, label="kwta")
    record.noise.append(NoiseResult("numenta", [0.0, 0.05, 0.5], 2, 1234, {"params": {"value": 0.7469}}, 1.234))
    table = protocol_table([record, make_record(n=4, label="relu")])  # relu ran no probe: no row of its own
    assert [[cell_text(c) for c in row] for row in table.rows] == [
        ["kwta", "noise numenta", "numenta", "noise", "3 levels", "0", "—", "1.23",
         "levels [0, 0.05, 0.5], draws 2, value 0.7469, seed 1234"]]
    assert NOISE_NOTE in table.notes
    listed = notes(render_protocol([record], "md"))
    assert "- noise numenta (kwta): levels [0, 0.05, 0.5], draws 2, value 0.7469, seed 1234" in listed
    assert '"settings": "levels [0, 0.05, 0.5], draws 2, value 0.7469, seed 1234"' in render_protocol([record], "json")
    assert NOISE_NOTE not in protocol_table([make_record(n=4, label="relu")]).notes


def test_dry_run_of_a_noise_only_config_lists_its_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    noise = [{"kind": "numenta", "levels": [0.0, 0.25], "draws": 2},
             {"kind": "gaussian", "levels": [0.0, 0.1, 0.2]}]
    cfg = write_config(tmp_path / "c.yaml", threats=[], attacks=[], noise=noise)
    rc, out, errors = run(["evaluate", str(write_checkpoint(tmp_path / "kwta.pt")), "--config", str(cfg),
                           "--dry-run"], capsys)
    assert rc == 0 and errors == []
    seeds = [noise_seed(0, spec) for spec in EvalConfig.from_yaml(cfg).noise]
    lines, listed = out.splitlines(), notes(out)
    assert any(line.startswith("| kwta  | noise numenta  | numenta ") and "| 2 levels " in line for line in lines)
    assert any(line.startswith("| kwta  | noise gaussian | gaussian ") and "| 3 levels " in line for line in lines)
    assert f"- noise numenta (kwta): levels [0, 0.25], draws 2, value 1, seed {seeds[0]}" in listed
    assert f"- noise gaussian (kwta): levels [0, 0.1, 0.2], draws 1, seed {seeds[1]}" in listed
    assert "- " + NOISE_NOTE in listed
