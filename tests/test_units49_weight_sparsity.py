"""The model tables' weight sparsity column (audit 49): it holds a fraction shown in % (``50.0`` for half the weights
zero) under a bare ``weight sparsity`` header, beside matrices whose columns write the same sparsity as ``0.5``. The
header now says ``weight sparsity (%)`` in Markdown, the terminal table and LaTeX; CSV and JSON keep their column
``weight sparsity (%)`` (numbers in percent), not suffixed twice."""

from __future__ import annotations

import csv
import io
import json

from eval_helpers import make_record, make_result
from kwta_robust.formats import render_stdout
from kwta_robust.narrow import narrow_markdown


def _records():
    pruned, dense = (make_record([make_result("pgd", [1, 0, 1, 0], eps=0.1)], label=name) for name in ("p", "d"))
    pruned.model["weight_sparsity"] = {"overall": 0.5}
    dense.model["weight_sparsity"] = {"overall": 0.0}
    return [pruned, dense]


def test_the_header_states_the_percent_unit_and_csv_json_keep_their_columns() -> None:
    records = _records()
    terminal = narrow_markdown(records)
    assert "| weight sparsity (%) |" in terminal.splitlines()[0]
    assert next(line for line in terminal.splitlines() if line.startswith("| p ")).split("|")[3].strip() == "50.0"
    assert "| weight sparsity (%) |" in render_stdout(records, "wide").splitlines()[0]
    assert r"& weight sparsity (\%) &" in render_stdout(records, "latex")
    # CSV and JSON keep their column and numbers (percent), the header's (%) not added twice
    rows = list(csv.DictReader(io.StringIO(render_stdout(records, "csv"))))
    assert [float(r["weight sparsity (%)"]) for r in rows] == [50.0, 0.0]
    assert rows[0]["weight sparsity ci_low (%)"] == "" and not any("(%) (%)" in k for k in rows[0])
    data = json.loads(render_stdout(records, "json"))
    first = data["rows"][0]
    assert first["weight sparsity (%)"] == 50.0 and "weight sparsity (%) (%)" not in first
